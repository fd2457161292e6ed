"""What every lab server is: the :class:`ServerApp` interface, and :class:`SessionServer`, the small base they share.

A server app is an object, not a running server: the lab runs its
``handler`` for each connection (``await start_app(lab, app, name=...)``),
and a task runs its ``broadcast_forever``. The session map, the timeline and
the broadcast loop are the same for every variant; what differs is what the
handler and ``broadcast`` do with them, and that is what the notebooks compare.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from websockets.asyncio.server import ServerConnection

from ..runtime.lab import Handler, Lab, LabServer
from ..runtime.timeline import EventKind, Timeline
from .gate import Gate
from .wire import stamp

__all__ = ["ServerApp", "SessionServer", "start_app"]


@runtime_checkable
class ServerApp(Protocol):
    """What the lab, the CLI, the measurements and the checks need from a server.

    Attributes:
        name: Its source name on the timeline.
        timeline: Where it records what happens (servers never print).
        sent: Messages handed to ``send()`` (or to an outbox) so far.
    """

    name: str
    timeline: Timeline
    sent: int

    @property
    def sessions(self) -> Mapping[int, ServerConnection]:
        """The session map: session id -> connection (read-only here: only the app changes it)."""
        ...

    @property
    def serve_options(self) -> dict[str, Any]:
        """Options this server needs from websockets' ``serve()``, e.g. its keepalive."""
        ...

    async def handler(self, ws: ServerConnection) -> None:
        """Serve one connection until it ends."""
        ...

    async def broadcast(self, message: bytes | str) -> None:
        """Send ``message`` to every session."""
        ...

    async def broadcast_forever(self, interval: float, payload: bytes = b"", count: int | None = None) -> None:
        """Broadcast a numbered message every ``interval`` seconds."""
        ...


class SessionServer:
    """A session map, a timeline, and the broadcast loop: what every lab server starts from.

    Subclasses write ``handler`` (when to add and remove a session) and
    ``broadcast`` (how to send to them). :meth:`remove` and :meth:`drop` are
    here for the variants that use them; the naive server never does.

    Args:
        timeline: Where to record events (the server never prints).
        name: The source name on the timeline.
        gate: The checks in front of the handler (origin, caps, rate, token: :class:`~wslab.servers.gate.Gate`);
            None: none.
    """

    def __init__(self, timeline: Timeline | None = None, name: str = "server", *, gate: Gate | None = None) -> None:
        self.sessions: dict[int, ServerConnection] = {}
        self.timeline = timeline if timeline is not None else Timeline()
        self.name = name
        self.gate = gate
        self.sent = 0  # messages handed to send() (or to an outbox) successfully
        self._next_id = 0

    @property
    def serve_options(self) -> dict[str, Any]:
        """Options for websockets' ``serve()``: none unless a variant needs some."""
        return {}

    def register(self, ws: ServerConnection) -> int:
        """Put ``ws`` in the session map; return its session id (s0, s1, ... on the timeline)."""
        session_id = self._next_id
        self._next_id += 1
        self.sessions[session_id] = ws
        return session_id

    def remove(self, session_id: int, reason: str) -> None:
        """Take the session out of the map (once) and record why."""
        if self.sessions.pop(session_id, None) is None:
            return
        self.timeline.record(self.name, EventKind.REMOVED, conn=f"s{session_id}", detail=reason,
                             sessions=len(self.sessions))

    def drop(self, session_id: int, ws: ServerConnection, reason: str) -> None:
        """Abort the TCP connection now (no closing handshake to wait for) and remove the session."""
        self.timeline.record(self.name, EventKind.ABORT, conn=f"s{session_id}", detail=reason)
        ws.transport.abort()
        self.remove(session_id, reason)

    async def handler(self, ws: ServerConnection) -> None:
        raise NotImplementedError

    async def broadcast(self, message: bytes | str) -> None:
        raise NotImplementedError

    async def broadcast_forever(self, interval: float, payload: bytes = b"", count: int | None = None) -> None:
        """Broadcast a numbered, timestamped message (:func:`~wslab.servers.wire.stamp`) every ``interval`` seconds."""
        seq = 0
        while count is None or seq < count:
            await self.broadcast(stamp(seq, payload))
            seq += 1
            await asyncio.sleep(interval)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: {len(self.sessions)} sessions, {self.sent} sent>"


async def start_app(lab: Lab, app: ServerApp, *, name: str | None = None, **serve_options: Any) -> LabServer:
    """Serve ``app`` in ``lab``, with the app's own ``serve_options`` and then yours on top.

    The one way the CLI, the measurements and the exercise checks start a
    server app, so a variant's keepalive settings are never lost. An app
    with a ``gate`` (:class:`~wslab.servers.gate.Gate`) is served behind it:
    its checks run at each opening handshake, before the app's handler.
    """
    handler: Handler = app.handler
    gate: Gate | None = getattr(app, "gate", None)
    if gate is not None:
        handler = gate.wrap(handler, app.timeline, app.name)
        serve_options = {**gate.serve_options, **serve_options}
    options = {**app.serve_options, **serve_options}
    return await lab.serve(handler, name=name or app.name, **options)
