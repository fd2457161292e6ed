"""Checks for the notebooks' exercises: run the student's code for real, say pass or fail with a hint.

Notebook 02's exercise::

    sessions = {}

    async def handler(ws):
        ...  # your fixed handler

    result = await wslab.checks.check_handler(handler, sessions)
    result            # one line per failure mode: PASS, or FAIL with a hint
    assert result.passed

A check never prints a traceback: a handler that raises is reported in one
line, in the row of the failure mode where it happened.

A check runs in three steps, so that each can change on its own:
:func:`start_victims` (setup: your handler behind the fault proxy, one doomed
client per failure mode), :func:`watch_mode` (run: inflict the failure and
record what your session map did), and :func:`verdict` (analysis: pass or
fail with a hint, from that record alone; no sockets, tested on its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection

from ..faults.failures import FAILURE_MODES, Victim, connect_victim, inflict
from ..faults.proxy import start_proxy
from ..runtime.errors import LabError, WaitTimeout
from ..runtime.lab import Handler, Lab, LabServer
from ..runtime.timeline import EventKind, Timeline
from ..runtime.timing import scaled, wait_until
from ..servers import ServerApp

__all__ = ["HINTS", "CheckResult", "ModeCheck", "ModeRun", "check_handler", "start_victims", "verdict", "watch_mode"]

# What a handler keeps its sessions in: a dict with connections as values, or a set (or list) of them.
Sessions = Mapping[Any, ServerConnection] | Collection[ServerConnection]

NEVER_APPEARED = "the connection never appeared in sessions: add ws to it when the handler starts"

# What to fix when a session outlives its client, per failure mode.
HINTS = {
    "clean-close": (
        "the client closed cleanly (code 1000) and its session stayed in the map: "
        "remove it when the handler ends, in a finally block around the receive loop"
    ),
    "killed": (
        "the client's process was killed (FIN, no close frame: 1006) and its session stayed in the map: "
        "the receive loop raised ConnectionClosedError; remove the session in a finally block"
    ),
    "reset": (
        "the connection was reset (RST: ConnectionResetError) and its session stayed in the map: "
        "the receive loop raised ConnectionClosedError; remove the session in a finally block"
    ),
    "vanished": (
        "the client vanished (no FIN, no RST) and its session stayed in the map for over {bound:g} s: "
        "nothing will ever arrive, so ping it every ping_interval and, when no pong comes within "
        "ping_timeout, call ws.transport.abort() and remove the session"
    ),
}


@dataclass
class ModeCheck:
    """The verdict for one failure mode."""

    mode: str
    passed: bool
    message: str  # "session removed", a hint, or the one-line error
    removed_after: float | None = None  # seconds from the failure to the removal

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.mode:<11}  {self.message}"


@dataclass
class CheckResult:
    """Per failure mode, pass or fail with a hint. ``passed`` is True when every mode passed."""

    checks: list[ModeCheck]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failed_modes(self) -> list[str]:
        return [check.mode for check in self.checks if not check.passed]

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        verdict = "all failure modes pass" if self.passed else f"failing: {', '.join(self.failed_modes)}"
        return "\n".join([str(check) for check in self.checks] + [verdict])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td style='color:{'green' if c.passed else 'red'}'><b>{'PASS' if c.passed else 'FAIL'}</b></td>"
            f"<td>{html.escape(c.mode)}</td><td style='text-align:left'>{html.escape(c.message)}</td></tr>"
            for c in self.checks
        )
        verdict = "all failure modes pass" if self.passed else f"failing: {', '.join(self.failed_modes)}"
        return f"<table><tbody>{rows}</tbody></table><p>{html.escape(verdict)}</p>"


@dataclass
class ModeRun:
    """What happened to one failure mode's client, as recorded: all a :func:`verdict` needs.

    Attributes:
        mode: The failure mode.
        setup_error: Why its client could not even be set up (one line), if so.
        appeared: Whether its connection showed up in the session map.
        removed_after: Seconds from the failure until the session left the map;
            None if it was still there at the deadline (or the failure never happened).
        handler_error: What the handler raised on this connection (one line), if it did.
    """

    mode: str
    setup_error: str | None = None
    appeared: bool = False
    removed_after: float | None = None
    handler_error: str | None = None


def verdict(run: ModeRun, bound: float) -> ModeCheck:
    """Pass or fail for one failure mode, with the hint that names what still fails. Pure: no I/O.

    ``bound`` is the deadline the session had to leave the map within (for the hint).
    """
    if run.setup_error is not None:
        return ModeCheck(run.mode, False, run.handler_error or run.setup_error)
    if not run.appeared:
        return ModeCheck(run.mode, False, run.handler_error or NEVER_APPEARED)
    if run.removed_after is None:
        return ModeCheck(run.mode, False, run.handler_error or HINTS[run.mode].format(bound=bound))
    return ModeCheck(run.mode, True, "session removed", run.removed_after)


def _holds(sessions: Sessions, ws: ServerConnection) -> bool:
    return ws in (sessions.values() if isinstance(sessions, Mapping) else sessions)


def _handler_error(timeline: Timeline, server: str, conn: str | None = None) -> str | None:
    """The first error the handler raised (on ``conn``, or on any connection), as one line."""
    for event in timeline.select(source=server, kind=EventKind.HANDLER_ERROR, conn=conn):
        return event.detail
    return None


async def start_victims(
    lab: Lab, handler: Handler, modes: Iterable[str], **serve_options: Any
) -> tuple[LabServer, dict[str, Victim | str]]:
    """Setup: serve ``handler`` behind a fault proxy and connect one client per mode, each about to die.

    A mode whose client could not be connected maps to the reason, in one line.
    """
    server = await lab.serve(handler, name="yours", **serve_options)
    proxy = await start_proxy(lab, server, name="yours-proxy")
    victims: dict[str, Victim | str] = {}
    for mode in modes:
        error = _handler_error(lab.timeline, server.name)
        if error:  # the handler already crashed: don't wait for another client to show up
            victims[mode] = error
            continue
        try:
            victims[mode] = await connect_victim(lab, server, mode, proxy=proxy, name=f"check-{mode}", deadline=5.0)
        except LabError as exc:
            victims[mode] = str(exc)
    return server, victims


async def watch_mode(
    lab: Lab, server: LabServer, sessions: Sessions, mode: str, victim: Victim | str, bound: float
) -> ModeRun:
    """Run: wait for the client's session to appear, inflict its death, wait ``bound`` s for the removal.

    Records what happened and judges nothing: that is :func:`verdict`'s job.
    """
    if isinstance(victim, str):
        return ModeRun(mode, setup_error=victim, handler_error=_handler_error(lab.timeline, server.name))
    run = ModeRun(mode)

    def held() -> bool:
        return _holds(sessions, victim.server_ws)

    def crashed() -> bool:
        return _handler_error(lab.timeline, server.name, victim.conn) is not None

    with contextlib.suppress(WaitTimeout):
        await wait_until(lambda: held() or crashed(), 1.0, "the session appearing")
    run.appeared = held()
    if run.appeared:
        await inflict(lab, victim)
        with contextlib.suppress(WaitTimeout):
            await wait_until(lambda: not held(), bound, "the session's removal")
            run.removed_after = lab.timeline.now() - (victim.fault_at or 0.0)
    run.handler_error = _handler_error(lab.timeline, server.name, victim.conn)
    return run


async def check_handler(
    handler: Handler | ServerApp,
    sessions: Sessions | None = None,
    *,
    modes: Iterable[str] = FAILURE_MODES,
    within: float = 1.0,
    vanished_within: float = 2.0,
    **serve_options: Any,
) -> CheckResult:
    """Run ``handler`` behind the fault proxy; let one client die by each failure mode.

    A mode passes when the dead client's connection leaves ``sessions``
    within ``within`` seconds (``vanished_within`` for a vanished peer).
    Both bounds are multiplied by ``WSLAB_TIMEOUT_FACTOR``
    (:func:`~wslab.runtime.timing.scaled`), for slow machines.

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
    async with Lab() as lab:
        server, victims = await start_victims(lab, handler, modes, **serve_options)
        runs = await asyncio.gather(
            *(watch_mode(lab, server, sessions, mode, victims[mode], bounds[mode]) for mode in modes)
        )
        server.abort_connections()  # the clients are dead: no handshakes to wait for
    return CheckResult([verdict(run, scaled(bounds[run.mode])) for run in runs])
