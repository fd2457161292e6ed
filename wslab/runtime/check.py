"""Is this machine ready for the lab? One line per item, each saying what to do when something is missing.

``python -m wslab check`` prints this report, and notebook 00 shows the same
one with ``await wslab.runtime.check.run_checks()``::

    ok        Python 3.11.7
    ok        websockets 17.0
    ...
    ok        loopback round trip: a WebSocket message to 127.0.0.1 and back in 2.4 ms
    ok        chromium (notebook 03): chromium found at /usr/bin/chromium
    optional  nginx: optional for notebooks 06, 07, which skip without it; nginx is not installed: sudo apt ...

What the core notebooks (00 to :data:`~wslab.runtime.programs.LAST_CORE_NOTEBOOK`)
need is ``MISSING`` when it is missing, and fails the check. What only a later
notebook needs is ``optional``: that notebook skips without it. ``info`` lines
tell what differs on this system, and never fail.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.proxy import get_proxy
from websockets.uri import parse_uri

from .errors import LabError
from .lab import Lab
from .programs import LAST_CORE_NOTEBOOK, PROGRAMS, Program
from .timing import scaled

__all__ = ["CheckReport", "Item", "Status", "check_program", "check_python", "check_version", "run_checks"]

MIN_PYTHON = (3, 11)
MIN_WEBSOCKETS = 17
# What the notebooks import besides wslab's own dependencies: the lab extra, minus Playwright
# (the chromium line reports that one, as part of what drives the browser).
LAB_EXTRA = ("jupyterlab", "nest_asyncio2", "trustme")
INSTALL_WSLAB = "pip install -e '.[lab]' in the repository (python3 tasks.py lab does it for you)"


class Status(StrEnum):
    """How one item stands. Only MISSING fails the check."""

    OK = "ok"
    MISSING = "MISSING"  # a core notebook needs it
    OPTIONAL = "optional"  # missing, but only a later notebook needs it: that notebook skips
    INFO = "info"  # a difference of this system, explained in the notebooks; never a failure


@dataclass(frozen=True)
class Item:
    """One line of the report: what was checked, how it stands, and what was found or what to do."""

    status: Status
    what: str
    detail: str

    def __str__(self) -> str:
        return f"{self.status:<9} {self.what}: {self.detail}" if self.detail else f"{self.status:<9} {self.what}"


@dataclass(frozen=True)
class CheckReport:
    """Every item, in order. ``ok`` is False when something a core notebook needs is missing."""

    items: tuple[Item, ...]

    @property
    def ok(self) -> bool:
        return not self.missing

    @property
    def missing(self) -> list[Item]:
        return [item for item in self.items if item.status == Status.MISSING]

    def __str__(self) -> str:
        core = f"notebooks 00 to {LAST_CORE_NOTEBOOK:02d}"
        if self.ok:
            verdict = f"ready: everything {core} need is here"
        else:
            names = ", ".join(item.what for item in self.missing)
            verdict = f"not ready: {core} need {names}; do what each MISSING line says, then check again"
        return "\n".join([*map(str, self.items), verdict])

    __repr__ = __str__  # a notebook cell shows the report as it prints


def check_python(version: Sequence[int] = tuple(sys.version_info[:3])) -> Item:
    """Python 3.11 or later (websockets 17 and the lab need it)."""
    text = ".".join(map(str, version))
    if tuple(version[:2]) >= MIN_PYTHON:
        return Item(Status.OK, f"Python {text}", "")
    return Item(Status.MISSING, f"Python {text}",
                "too old: install Python 3.11 or later, and make the lab's .venv with it (python3.11 tasks.py lab)")


def check_version(package: str, found: str | None, minimum: int | None = None, *, install: str) -> Item:
    """A Python package, present (and at least ``minimum`` major version); ``found`` is its version, None if absent."""
    if found is None:
        return Item(Status.MISSING, package, f"not installed: {install}")
    major = found.split(".")[0]
    if minimum is not None and (not major.isdigit() or int(major) < minimum):
        return Item(Status.MISSING, f"{package} {found}", f"version {minimum} or later is needed: {install}")
    return Item(Status.OK, f"{package} {found}", "")


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def without_home(text: str) -> str:
    """``text`` with the home directory written ``~``: a stored notebook output holds no local path."""
    home = os.path.expanduser("~")
    return text if home in ("", os.sep) else text.replace(home + os.sep, "~" + os.sep)


def shown_path(path: str) -> str:
    """``path`` relative to the current directory when it is near (``../wslab`` from notebooks/), else
    :func:`without_home`: where a checkout sits on this machine is nobody else's business."""
    relative = os.path.relpath(path)
    if relative.startswith(os.path.join(os.pardir, os.pardir)):
        return without_home(path)
    return relative if relative.startswith(os.pardir) else os.path.join(os.curdir, relative)


