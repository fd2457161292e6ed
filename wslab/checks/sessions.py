"""Notebook 02's check: your handler against four real deaths, and a healthy client that must stay.

The exercise::

    sessions = {}

    async def handler(ws):
        ...  # your fixed handler

    result = await wslab.checks.check_handler(handler, sessions)
    result            # one row per case: PASS, or FAIL with a hint

The check serves your handler behind the fault proxy and connects five
clients. Four die for real, one per failure mode (a clean close, a killed
process, an RST, a peer that vanished); a fifth, the **healthy control**,
stays connected and answers every ping. A dead client's case passes when its
session leaves your map in time *and* its connection is really closed: a
session forgotten while its connection stays open still holds a socket,
buffers and a handler. The control passes when its session stays in the
map, open, for the whole check: dropping everyone would otherwise pass.

Anything your handler, or a task it started, raises is reported in one line
in the row of the connection it happened on, even when the session was
removed: a ``KeyError`` from removing a session twice is a bug too.

A check runs in three steps, so that each can change on its own: setup
(:func:`start_control`, :func:`start_victims`), run (:func:`watch_control`,
:func:`watch_victim`: inflict the deaths, record what your map and
connections did) and analysis (:func:`~wslab.checks.sessions_verdict.verdict`:
pass or fail with a hint, from that record alone; no sockets, tested on its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode
from websockets.protocol import State

from ..faults.failures import FAILURE_MODES, Victim, connect_victim, inflict
from ..faults.proxy import FaultProxy, start_proxy
from ..runtime.errors import LabError, WaitTimeout
from ..runtime.lab import Handler, Lab, LabServer
from ..runtime.timing import CLOSE_DEADLINE, scaled, wait_until
from ..servers import ServerApp
from .report import Report
from .sessions_verdict import CLOSED_IN_TASK_HINT, CONTROL, HINTS, KEY_ERROR_HINT, PONG_GAP, CaseRun, verdict
from .watcher import HandlerWatcher

__all__ = [
    "CONTROL", "HINTS", "CaseRun", "check_handler", "start_control", "start_victims", "verdict", "watch_control",
    "watch_victim",
]


# What a handler keeps its sessions in: a dict (connections as values, or as keys), or a set (or list) of them.
Sessions = Mapping[Any, Any] | Collection[ServerConnection]

def _holds(sessions: Sessions, ws: ServerConnection) -> bool:
    if isinstance(sessions, Mapping):
        return ws in sessions.values() or ws in sessions
    return ws in sessions


class _ClientLog(logging.Handler):
    """When a client received each ping, and when its connection stopped being open: from websockets' debug log."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.pings: list[float] = []
        self.closed_at: float | None = None  # loop time

    def emit(self, record: logging.LogRecord) -> None:
        arg = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if record.msg == "< %s" and getattr(arg, "opcode", None) is Opcode.PING:
            self.pings.append(asyncio.get_running_loop().time())
        elif record.msg == "= connection is %s" and arg in ("CLOSING", "CLOSED") and self.closed_at is None:
            self.closed_at = asyncio.get_running_loop().time()


@dataclass
class Control:
    """The healthy client: connected through the proxy, answers every ping, must stay."""

    client: ClientConnection
    server_ws: ServerConnection
    log: _ClientLog
    connected_at: float  # loop time


# -- setup ---------------------------------------------------------------------------------------------


async def start_control(
    lab: Lab, watcher: HandlerWatcher, sessions: Sessions, **serve_options: Any
) -> tuple[LabServer, FaultProxy, Control | str]:
    """Setup: serve the handler behind a fault proxy, and connect the healthy client.

    The control is connected first and watched from then on, while the others
    connect: it must outlive them all. If it cannot be set up, the reason in one line.
    """
    server = await lab.serve(watcher.handle, name="yours", **serve_options)
    proxy = await start_proxy(lab, server, name="yours-proxy")
    control = await _connect_control(lab, watcher, proxy)
    if isinstance(control, Control):
        await _wait_appearing(sessions, control.server_ws, watcher)
    return server, proxy, control


