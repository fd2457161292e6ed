"""External programs the lab starts: Chromium, nginx, redis-server, Tomcat. Finding them, and running them.

Every program the lab can use is a :class:`Program` defined in this module
and listed in :data:`PROGRAMS`, with the command that installs it and the
notebooks that need it. One place, that imports nothing else of the lab: what
lists the programs (``wslab check``, notebook 00, the notebooks' skips) needs
no other module imported first. Adding a program is one entry below. The
rule for a missing program is the same everywhere:

- on a laptop, the notebook and its tests **skip**, with one line that names
  the install command (:meth:`Program.skip_reason`);
- in CI (``CI=true``) a missing program is a **failure**, never a skip;
- ``python -m wslab check`` and notebook 00 report every program.

:class:`ChildProcess` runs one as a child of the kernel, in its own temporary
directory, on 127.0.0.1; ``lab.close()`` stops it (SIGTERM, then SIGKILL at
the deadline) and deletes the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import glob
import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import LabError, WaitTimeout
from .timeline import EventKind
from .timing import scaled, wait_until

if TYPE_CHECKING:
    from .lab import Lab

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
        if available or in_ci():
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
    needed_by=("03-close-codes-in-the-browser", "06-idle-timeouts-and-deploys"),
    executables=(
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/Applications/Chromium.app/Contents/MacOS/Chromium",
        "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
        "chromium",
        "chromium-browser",
    ),
    install={"Debian/Ubuntu": "sudo apt install chromium",
             "macOS or elsewhere": "python -m playwright install chromium"},
    env_var="WSLAB_CHROMIUM",
    more_places=_playwright_downloads,
    python_module=("playwright.async_api", "pip install -e '.[lab]' (or pip install playwright)"),
))

NGINX = _entry(Program(
    "nginx",
    needed_by=("06-idle-timeouts-and-deploys",),
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


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free on ``host`` now, for a program that cannot listen on port 0 itself.

    Another process could take it before the program binds it: the program's
    start then fails with "address in use", and :meth:`ChildProcess.start`
    says so in one line.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ChildProcess:
    """An external program running as a child process, in a temporary directory of its own.

    Make one with :meth:`start`. ``lab.close()`` closes it: SIGTERM (or the
    program's own stop signal), SIGKILL if it has not exited within the
    deadline, then the directory is deleted.

    Attributes:
        name: The lab's name for it.
        directory: Its private directory (config, logs, data).
        process: The :class:`asyncio.subprocess.Process`.
    """

    close_rank = 4  # after servers and clients: they may still be talking to it

    def __init__(self, lab: Lab, name: str, process: asyncio.subprocess.Process,
                 directory: tempfile.TemporaryDirectory[str], stop_signal: int) -> None:
        self.lab = lab
        self.name = name
        self.process = process
        self._directory = directory
        self.directory = Path(directory.name)
        self.stop_signal = stop_signal

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    @classmethod
    async def start(
        cls,
        lab: Lab,
        name: str,
        argv: Callable[[Path], Sequence[str]],
        *,
        ready: Callable[[Path], Awaitable[bool]],
        timeout: float = 10.0,
        prepare: Callable[[Path], None] | None = None,
        env: dict[str, str] | None = None,
        pass_fds: Sequence[int] = (),
        stop_signal: int = signal.SIGTERM,
        log_name: str = "output.log",
    ) -> ChildProcess:
        """Start a program and wait until ``ready(directory)`` says it serves.

        Args:
            lab: The lab that tracks it under ``name`` (re-running closes the old one).
            argv: The command line, made from the private directory.
            ready: Polled every 20 ms until true; e.g. "the port accepts a connection".
            timeout: Seconds (scaled) to wait for ``ready``.
            prepare: Writes config files into the directory before the start.
            env: Environment variables to add to the kernel's own.
            pass_fds: File descriptors the program inherits, e.g. a listening socket the lab
                opened for it, so no other process can take the port in between.
            log_name: File in the directory that gets the program's stdout and stderr.

        Raises:
            LabError: it exited, or was not ready in time; the message quotes the last line it printed.
        """
        await lab.close(name)
        directory = tempfile.TemporaryDirectory(prefix=f"wslab-{name}-")
        path = Path(directory.name)
        if prepare is not None:
            prepare(path)
        log = open(path / log_name, "wb")  # noqa: SIM115  (the child writes to it; closed below)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv(path), cwd=path, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                env={**os.environ, **(env or {})}, pass_fds=tuple(pass_fds), start_new_session=True,
            )
        except OSError as exc:
            directory.cleanup()
            raise LabError(f"cannot start {name}: {exc.strerror or exc}") from None
        finally:
            log.close()
        child = cls(lab, name, process, directory, stop_signal)
        serving = False

        async def serving_or_exited() -> bool:
            nonlocal serving
            with contextlib.suppress(OSError):  # e.g. "connection refused" while it starts
                serving = process.returncode is None and await ready(path)
            return serving or process.returncode is not None

        try:
            await wait_until(serving_or_exited, timeout, f"{name} ready", poll=0.02)
        except WaitTimeout:
            why = f"{name} was not ready within {scaled(timeout):g} s"
        else:
            if serving:
                lab.timeline.record(name, EventKind.STARTED, detail=f"pid {process.pid}")
                return await lab.track(name, child)
            why = f"{name} exited with code {process.returncode}"
        last = child.last_line(log_name)
        await child.close()
        raise LabError(why + (f": {last}" if last else ""))

    def last_line(self, log_name: str = "output.log") -> str:
        """The last non-empty line the program wrote to ``log_name`` in its directory."""
        with contextlib.suppress(OSError):
            lines = (self.directory / log_name).read_text(errors="replace").strip().splitlines()
            return lines[-1].strip() if lines else ""
        return ""

    async def kill(self) -> None:
        """SIGKILL, now: the program dies without cleaning up (a crash, ``kill -9``)."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()
            self.lab.timeline.record(self.name, EventKind.EXITED, detail="killed (SIGKILL)")

    async def close(self, deadline: float = 5.0) -> None:
        """Stop it (its stop signal, then SIGKILL after ``deadline`` s) and delete its directory."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, self.stop_signal)
            try:
                await asyncio.wait_for(self.process.wait(), deadline)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()
            self.lab.timeline.record(self.name, EventKind.EXITED, detail=f"code {self.process.returncode}")
        self._kill_leftovers()
        self._directory.cleanup()

    def _kill_leftovers(self) -> None:
        """SIGKILL what is left of the program's process group, e.g. nginx workers whose master was killed alone.

        The group's id is the program's pid. While the group has members the
        kernel gives that number to no other process; so if no process has it
        now, the group is ours (or empty), never another program's.
        """
        try:
            os.kill(self.process.pid, 0)
            return  # the number belongs to a process: not ours, ours was reaped
        except ProcessLookupError:
            pass
        except PermissionError:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.process.returncode}"
        return f"<ChildProcess {self.name} pid {self.pid} {state}>"

