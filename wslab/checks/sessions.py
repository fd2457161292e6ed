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
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection

from ..faults.failures import FAILURE_MODES, Victim, connect_victim, inflict
from ..faults.proxy import start_proxy
from ..runtime.errors import LabError
from ..runtime.lab import Lab
from ..runtime.timeline import Timeline

__all__ = ["ModeCheck", "CheckResult", "check_handler", "HINTS"]

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


def _holds(sessions: Any, ws: ServerConnection) -> bool:
    return ws in (sessions.values() if isinstance(sessions, dict) else sessions)


def _handler_error(timeline: Timeline, server: str, conn: str | None) -> str | None:
    for event in timeline.select(source=server, kind="handler-error"):
        if conn is None or event.conn == conn:
            return event.detail
    return None


async def check_handler(
    handler: Callable[[ServerConnection], Awaitable[None]] | Any,
    sessions: Any = None,
    *,
    modes: Iterable[str] = FAILURE_MODES,
    within: float = 1.0,
    vanished_within: float = 2.0,
    **serve_options: Any,
) -> CheckResult:
    """Run ``handler`` behind the fault proxy; let one client die by each failure mode.

    A mode passes when the dead client's connection leaves ``sessions``
    within ``within`` seconds (``vanished_within`` for a vanished peer).

    Args:
        handler: Your ``async def handler(ws)``, or a server object with
            ``handler`` and ``sessions`` attributes (like ``wslab.NaiveServer()``).
        sessions: The dict (connections as values) or set your handler keeps
            sessions in.
        serve_options: Passed to ``lab.serve()``, e.g. ``ping_interval=0.5``
            to turn on websockets' own keepalive (off by default).
    """
    if sessions is None:
        sessions = getattr(handler, "sessions", None)
        handler = getattr(handler, "handler", handler)
    if sessions is None:
        raise LabError("pass the dict or set your handler keeps its sessions in: check_handler(handler, sessions)")
    if not callable(handler):
        raise LabError(f"check_handler needs an async function handler(ws), not {type(handler).__name__}")
    modes = list(modes)
    bounds = {mode: vanished_within if mode == "vanished" else within for mode in modes}
    async with Lab() as lab:
        server = await lab.serve(handler, name="yours", **serve_options)
        proxy = await start_proxy(lab, server, name="yours-proxy")
        victims: dict[str, Victim | str] = {}
        for mode in modes:
            error = _handler_error(lab.timeline, server.name, None)
            if error:  # the handler already crashed: don't wait for another client to show up
                victims[mode] = error
                continue
            try:
                victims[mode] = await connect_victim(lab, server, mode, proxy=proxy, name=f"check-{mode}", deadline=5.0)
            except LabError as exc:
                victims[mode] = str(exc)

        async def one(mode: str) -> ModeCheck:
            victim = victims[mode]
            if isinstance(victim, str):
                error = _handler_error(lab.timeline, server.name, None)
                return ModeCheck(mode, False, error or victim)
            loop = asyncio.get_running_loop()
            end = loop.time() + 1.0
            while not _holds(sessions, victim.server_ws):
                error = _handler_error(lab.timeline, server.name, victim.conn)
                if error:
                    return ModeCheck(mode, False, error)
                if loop.time() >= end:
                    return ModeCheck(mode, False, "the connection never appeared in sessions: add ws to it when the handler starts")
                await asyncio.sleep(0.01)
            await inflict(lab, victim)
            end = loop.time() + bounds[mode]
            while _holds(sessions, victim.server_ws):
                if loop.time() >= end:
                    error = _handler_error(lab.timeline, server.name, victim.conn)
                    return ModeCheck(mode, False, error or HINTS[mode].format(bound=bounds[mode]))
                await asyncio.sleep(0.01)
            return ModeCheck(mode, True, "session removed", lab.timeline.now() - (victim.fault_at or 0.0))

        checks = list(await asyncio.gather(*(one(mode) for mode in modes)))
        server.abort_connections()  # the clients are dead: no handshakes to wait for
    return CheckResult(checks)