async def start_victims(
    lab: Lab, watcher: HandlerWatcher, sessions: Sessions, server: LabServer, proxy: FaultProxy, modes: Iterable[str]
) -> dict[str, Victim | str]:
    """Setup: connect one client per mode, each about to die; each must show up in ``sessions`` within 1 s.

    A client that could not be set up maps to the reason, in one line.
    """
    victims: dict[str, Victim | str] = {}
    # The killed client is a new Python process, slow to start: connect it first, so that every
    # client dies soon after it connected.
    for mode in sorted(modes, key=lambda mode: mode != "killed"):
        if watcher.errors:  # the handler crashes: don't wait for yet another client to show up
            victims[mode] = "not tried: the handler crashed on an earlier client (see its row)"
            continue
        try:
            victims[mode] = await connect_victim(lab, server, mode, proxy=proxy, name=f"check-{mode}", deadline=5.0,
                                                 max_queue=None)  # see _connect_control
        except LabError as exc:
            victims[mode] = str(exc)
            continue
        victim = victims[mode]
        assert isinstance(victim, Victim)
        await _wait_appearing(sessions, victim.server_ws, watcher)
    return victims


def _is_closed(ws: ServerConnection) -> bool:
    # A function, not an inline test: the state changes while we wait, which a type checker can't see.
    return ws.state is State.CLOSED


async def _connect_control(lab: Lab, watcher: HandlerWatcher, proxy: FaultProxy) -> Control | str:
    log = _ClientLog()
    logger = logging.Logger("wslab.check.healthy", level=logging.DEBUG)  # not registered: goes with the check
    logger.addHandler(log)
    before = len(watcher.started)
    try:
        # max_queue=None: nobody reads this client's messages; if your handler sends some, websockets
        # must not stop reading the socket after 16 of them, or it would stop answering pings too.
        client = await lab.connect(proxy.url, name=f"check-{CONTROL}", logger=logger, max_queue=None)
        # The handler's own record, not server.connections: a handler that crashes at once closes it.
        await wait_until(lambda: len(watcher.started) > before, 5.0, "the healthy client's handler starting")
    except LabError as exc:
        return str(exc)
    return Control(client, watcher.started[before], log, asyncio.get_running_loop().time())


async def _wait_appearing(sessions: Sessions, ws: ServerConnection, watcher: HandlerWatcher) -> None:
    with contextlib.suppress(WaitTimeout):
        await wait_until(lambda: _holds(sessions, ws) or ws in watcher.ended, 1.0, "the session appearing")


# -- run -----------------------------------------------------------------------------------------------


async def watch_victim(
    lab: Lab, watcher: HandlerWatcher, sessions: Sessions, mode: str, victim: Victim | str, bound: float
) -> CaseRun:
    """Run: inflict the client's death, then watch ``bound`` s for its session to go and its connection to close.

    Records what happened and judges nothing: that is :func:`verdict`'s job.
    """
    if isinstance(victim, str):
        return CaseRun(mode, setup_error=victim)
    ws = victim.server_ws
    run = CaseRun(mode, appeared=_holds(sessions, ws) or ws in watcher.ended)
    if not run.appeared or not _holds(sessions, ws) or ws.state is not State.OPEN:
        run.dropped_early = run.appeared
        run.state = ws.state.name.lower()
        return run
    await inflict(lab, victim)
    seen: dict[str, float] = {}

    def removed_and_closed() -> bool:
        now = lab.timeline.now()
        if not _holds(sessions, ws):
            seen.setdefault("removed", now)
        if _is_closed(ws):
            seen.setdefault("closed", now)
        return len(seen) == 2

    with contextlib.suppress(WaitTimeout):
        await wait_until(removed_and_closed, bound, "the session's removal and the connection's end")
    if _is_closed(ws):  # let the handler's finally block run: what it raises counts too
        with contextlib.suppress(WaitTimeout):
            await wait_until(lambda: ws in watcher.ended, CLOSE_DEADLINE, "the handler's end")
    if "removed" in seen:
        run.removed_after = seen["removed"] - (victim.fault_at or 0.0)
    run.state = ws.state.name.lower()
    run.pings = len(ws.pending_pings) if ws.state is State.OPEN else 0
    return run


