"""External programs the lab starts: Chromium, nginx, redis-server, Tomcat. Where they are, and what if not.

Every program the lab can use is a :class:`Program` defined in this module
and listed in :data:`PROGRAMS`, with the command that installs it and the
notebooks that need it. One place, that imports none of the modules that start
the programs: what lists them (``wslab check``, notebook 00, the notebooks'
skips) needs no other module imported first. Adding a program is one entry below. The
rule for a missing program is the same everywhere:

- on a laptop, the notebook and its tests **skip**, with one line that names
  the install command (:meth:`Program.skip_reason`);
- in CI (``CI=true``) a missing program is a **failure**, never a skip;
- ``python -m wslab check`` and notebook 00 report every program.

:class:`~wslab.runtime.childprocess.ChildProcess` runs one (importable from here too).
"""

from __future__ import annotations

import functools
import glob
import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .childprocess import ChildProcess, free_port  # their home until they moved: still importable from here
from .errors import LabError

__all__ = [
    "CHROMIUM", "LAST_CORE_NOTEBOOK", "NGINX", "PROGRAMS", "ChildProcess", "Program", "free_port", "in_ci",
    "notebook_skip_reason",
]

# The core workshop is notebooks 00 to 05: a program one of them needs must be installed
# (``wslab check`` fails without it); later notebooks are optional, and skip without theirs.
LAST_CORE_NOTEBOOK = 5


def in_ci() -> bool:
    """True when ``CI=true``: a missing program is then a failure, not a skip."""
    return os.environ.get("CI", "").lower() == "true"


@dataclass(frozen=True)
class Program:
    """An external program some notebooks need.

    Attributes:
        name: What the lab calls it: ``"nginx"``.
        needed_by: Which notebooks need it, by stem (``"06-idle-timeouts"``).
        executables: Where to look, in order: names on ``PATH`` or absolute paths.
        install: The command that installs it, per system: ``{"Debian/Ubuntu": "sudo apt install nginx-light"}``.
        env_var: An environment variable that, when set, is the only place looked at.
        more_places: Returns more candidates, looked at first (e.g. Playwright's own downloads).
        python_module: A Python module the lab needs to drive it, and how to install that module.
        linux_only: The lab can run it on Linux only (network namespaces, iptables): elsewhere it says so.
        works: Asked once it is found: None if it can really do its job here, else why not, in one line
            (e.g. ``unshare`` exists, but this container forbids new namespaces).
    """

    name: str
    needed_by: tuple[str, ...]
    executables: tuple[str, ...]
    install: dict[str, str] = field(default_factory=dict)
    env_var: str | None = None
    more_places: Callable[[], list[str]] | None = None
    python_module: tuple[str, str] | None = None
    linux_only: bool = False
    works: Callable[[], str | None] | None = None

    @property
    def core(self) -> bool:
        """True if a core notebook (00 to :data:`LAST_CORE_NOTEBOOK`) needs it: ``wslab check`` fails without it."""
        return any(int(stem[:2]) <= LAST_CORE_NOTEBOOK for stem in self.needed_by)

    def find(self) -> str | None:
        """The first executable found, or None."""
        if self.env_var and os.environ.get(self.env_var):
            candidates: Sequence[str] = [os.environ[self.env_var]]
        else:
            candidates = [*(self.more_places() if self.more_places else []), *self.executables]
        for candidate in candidates:
            path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
            if path and os.path.isfile(path) and os.access(path, os.X_OK):
                return path
        return None

    def how_to_install(self) -> str:
        """``apt install nginx-light`` (Debian/Ubuntu), ``brew install nginx`` (macOS): one line."""
        return "; ".join(f"{command} ({system})" for system, command in self.install.items())

    def availability(self) -> tuple[bool, str]:
        """Whether it can run here, and one line that says where it is or how to install it."""
        if self.linux_only and not sys.platform.startswith("linux"):
            system = {"darwin": "macOS", "win32": "Windows"}.get(sys.platform, sys.platform)
            return False, f"{self.name}: the lab runs it on Linux only, not supported on {system}"
        if self.python_module is not None:
            module, how = self.python_module
            try:
                importlib.import_module(module)
            except ImportError:
                return False, f"the Python module {module} is missing: {how}"
        path = self.find()
        if path is not None and self.works is not None:
            problem = self.works()
            if problem is not None:
                return False, problem
        if path is not None:
            return True, f"{self.name} found at {path}"
        if self.env_var and os.environ.get(self.env_var):
            return False, f"{self.env_var}={os.environ[self.env_var]} is not an executable file: fix it or unset it"
        return False, f"{self.name} is not installed: {self.how_to_install()}"

    def skip_reason(self) -> str | None:
        """Why tests and notebooks that need it should skip here, or None if they must run (found, or in CI)."""
        available, reason = self.availability()
        if available:
            return None
        if self.linux_only and not sys.platform.startswith("linux"):
            return reason  # not supported here, so even CI (a macOS runner) skips rather than fails
        if in_ci():
            return None
        return reason

    def require(self) -> str:
        """The executable's path, or a one-line :class:`LabError` that says how to install it."""
        available, reason = self.availability()
        if not available:
            raise LabError(reason)
        path = self.find()
        assert path is not None
        return path


# Every external program the lab can start, by name: what ``wslab check``, notebook 00 and the
# notebooks' skips read. The modules that start them (chromium.py, nginx.py) import their entry.
PROGRAMS: dict[str, Program] = {}


def _entry(program: Program) -> Program:
    PROGRAMS[program.name] = program
    return program


