"""What one case of notebook 02's check means: PASS, or FAIL with the hint that names what still fails.

:func:`verdict` reads a :class:`CaseRun`, the record that
:mod:`wslab.checks.sessions` makes of one client's death (or of the healthy
control's stay), and nothing else: no sockets, no clock. Every hint is
tested on its own, in the style of websockets' sans-I/O core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .report import Case

__all__ = ["CLOSED_IN_TASK_HINT", "CONTROL", "HINTS", "KEY_ERROR_HINT", "NEVER_APPEARED", "PONG_GAP", "CaseRun",
           "verdict"]

CONTROL = "healthy"  # the case name of the client that must stay

# The hints, one per mistake. A hint says what happened, then what to do.
NEVER_APPEARED = "the connection never appeared in sessions: add ws to it when the handler starts"
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
        "ping_timeout, call ws.transport.abort(); the finally block then removes the session"
    ),
    # The vanished client was pinged, but the pong was never waited for with a deadline.
    "pong-not-awaited": (
        "{pings} ping(s) to the vanished client went unanswered and it stayed for over {bound:g} s: "
        "`await ws.ping()` returns as soon as the ping is sent; it returns a future that completes when "
        "the pong comes: wait for that future with a deadline (asyncio.timeout), and abort when it runs out"
    ),
    "close-not-abort": (
        "its connection is still CLOSING {bound:g} s after the client died: close() waits for a closing "
        "handshake that a dead peer never sends (close_timeout, 10 s by default); call ws.transport.abort()"
    ),
    "still-open": (
        "its session left the map but its connection is still open: the socket, its buffers and your "
        "handler live on; call ws.transport.abort(), and let the finally block remove the session"
    ),
    "closed-but-kept": (
        "its connection was closed but the session stayed in the map: remove it in a finally block "
        "around the receive loop"
    ),
    "dropped-early": (
        "your handler dropped this client before it died (it had answered every ping): see the healthy case"
    ),
    # The control.
    "control-pong": (
        "the healthy client was dropped within {gap_ms:.0f} ms of your ping, before its pong could come back: "
        "`await ws.ping()` returns as soon as the ping is sent; wait for the pong, the future it returns, "
        "with a deadline: `async with asyncio.timeout(...): await (await ws.ping())`"
    ),
    "control-dropped": (
        "the healthy client answers every ping, yet it was dropped ({how}) {after:.1f} s after it connected: "
        "drop a client only when its pong doesn't come within the deadline"
    ),
}
KEY_ERROR_HINT = " (removing a session twice? sessions.pop(key, None) does nothing the second time)"
# Only a task can raise this to the check: a handler may end with ConnectionClosed.
CLOSED_IN_TASK_HINT = " (catch ConnectionClosed in your task: the connection can end at any await)"

# A drop this soon after a ping reached the healthy client cannot have waited for its pong.
PONG_GAP = 0.05


@dataclass
class CaseRun:
    """What happened to one case's client, as recorded: all a :func:`verdict` needs.

    Attributes:
        name: ``"healthy"`` or a failure mode.
        setup_error: Why its client could not even be set up (one line), if so.
        appeared: Whether its connection showed up in the session map.
        dropped_early: A dying client's session left the map, or its connection
            closed, before the client died.
        removed_after: Seconds from the death until the session left the map (for
            the control: from connecting until it was dropped); None if it stayed.
        state: The server's side of the connection at the end: ``"open"``,
            ``"closing"`` or ``"closed"``.
        errors: What the handler, or a task it started, raised on this
            connection: one line each.
        pings: Vanished client: pings still unanswered at the end. Control:
            pings it received.
        ping_gap: Control only: seconds between the drop and the ping it
            received nearest to it (None: it received no ping).
        drop: Control only: how it was dropped, e.g. ``"removed from the map"``.
        watched: Control only: seconds it was watched.
    """

    name: str
    setup_error: str | None = None
    appeared: bool = False
    dropped_early: bool = False
    removed_after: float | None = None
    state: str = "open"
    errors: list[str] = field(default_factory=list)
    pings: int = 0
    ping_gap: float | None = None
    drop: str = ""
    watched: float = 0.0


def verdict(run: CaseRun, bound: float) -> Case:
    """Pass or fail for one case, with the hint that names what still fails. Pure: no I/O.

    ``bound`` is how long the session had to leave the map (for the control:
    how long it had to stay).
    """
    measured = {"removed_after": run.removed_after, "state": run.state}
    if run.errors:  # an exception is a bug even when the session went: report it first
        more = f" (and {len(run.errors) - 1} more)" if len(run.errors) > 1 else ""
        return Case(run.name, False, run.errors[0] + more, measured)
    if run.setup_error is not None:
        return Case(run.name, False, run.setup_error, measured)
    if not run.appeared:
        return Case(run.name, False, NEVER_APPEARED, measured)
    if run.name == CONTROL:
        return _control_verdict(run, bound, measured)
    if run.dropped_early:
        return Case(run.name, False, HINTS["dropped-early"], measured)
    removed = run.removed_after is not None
    if removed and run.state == "closed":
        how = "aborted" if run.name == "vanished" else "closed"
        return Case(run.name, True, f"session removed after {run.removed_after:.2f} s, connection {how}", measured)
    if run.state == "closing":
        return Case(run.name, False, HINTS["close-not-abort"].format(bound=bound), measured)
    if removed:
        return Case(run.name, False, HINTS["still-open"], measured)
    if run.state == "closed" and run.name == "vanished":
        return Case(run.name, False, HINTS["closed-but-kept"], measured)
    if run.name == "vanished" and run.pings:
        return Case(run.name, False, HINTS["pong-not-awaited"].format(pings=run.pings, bound=bound), measured)
    return Case(run.name, False, HINTS[run.name].format(bound=bound), measured)


def _control_verdict(run: CaseRun, bound: float, measured: dict[str, Any]) -> Case:
    if run.removed_after is None and run.state == "open":
        pings = f"answering {run.pings} ping{'s' if run.pings != 1 else ''}" if run.pings else "never pinged"
        return Case(CONTROL, True, f"stayed in the map and open for the whole check, over {bound:g} s ({pings})",
                    {**measured, "watched": run.watched})
    if run.ping_gap is not None and run.ping_gap < PONG_GAP:
        return Case(CONTROL, False, HINTS["control-pong"].format(gap_ms=math.ceil(run.ping_gap * 1000)), measured)
    after = run.removed_after or 0.0
    return Case(CONTROL, False, HINTS["control-dropped"].format(how=run.drop, after=after), measured)