async def watch_control(
    watcher: HandlerWatcher, sessions: Sessions, control: Control | str, *, at_least: float, until: asyncio.Event,
    deadline: float,
) -> CaseRun:
    """Run: watch the healthy client until it is dropped, or for ``at_least`` s and until ``until`` is set."""
    if isinstance(control, str):
        return CaseRun(CONTROL, setup_error=control)
    ws = control.server_ws
    run = CaseRun(CONTROL, appeared=_holds(sessions, ws) or ws in watcher.ended)
    if not run.appeared:
        return run
    loop = asyncio.get_running_loop()

    def dropped() -> bool:
        return not _holds(sessions, ws) or ws.state is not State.OPEN

    def done() -> bool:
        return dropped() or (until.is_set() and loop.time() - control.connected_at >= at_least)

    with contextlib.suppress(WaitTimeout):
        await wait_until(done, deadline, "the end of the check")
    now = loop.time()
    run.watched = now - control.connected_at
    run.state = ws.state.name.lower()
    log = control.log
    if dropped():
        await asyncio.sleep(PONG_GAP)  # a ping sent just before the drop may still be on its way to the client
        # The client logs its connection's end within a millisecond; polling the map is coarser.
        dropped_at = min(now, log.closed_at or now)
        run.removed_after = dropped_at - control.connected_at
        run.drop = " and ".join(
            how for how, yes in (("removed from the map", not _holds(sessions, ws)),
                                 (f"connection {run.state}", ws.state is not State.OPEN)) if yes
        )
        run.ping_gap = min(abs(dropped_at - t) for t in log.pings) if log.pings else None
    run.pings = len(log.pings)
    return run


async def check_handler(
    handler: Handler | ServerApp,
    sessions: Sessions | None = None,
    *,
    modes: Iterable[str] = FAILURE_MODES,
    within: float = 1.0,
    vanished_within: float = 2.0,
    healthy_for: float = 2.0,
    **serve_options: Any,
) -> Report:
    """Run ``handler`` behind the fault proxy; one client stays healthy, one dies by each failure mode.

    A dead client's case passes when its session leaves ``sessions`` within
    ``within`` seconds (``vanished_within`` for a vanished peer) and its
    connection is closed by then. The healthy case passes when its session
    stays in the map, open, for at least ``healthy_for`` seconds and until the
    other cases are done. The two deadlines are multiplied by
    ``WSLAB_TIMEOUT_FACTOR`` (:func:`~wslab.runtime.timing.scaled`), for slow
    machines. Takes about ``vanished_within`` + 1.5 seconds.

    Args:
        handler: Your ``async def handler(ws)``, or a server app with its
            own ``handler`` and ``sessions`` (like ``wslab.NaiveServer()``).
        sessions: The dict (connections as values) or set your handler keeps
            sessions in.
        serve_options: Passed to ``lab.serve()``, e.g. ``ping_interval=0.5``
            to turn on websockets' own keepalive (off by default).
    """
    if isinstance(handler, ServerApp):
        sessions = handler.sessions if sessions is None else sessions
        handler = handler.handler
    if sessions is None:
        raise LabError("pass the dict or set your handler keeps its sessions in: check_handler(handler, sessions)")
    if not callable(handler):
        raise LabError(f"check_handler needs an async function handler(ws), not {type(handler).__name__}")
    modes = list(modes)
    bounds = {mode: vanished_within if mode == "vanished" else within for mode in modes}
    watcher = HandlerWatcher(handler, {KeyError: KEY_ERROR_HINT, ConnectionClosed: CLOSED_IN_TASK_HINT})
    async with Lab() as lab:
        with watcher.watching_tasks():
            server, proxy, control = await start_control(lab, watcher, sessions, **serve_options)
            victims_done = asyncio.Event()
            control_run = asyncio.ensure_future(watch_control(
                watcher, sessions, control, at_least=healthy_for, until=victims_done,
                deadline=healthy_for + max(bounds.values(), default=0.0) + 10.0,
            ))
            try:
                victims = await start_victims(lab, watcher, sessions, server, proxy, modes)
                runs = await asyncio.gather(
                    *(watch_victim(lab, watcher, sessions, mode, victims[mode], bounds[mode]) for mode in modes)
                )
                victims_done.set()
                runs = [await control_run, *runs]
            finally:
                control_run.cancel()  # only if something above failed: it is done otherwise
            watcher.collect_task_errors()
            clients = {CONTROL: control, **victims}
            for run in runs:  # what was raised while the case was watched, not when the check ends it
                client = clients[run.name]
                if not isinstance(client, str):
                    run.errors = list(watcher.errors.get(client.server_ws, []))
            server.abort_connections()  # the clients are dead or done: no handshakes to wait for
            await watcher.stop_tasks()
    # The control's bound is a minimum to stay, not a deadline: it is not scaled.
    return Report([verdict(run, healthy_for if run.name == CONTROL else scaled(bounds[run.name])) for run in runs])
