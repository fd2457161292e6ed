"""Shutting a server down for a deploy: three strategies, and the drain that spares the next server a stampede.

A deploy replaces a server that holds open WebSockets. How the old one lets
go of them decides what its clients see and what the new one gets:

===============  ==============================================================
kill -9          the process dies: every client sees 1006 (no close frame), at
                 the same moment, and every one reconnects at once. Only a real
                 process can die like that: :meth:`ServerProcess.kill
                 <wslab.servers.process.ServerProcess.kill>`.
1012 at once     every connection gets a close frame with 1012 (service
                 restart) at the same moment: clean, but every client still
                 reconnects at once. :func:`drain` with ``window=0``.
drain            stop accepting (a proxy sends new connections to the new
                 server), flush each outbox, close with 1012 in batches spread
                 over a drain window, and abort whoever is left at a deadline.
                 The reconnections arrive spread over the window too.
===============  ==============================================================

``wslab serve`` drains on SIGTERM (``--drain-window``), which is what a
deploy tool (systemd, Kubernetes, a script) sends first. :func:`drain_schedule`
is the plan, without I/O; :func:`drain` carries it out on a
:class:`~wslab.runtime.server.LabServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode

from ..runtime.server import LabServer
from ..runtime.timeline import EventKind
from ..runtime.timing import POLL, abort_all

__all__ = ["Batch", "DrainResult", "HasOutboxes", "Strategy", "drain", "drain_schedule"]


class Strategy(StrEnum):
    """The three ways to shut a server down for a deploy, in the table above."""

    KILL = "kill -9"
    AT_ONCE = "1012 at once"
    DRAIN = "drain"


@runtime_checkable
class HasOutboxes(Protocol):
    """A server app that queues messages per connection (``FixedServer``, ``ReplayServer``)."""

    def unsent(self, ws: ServerConnection) -> int:
        """How much the app has yet to hand to ``ws``: 0 when its outbox is empty."""
        ...


@dataclass(frozen=True)
class Batch:
    """One batch of a drain: ``size`` connections closed ``at`` seconds after the drain began."""

    at: float
    size: int


def drain_schedule(connections: int, window: float, *, every: float = 0.1) -> list[Batch]:
    """Spread ``connections`` closes over ``window`` seconds, one batch every ``every`` seconds.

    The batches are as even as they can be (sizes differ by one at most), the
    first at 0 and the last before ``window``. ``window`` 0 is one batch: all at
    once. Pure: no I/O, no clock.
    """
    if connections <= 0:
        return []
    batches = min(connections, max(1, math.floor(window / every + 1e-9))) if window > 0 else 1
    size, extra = divmod(connections, batches)
    return [Batch(i * window / batches, size + (1 if i < extra else 0)) for i in range(batches)]


@dataclass
class DrainResult:
    """What a :func:`drain` did, in seconds since it began.

    Attributes:
        connections: Open when it began.
        batches: When each batch was closed, and how many were in it.
        flushed: Connections whose outbox was empty before their close frame went out.
        closed: Connections that finished the closing handshake (the client answered).
        aborted: Connections still open at the deadline, aborted (their client sees 1006).
        took: Seconds from the first step to the last connection gone.
    """

    connections: int
    batches: list[Batch] = field(default_factory=list)
    flushed: int = 0
    closed: int = 0
    aborted: int = 0
    took: float = 0.0


async def _flushed(app: object, ws: ServerConnection, within: float) -> bool:
    """Wait until the app has handed ``ws`` everything it queued and the kernel took it all; at most ``within`` s."""
    end = time.monotonic() + within
    while True:
        unsent = app.unsent(ws) if isinstance(app, HasOutboxes) else 0
        if unsent == 0 and ws.transport.get_write_buffer_size() == 0:
            return True
        if time.monotonic() >= end or ws.transport.is_closing():
            return False
        await asyncio.sleep(POLL)


async def drain(
    server: LabServer,
    app: object = None,
    *,
    window: float = 2.0,
    every: float = 0.1,
    flush_within: float = 0.5,
    grace: float = 1.0,
    code: int = CloseCode.SERVICE_RESTART,
    reason: str = "service restart",
) -> DrainResult:
    """Shut ``server`` down gently: stop accepting, then close its connections a batch at a time.

    1. **Stop accepting**: the listening socket closes, so connection attempts
       are refused and a proxy in front sends them to another server.
    2. **Flush**, connection by connection, just before its close: wait (at most
       ``flush_within`` s) until ``app`` (if it keeps outboxes) has handed it
       every message it queued, and its write buffer is empty.
    3. **Close with** ``code`` (1012, service restart) in the batches of
       :func:`drain_schedule`: clients come back spread over ``window`` seconds.
       Late batches (a busy loop) still go out at least ``every / 2`` s apart.
    4. **Abort** whoever is left ``grace`` seconds after the last batch: a client
       that never answers the close frame must not hold the deploy up.

    Returns when no connection is left, at most ``window + grace`` seconds
    (plus one more second for the listener) after it began.
    """
    timeline = server.lab.timeline
    started = time.monotonic()
    server.stop_accepting()
    connections = sorted(server.connections, key=server.label)
    result = DrainResult(len(connections), drain_schedule(len(connections), window, every=every))
    closing: list[asyncio.Future[None]] = []
    deadline = started + (result.batches[-1].at if result.batches else 0.0) + grace

    async def close_one(ws: ServerConnection) -> None:
        if await _flushed(app, ws, min(flush_within, max(0.0, deadline - time.monotonic()))):
            result.flushed += 1
        with contextlib.suppress(asyncio.TimeoutError):  # past the deadline: aborted below
            await asyncio.wait_for(ws.close(code, reason), max(0.0, deadline - time.monotonic()))

    pending = iter(connections)
    for k, batch in enumerate(result.batches):
        # On time; but a busy loop that wakes up late sends the late batches half an interval apart,
        # never all together: the point of a drain is that the new server never gets a herd.
        await asyncio.sleep(max(0.0 if k == 0 else every / 2, started + batch.at - time.monotonic()))
        members = list(itertools.islice(pending, batch.size))
        closing += [asyncio.ensure_future(close_one(ws)) for ws in members]
        timeline.record(server.name, EventKind.DRAIN, code=int(code), detail=f"closing {len(members)} "
                        f"({len(closing)}/{result.connections}) at +{batch.at:.2f} s", size=len(members))
    if closing:
        await asyncio.wait(closing, timeout=max(0.0, deadline - time.monotonic()))
    left = _still_open(connections)
    if left:
        result.aborted = abort_all(left)
        timeline.record(server.name, EventKind.DRAIN, detail=f"aborted {result.aborted} still open at the deadline",
                        aborted=result.aborted)
    for task in closing:
        task.cancel()
    await asyncio.gather(*closing, return_exceptions=True)
    result.closed = result.connections - result.aborted
    await server.stop(code=code, reason=reason, deadline=1.0)  # nothing left to close: it only stops the server
    result.took = time.monotonic() - started
    return result


def _still_open(connections: Iterable[ServerConnection]) -> list[ServerConnection]:
    """Connections whose TCP connection is not closing yet: the closing handshake never finished."""
    return [ws for ws in connections if not ws.transport.is_closing()]
