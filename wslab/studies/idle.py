"""Idle timeouts, measured: how long a WebSocket lives behind a proxy that cuts quiet connections, and what keeps it up.

Notebook 06 runs every case at once, through every front (nginx, the fault
proxy's ``idle-timeout``), and watches them all for a few timeouts::

    server = await serve_idle(lab)
    cases = [IdleCase("no keepalive"), IdleCase("pings 1 s", client_pings=1.0)]
    outcomes = await run_idle_cases(lab, {"nginx": nginx.url, "wslab proxy": proxy.url}, cases, watch=6)
    table(survival_rows(outcomes, watch=6))

A case is a recipe for one connection's traffic: who pings or sends, every
how many seconds, and whether the client's socket has TCP keepalive on. The
server reads the recipe from the URL path, so one server serves every case.
Three steps, as elsewhere in :mod:`wslab.studies`: the server and the
connections (setup), :func:`run_idle_cases` (run: records an
:class:`IdleOutcome` per connection), and the pure functions at the end
(:func:`survival_rows`, :func:`fronts_agree`), tested without sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..runtime.lab import Lab
from ..runtime.server import LabServer
from ..runtime.timing import abort_all

__all__ = [
    "IdleCase",
    "IdleOutcome",
    "fronts_agree",
    "keepalive_probes_sent",
    "run_idle_cases",
    "serve_idle",
    "set_tcp_keepalive",
    "survival_rows",
]


@dataclass(frozen=True)
class IdleCase:
    """One connection's traffic, every so many seconds; None: never.

    Attributes:
        name: How the notebook's tables call it.
        client_pings: websockets' own keepalive on the client (``ping_interval``); each ping brings a pong.
        server_pings: The server pings (each brings a pong back).
        client_sends: The client sends a message; the server never answers.
        server_sends: The server sends a message; the client never answers.
        tcp_keepalive: ``SO_KEEPALIVE`` on the client's socket, probes after this many idle seconds.
    """

    name: str
    client_pings: float | None = None
    server_pings: float | None = None
    client_sends: float | None = None
    server_sends: float | None = None
    tcp_keepalive: int | None = None

    @property
    def path(self) -> str:
        """The URL path that tells the server its part: ``/?server_pings=1.0``."""
        query = {key: value for key, value in (("server_pings", self.server_pings), ("server_sends", self.server_sends))
                 if value is not None}
        return "/?" + urllib.parse.urlencode(query) if query else "/"


@dataclass
class IdleOutcome:
    """What happened to one case's connection through one front.

    Attributes:
        lived: Seconds from the end of the opening handshake until the connection closed;
            None if it was still open when the watch ended.
        code: The close code the client saw (1006: no close frame).
        close_frame: Whether a close frame came (``rcvd``), like the browser's ``wasClean``.
        cause: The exception under the close, by type (``EOFError``: the stream ended, a FIN).
    """

    front: str
    case: IdleCase
    lived: float | None = None
    code: int | None = None
    close_frame: bool = False
    cause: str = ""

    @property
    def survived(self) -> bool:
        return self.lived is None


# -- setup --------------------------------------------------------------------------------------


async def _idle_handler(ws: ServerConnection) -> None:
    """Do the server's part of the case named in the path, and read (never answer) what the client sends."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(ws.request.path if ws.request else "/").query)
    every = {key: float(values[0]) for key, values in query.items()}
    tasks = []
    if "server_pings" in every:
        tasks.append(asyncio.create_task(_repeat(every["server_pings"], ws.ping)))
    if "server_sends" in every:
        tasks.append(asyncio.create_task(_repeat(every["server_sends"], lambda: ws.send("from the server"))))
    try:
        async for _ in ws:
            pass
    finally:
        for task in tasks:
            task.cancel()