def check_wslab() -> Item:
    """The wslab package itself: installed (so a kernel started in notebooks/ imports it), and from where."""
    import wslab

    version = _installed_version("wslab")
    where = shown_path(os.path.dirname(wslab.__file__ or "?"))
    if version is None:
        return Item(Status.MISSING, "wslab", f"imported from {where}, but not installed: {INSTALL_WSLAB}")
    return Item(Status.OK, f"wslab {version}", f"from {where}")


def check_lab_extra() -> Item:
    """The packages the notebooks import that the wslab command does not need (the ``lab`` extra)."""
    # Found, not imported: importing jupyterlab takes seconds, and the check must stay quick.
    missing = [module for module in LAB_EXTRA if importlib.util.find_spec(module) is None]
    if missing:
        return Item(Status.MISSING, "the notebooks' packages", f"{', '.join(missing)} missing: {INSTALL_WSLAB}")
    return Item(Status.OK, "the notebooks' packages", ", ".join(LAB_EXTRA))


def check_tcp_user_timeout() -> Item:
    """Whether the kernel takes ``TCP_USER_TIMEOUT`` (Linux): notebook 01 shows it where it exists."""
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is not None:
        with socket.socket() as sock:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, option, 1000)
            except OSError as exc:
                return Item(Status.INFO, "TCP_USER_TIMEOUT", f"refused by this kernel ({exc.strerror}): "
                            "notebook 01 shows the portable way instead")
        return Item(Status.INFO, "TCP_USER_TIMEOUT", "available: notebook 01 shows the kernel giving up on "
                    "a vanished peer with it")
    return Item(Status.INFO, "TCP_USER_TIMEOUT", f"not on {sys.platform} (Linux only): notebook 01 shows "
                "the portable way instead")


async def check_loopback(timeout: float = 5.0) -> Item:
    """A real WebSocket server and client on 127.0.0.1: one message there and back, within ``timeout`` s (scaled)."""

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    what = "loopback round trip"
    proxy = None
    try:
        async with asyncio.timeout(scaled(timeout)), Lab() as lab:
            server = await lab.serve(echo, name="check-echo")
            proxy = get_proxy(parse_uri(server.url))
            ws = await lab.connect(server.url, name="check-client", open_timeout=scaled(timeout))
            started = time.perf_counter()
            await ws.send("ping")
            answer = await ws.recv()
            elapsed = time.perf_counter() - started
    except (LabError, OSError, TimeoutError, ConnectionClosed) as exc:
        why = str(exc) or f"no answer within {scaled(timeout):g} s"
        if proxy is not None:
            # websockets sends ws:// through the proxy in http_proxy, https_proxy or all_proxy, even to 127.0.0.1.
            why = (f"websockets sent it through the proxy {proxy} (from the environment), and that failed "
                   f"({why}): export no_proxy=127.0.0.1,localhost before starting Jupyter")
        return Item(Status.MISSING, what, why)
    if answer != "ping":
        return Item(Status.MISSING, what, f"sent 'ping', got {answer!r} back: something on the way changes messages")
    detail = f"a WebSocket message to 127.0.0.1 and back in {elapsed * 1000:.1f} ms"
    if proxy is not None:
        # The lab passes proxy=None for loopback URLs; a student's own websockets.connect() does not.
        detail += (f"; the environment names the proxy {proxy}, which the lab skips for 127.0.0.1 but a plain "
                   "websockets.connect() uses: export no_proxy=127.0.0.1,localhost before starting Jupyter")
    return Item(Status.OK, what, detail)


def check_program(program: Program) -> Item:
    """An external program: found, or how to install it, and whether its absence fails the check."""
    notebooks = ", ".join(stem[:2] for stem in program.needed_by)
    available, detail = program.availability()
    detail = without_home(detail)  # e.g. a Chromium that Playwright downloaded to ~/.cache
    if available:
        return Item(Status.OK, f"{program.name} (notebook {notebooks})", detail)
    install = program.how_to_install()
    if install not in detail:  # e.g. a wrong WSLAB_CHROMIUM: say how to get the real thing too
        detail += f"; to install it: {install}"
    if program.core:
        return Item(Status.MISSING, f"{program.name} (notebook {notebooks})", detail)
    which = f"notebooks {notebooks}, which skip" if len(program.needed_by) > 1 else f"notebook {notebooks}, which skips"
    return Item(Status.OPTIONAL, program.name, f"optional for {which} without it; {detail}")


async def run_checks() -> CheckReport:
    """Check everything the notebooks need, in the order a student would fix it."""
    items = [
        check_python(),
        check_version("websockets", _installed_version("websockets"), MIN_WEBSOCKETS, install=INSTALL_WSLAB),
        check_version("matplotlib", _installed_version("matplotlib"), install=INSTALL_WSLAB),
        check_wslab(),
        check_lab_extra(),
        check_tcp_user_timeout(),
        await check_loopback(),
        *(check_program(program) for program in PROGRAMS.values()),
    ]
    return CheckReport(tuple(items))