def _playwright_downloads() -> list[str]:
    """Chromiums that ``python -m playwright install chromium`` downloaded, newest first."""
    if os.environ.get("PLAYWRIGHT_BROWSERS_PATH") not in (None, "", "0"):
        roots = [os.environ["PLAYWRIGHT_BROWSERS_PATH"]]
    else:
        roots = [
            os.path.expanduser("~/.cache/ms-playwright"),
            os.path.expanduser("~/Library/Caches/ms-playwright"),
            os.path.join(os.environ.get("LOCALAPPDATA", ""), "ms-playwright"),
        ]
    patterns = [
        "chromium-*/chrome-linux*/chrome",
        "chromium-*/chrome-mac*/*.app/Contents/MacOS/*",
        "chromium-*/chrome-win*/chrome.exe",
    ]
    found: list[str] = []
    for root in roots:
        for pattern in patterns:
            found += sorted(glob.glob(os.path.join(root, pattern)), reverse=True)
    return found


# Found in this order: WSLAB_CHROMIUM, Playwright's own download, Debian's and Ubuntu's packages, macOS apps.
CHROMIUM = _entry(Program(
    "chromium",
    needed_by=("03-close-codes-in-the-browser", "06-idle-timeouts-and-deploys", "08-hardening"),
    executables=(
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/Applications/Chromium.app/Contents/MacOS/Chromium",
        "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
        "chromium",
        "chromium-browser",
    ),
    # Ubuntu's apt "chromium" only installs a snap, which fails in containers and under some sandboxes.
    install={"Debian": "sudo apt install chromium",
             "Ubuntu, macOS or elsewhere": "python -m playwright install chromium"},
    env_var="WSLAB_CHROMIUM",
    more_places=_playwright_downloads,
    python_module=("playwright.async_api", "pip install -e '.[lab]' (or pip install playwright)"),
))

NGINX = _entry(Program(
    "nginx",
    needed_by=("06-idle-timeouts-and-deploys", "07-several-servers"),
    executables=("nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx", "/opt/homebrew/bin/nginx",
                 "/usr/local/bin/nginx"),
    install={"Debian/Ubuntu": "sudo apt install nginx-light", "macOS": "brew install nginx"},
    env_var="WSLAB_NGINX",
))


REDIS = _entry(Program(
    "redis-server",
    needed_by=("07-several-servers",),
    executables=("redis-server", "/usr/bin/redis-server", "/usr/local/bin/redis-server",
                 "/opt/homebrew/bin/redis-server"),
    install={"Debian/Ubuntu": "sudo apt install redis-server", "macOS": "brew install redis"},
    env_var="WSLAB_REDIS_SERVER",
    python_module=("redis.asyncio", "pip install -e . (or pip install redis)"),
))

# Notebook 09 runs the seed's own stack, Tomcat, and makes a client vanish in a Linux network namespace.
TOMCAT_NOTEBOOK = "09-the-seeds-own-stack"
TOMCAT_INSTALL = {
    "Debian/Ubuntu": "sudo apt install --no-install-recommends tomcat10-common default-jdk-headless iptables",
    "macOS, Windows": "not supported",
}
# javac finds the JDK: the java next to it runs Tomcat, so both always come from the same JDK.
JAVAC = _entry(Program("javac", needed_by=(TOMCAT_NOTEBOOK,), executables=("javac",), install=TOMCAT_INSTALL,
                       linux_only=True))
# Tomcat is found by its catalina.sh; the lab starts Bootstrap itself, with the JDK above.
TOMCAT = _entry(Program("tomcat", needed_by=(TOMCAT_NOTEBOOK,), executables=("/usr/share/tomcat10/bin/catalina.sh",),
                        install=TOMCAT_INSTALL, linux_only=True))
IPTABLES = _entry(Program(
    "iptables", needed_by=(TOMCAT_NOTEBOOK,), executables=("iptables", "/usr/sbin/iptables", "/sbin/iptables"),
    install={"Debian/Ubuntu": "sudo apt install iptables", "macOS, Windows": "not supported"}, linux_only=True,
))


def unshare_net() -> list[str]:
    """``unshare --net`` as root; without root, ``unshare --map-root-user --net`` (a user namespace too)."""
    return ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--net"]


@functools.cache
def _namespaces_work() -> str | None:
    """None if ``unshare`` can make a network namespace here, else why not. Asked once: containers and
    hardened kernels forbid it even where the program exists."""
    command = unshare_net()
    try:
        done = subprocess.run([*command, "true"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        error = str(exc)
    else:
        if done.returncode == 0:
            return None
        error = (done.stderr.strip().splitlines() or ["failed"])[-1]
    return (f"{' '.join(command)} cannot create a network namespace here ({error}): "
            "run as root, or allow unprivileged user namespaces")


UNSHARE = _entry(Program(
    "unshare", needed_by=(TOMCAT_NOTEBOOK,), executables=("unshare", "/usr/bin/unshare"),
    install={"Debian/Ubuntu": "sudo apt install util-linux", "macOS, Windows": "not supported"},
    linux_only=True, works=_namespaces_work,
))


def notebook_skip_reason(name: str) -> str | None:
    """Why the notebook (or test) named ``name`` must skip here: a program it needs is missing.

    ``name`` is anything that contains a notebook's stem, e.g. a pytest node id.
    None when everything it needs is here, or in CI (where a missing program fails instead).
    """
    for program in PROGRAMS.values():
        if any(stem in name for stem in program.needed_by):
            reason = program.skip_reason()
            if reason is not None:
                return reason
    return None