async def _repeat(seconds: float, action: Any) -> None:
    """``await action()`` every ``seconds`` until the connection closes (or the task is cancelled)."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.sleep(seconds)
            await action()


async def serve_idle(lab: Lab, *, name: str = "idle-server") -> LabServer:
    """The server every case connects to: it does its part of each case, as the path says."""
    return await lab.serve(_idle_handler, name=name)


def set_tcp_keepalive(ws: ClientConnection, idle: int) -> bool:
    """Turn on TCP keepalive for ``ws``'s socket: a probe after ``idle`` s of silence, then every ``idle`` s.

    The probes are TCP segments with no data, answered by the kernel at the
    other end of *this* TCP connection. False where the system has no way to
    set the idle time (then the system's default, often 2 hours, applies).
    """
    sock = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    # Linux calls the idle time TCP_KEEPIDLE; macOS calls it TCP_KEEPALIVE.
    option = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
    if option is None:
        return False
    sock.setsockopt(socket.IPPROTO_TCP, option, idle)
    if hasattr(socket, "TCP_KEEPINTVL"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, idle)
    return True


def keepalive_probes_sent() -> int | None:
    """How many TCP keepalive probes this machine's kernel has sent, all sockets together; None if unknown.

    Linux counts them in ``/proc/net/netstat`` (``TcpExt: ... TCPKeepAlive``);
    read it before and after, and the difference is at least what your sockets sent.
    """
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        names, numbers = header.split(), values.split()
        if names[0] == "TcpExt:" and "TCPKeepAlive" in names:
            return int(numbers[names.index("TCPKeepAlive")])
    return None


# -- run ----------------------------------------------------------------------------------------


async def _one(lab: Lab, front: str, url: str, case: IdleCase, index: int, watch: float) -> IdleOutcome:
    outcome = IdleOutcome(front, case)
    options: dict[str, Any] = {"ping_interval": case.client_pings, "ping_timeout": 20, "proxy": None}
    ws = await lab.connect(url + case.path, name=f"idle-{front}-{index}", **options)
    opened = time.monotonic()
    if case.tcp_keepalive is not None:
        set_tcp_keepalive(ws, case.tcp_keepalive)
    helpers = [asyncio.create_task(_drain_messages(ws))]
    if case.client_sends is not None:
        helpers.append(asyncio.create_task(_repeat(case.client_sends, lambda: ws.send("from the client"))))
    try:
        await asyncio.wait_for(ws.wait_closed(), watch)
        outcome.lived = time.monotonic() - opened
        exc = ws.close_exc
        outcome.code = ws.close_code
        outcome.close_frame = exc.rcvd is not None
        outcome.cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else ""
    except asyncio.TimeoutError:
        pass  # survived the watch
    finally:
        for task in helpers:
            task.cancel()
    return outcome


async def _drain_messages(ws: ClientConnection) -> None:
    """Read and drop what the server sends, so that its messages never fill the client's buffers."""
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


async def run_idle_cases(
    lab: Lab, fronts: Mapping[str, str], cases: Sequence[IdleCase], *, watch: float
) -> list[IdleOutcome]:
    """Open every case through every front at once, and watch them all for ``watch`` seconds.

    ``fronts`` maps a name to the URL of a proxy in front of :func:`serve_idle`'s
    server. Returns one outcome per (front, case), in that order; the
    connections still open are closed before it returns.
    """
    jobs = [(front, url, case) for front, url in fronts.items() for case in cases]
    outcomes = await asyncio.gather(*(_one(lab, front, url, case, i, watch)
                                      for i, (front, url, case) in enumerate(jobs)))
    names = [f"idle-{front}-{i}" for i, (front, _, _) in enumerate(jobs)]
    abort_all(lab[name] for name in names if name in lab)  # the survivors: nothing to say goodbye to
    await asyncio.gather(*(lab.close(name) for name in names))
    return list(outcomes)


# -- analysis -----------------------------------------------------------------------------------


def survival_rows(outcomes: Sequence[IdleOutcome], *, watch: float) -> list[dict[str, Any]]:
    """One row per case: for each front, how long its connection lived (or ``> watch`` s), and how it ended.

    Cases repeated under the same name are summed up: ``"0/10 survived, cut at 1.99-2.00 s"``.
    """
    rows: dict[str, dict[str, Any]] = {}
    groups: dict[tuple[str, str], list[IdleOutcome]] = {}
    for outcome in outcomes:
        groups.setdefault((outcome.case.name, outcome.front), []).append(outcome)
    for (name, front), group in groups.items():
        row = rows.setdefault(name, {"case": name})
        row[front] = _summary(group, watch)
    return list(rows.values())


def _summary(group: Sequence[IdleOutcome], watch: float) -> str:
    cut = sorted(o.lived for o in group if o.lived is not None)
    if len(group) == 1:
        o = group[0]
        if o.lived is None:
            return f"alive after {watch:g} s"
        return f"cut at {o.lived:.2f} s ({o.code}, {o.cause or 'no cause'})"
    alive = len(group) - len(cut)
    spread = f", cut at {cut[0]:.2f}-{cut[-1]:.2f} s" if cut else ""
    return f"{alive}/{len(group)} alive after {watch:g} s{spread}"


@dataclass
class Agreement:
    """Whether two fronts did the same to one case: both kept it, or both cut it within ``tolerance`` s."""

    case: str
    agree: bool
    detail: str = ""
    differences: list[str] = field(default_factory=list)


def fronts_agree(
    outcomes: Sequence[IdleOutcome], first: str, second: str, *, tolerance: float = 0.5
) -> list[Agreement]:
    """Case by case, did ``first`` and ``second`` keep the same connections and cut the others alike?

    Alike: same close code, same close frame (none), same cause, and cut times
    within ``tolerance`` seconds of each other (compared in order, for repeated cases).
    """
    by_case: dict[str, dict[str, list[IdleOutcome]]] = {}
    for outcome in outcomes:
        by_case.setdefault(outcome.case.name, {}).setdefault(outcome.front, []).append(outcome)
    result = []
    for name, fronts in by_case.items():
        a = sorted(fronts.get(first, []), key=lambda o: o.lived if o.lived is not None else float("inf"))
        b = sorted(fronts.get(second, []), key=lambda o: o.lived if o.lived is not None else float("inf"))
        differences = []
        if len(a) != len(b):
            differences.append(f"{len(a)} connections through {first}, {len(b)} through {second}")
        for x, y in zip(a, b, strict=False):
            if x.survived != y.survived:
                differences.append(f"{first} {'kept' if x.survived else 'cut'} one that {second} "
                                   f"{'kept' if y.survived else 'cut'}")
            elif not x.survived and (x.code, x.close_frame, x.cause) != (y.code, y.close_frame, y.cause):
                differences.append(f"closed differently: {x.code}/{x.cause} vs {y.code}/{y.cause}")
            elif x.lived is not None and y.lived is not None and abs(x.lived - y.lived) > tolerance:
                differences.append(f"cut {abs(x.lived - y.lived):.2f} s apart")
        result.append(Agreement(name, not differences, "; ".join(differences) or "same", differences))
    return result
