"""The seed's server, fixed: removal, keepalive with a deadline, and isolation of slow clients.

:class:`FixedServer` is the naive server with three steps added, each behind a
flag so that notebook 02 can measure what each one buys. :class:`BroadcastServer`
is what websockets offers out of the box, for comparison.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import websockets.asyncio.server
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..runtime.timeline import EventKind, Timeline
from .base import SessionServer
from .gate import Gate

__all__ = ["FixedServer", "BroadcastServer", "Outbox", "set_tcp_user_timeout"]


@dataclass
class Outbox:
    """One client's outbound queue, and how many bytes it holds."""

    queue: asyncio.Queue[str | bytes] = field(default_factory=asyncio.Queue)
    bytes: int = 0


class FixedServer(SessionServer):
    """The seed's server, fixed in three steps you can switch on one at a time.

    1. **Removal** (always on): a session leaves the dict when its handler
       ends, in a ``finally`` block, and as soon as a send to it fails.
       This fixes a peer that closed, was killed (FIN) or reset (RST).
    2. **Keepalive** (``keepalive=True``): every ``ping_interval`` seconds,
       ping; no pong within ``ping_timeout``: the peer has vanished, abort
       the connection and remove the session right then. The deadline covers
       sending the ping too, so a peer that stopped reading is caught as well.
    3. **Isolation** (``isolation=True``): a broadcast only appends to each
       client's :class:`Outbox`; a task per client sends from it. A client
       that holds more than ``max_buffer`` bytes, or whose send takes longer
       than ``send_deadline`` seconds, is aborted and removed. A broadcast
       never waits on any client.

    Every removal and abort is recorded on the timeline with its reason.

    Args:
        timeline: Where to record events (the server never prints).
        name: The source name on the timeline.
        keepalive: Ping each client and drop it when a pong is late.
        ping_interval: Seconds between pings.
        ping_timeout: Seconds to wait for the pong (and for the ping to go out).
        dead_after: Tell a slow client from a dead one: a pong may come this late
            (seconds, more than ``ping_timeout``) and the client is only recorded
            as ``slow``; no pong by then, it is dead. None: ``ping_timeout`` is
            the verdict. A slow client that can't keep up is still dropped by
            ``max_buffer`` (its outbox grows), for that reason.
        isolation: Send through a bounded outbox per client, with a deadline.
        max_buffer: Bytes a client may hold: its outbox plus its write buffer.
        send_deadline: Seconds one send may take before the client is dropped.
        tcp_user_timeout: Linux only: seconds sent data may stay unacknowledged
            before the kernel kills the connection (``TCP_USER_TIMEOUT``).
        origins: The ``Origin`` values a handshake may carry; any other gets 403
            (websockets' ``origins=``). None: any. A shortcut for ``gate=Gate(origins=...)``.
        gate: Every check at the opening handshake (:class:`~wslab.servers.gate.Gate`).
    """

    def __init__(
        self,
        timeline: Timeline | None = None,
        name: str = "fixed",
        *,
        keepalive: bool = True,
        ping_interval: float = 0.5,
        ping_timeout: float = 0.5,
        dead_after: float | None = None,
        isolation: bool = True,
        max_buffer: int = 1024 * 1024,
        send_deadline: float = 0.5,
        tcp_user_timeout: float | None = None,
        origins: Sequence[str | None] | None = None,
        gate: Gate | None = None,
    ) -> None:
        if origins is not None:
            gate = gate if gate is not None else Gate()
            gate.origins = list(origins)
        super().__init__(timeline, name, gate=gate)
        self.outboxes: dict[int, Outbox] = {}
        self.keepalive = keepalive
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        if dead_after is not None and dead_after < ping_timeout:
            raise ValueError(f"dead_after ({dead_after} s) must be at least ping_timeout ({ping_timeout} s)")
        self.dead_after = dead_after
        self.isolation = isolation
        self.max_buffer = max_buffer
        self.send_deadline = send_deadline
        self.tcp_user_timeout = tcp_user_timeout

    async def handler(self, ws: ServerConnection) -> None:
        """One connection: register the session, read until the end, then remove it."""
        session_id = self.register(ws)
        if self.tcp_user_timeout is not None:
            set_tcp_user_timeout(ws, self.tcp_user_timeout)
        helpers = []
        if self.keepalive:
            helpers.append(asyncio.create_task(self.check_liveness(session_id, ws)))
        if self.isolation:
            self.outboxes[session_id] = Outbox()
            helpers.append(asyncio.create_task(self.send_from_outbox(session_id, ws)))
        try:
            async for _ in ws:
                pass  # clients only listen in this lab: nothing to do with what they send
        finally:  # 1. removal: however the handler ends
            for task in helpers:
                task.cancel()
            self.remove(session_id, f"connection closed ({ws.close_code})")

    async def broadcast(self, message: bytes | str) -> None:
        """Send ``message`` to every session: into outboxes, or one after the other."""
        for session_id, ws in list(self.sessions.items()):
            if self.isolation:
                self.enqueue(session_id, ws, message)
                continue
            try:
                await ws.send(message)
                self.sent += 1
            except ConnectionClosed:
                self.remove(session_id, "send failed")  # 1. removal: as soon as a send fails

    async def check_liveness(self, session_id: int, ws: ServerConnection) -> None:
        """Step 2, liveness: ping every ``ping_interval``; drop the client if the pong is late."""
        # One deadline around sending the ping and receiving the pong: a peer that stopped
        # reading blocks the ping itself, and is caught too.
        # With dead_after, a pong later than ping_timeout still proves the client alive, only slow:
        # its pongs wait behind the messages it has not read yet. Only no pong at all is death.
        deadline = self.dead_after if self.dead_after is not None else self.ping_timeout
        last_late = 0.0  # how late the last late pong was: a slow client, if any
        while True:
            await asyncio.sleep(self.ping_interval)
            started = asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout(deadline):
                    pong = await ws.ping()
                    await pong
            except TimeoutError:
                slow = f" (its last pong came {last_late:.2f} s late: slow, falling behind)" if last_late else ""
                self.drop(session_id, ws, f"no pong within {deadline} s{slow}")
                return
            except ConnectionClosed:
                return  # the handler's finally removes the session
            late = asyncio.get_running_loop().time() - started
            if late > self.ping_timeout:
                last_late = late
                self.timeline.record(self.name, EventKind.SLOW, conn=f"s{session_id}", late=late,
                                     detail=f"pong after {late:.2f} s, over ping_timeout={self.ping_timeout}: "
                                     "slow, not dead")

    def enqueue(self, session_id: int, ws: ServerConnection, message: bytes | str) -> None:
        """Step 3, isolation: append to the client's outbox, never wait; drop a client that holds too much."""
        outbox = self.outboxes.get(session_id)
        if outbox is None:
            return
        held = outbox.bytes + ws.transport.get_write_buffer_size() + len(message)
        if held > self.max_buffer:
            self.drop(session_id, ws, f"would hold {held} bytes, over {self.max_buffer}")
            return
        outbox.bytes += len(message)
        outbox.queue.put_nowait(message)

    async def send_from_outbox(self, session_id: int, ws: ServerConnection) -> None:
        """Step 3, isolation: one task per client sends its outbox in order, each send with a deadline."""
        outbox = self.outboxes[session_id]
        while True:
            message = await outbox.queue.get()
            try:
                async with asyncio.timeout(self.send_deadline):
                    await ws.send(message)
                self.sent += 1
            except TimeoutError:
                self.drop(session_id, ws, f"send took over {self.send_deadline} s")
                return
            except ConnectionClosed:
                self.remove(session_id, "send failed")
                return
            finally:
                outbox.bytes -= len(message)

    def unsent(self, ws: ServerConnection) -> int:
        """Bytes ``ws``'s outbox still holds, the one being sent included: 0 once it is flushed.

        A drain (:func:`wslab.servers.drain.drain`) waits for 0 before it closes the connection.
        """
        for session_id, session in self.sessions.items():
            if session is ws:
                outbox = self.outboxes.get(session_id)
                return outbox.bytes if outbox is not None else 0
        return 0

    def remove(self, session_id: int, reason: str) -> None:
        """Take the session out of the map (once), with its outbox, and record why."""
        self.outboxes.pop(session_id, None)
        super().remove(session_id, reason)


class BroadcastServer(SessionServer):
    """Removal as in :class:`FixedServer`, then what websockets offers: its keepalive and ``broadcast()``.

    websockets' keepalive runs because :attr:`serve_options` asks ``serve()``
    for it. ``broadcast()`` never waits: it writes each message into every
    OPEN connection's buffer and skips the others. It never drops a client
    either, so a client that stopped reading holds more and more memory.

    Args:
        timeline: Where to record events (the server never prints).
        name: The source name on the timeline.
        ping_interval: websockets' keepalive interval, in seconds; None: no keepalive.
        ping_timeout: websockets' pong deadline, in seconds.
    """

    def __init__(
        self,
        timeline: Timeline | None = None,
        name: str = "broadcast",
        *,
        ping_interval: float | None = 0.5,
        ping_timeout: float | None = 0.5,
    ) -> None:
        super().__init__(timeline, name)
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout

    @property
    def serve_options(self) -> dict[str, Any]:
        return {"ping_interval": self.ping_interval, "ping_timeout": self.ping_timeout}

    async def handler(self, ws: ServerConnection) -> None:
        """One connection: register the session, read until the end, then remove it."""
        session_id = self.register(ws)
        try:
            async for _ in ws:
                pass  # clients only listen in this lab: nothing to do with what they send
        finally:
            self.remove(session_id, f"connection closed ({ws.close_code})")

    async def broadcast(self, message: bytes | str) -> None:
        """Write ``message`` into every OPEN connection's buffer, never waiting: websockets' ``broadcast()``."""
        websockets.asyncio.server.broadcast(self.sessions.values(), message)
        self.sent += len(self.sessions)


def set_tcp_user_timeout(ws: ServerConnection, seconds: float) -> bool:
    """Let the kernel kill the connection when sent data stays unacknowledged for ``seconds``.

    This catches a peer that vanished while data was in flight to it (a
    broadcast, a ping) or, on Linux, that stopped reading (zero window).
    It needs no pings, but it sees nothing on an idle connection. Linux
    only: returns False where ``TCP_USER_TIMEOUT`` does not exist.
    """
    sock = ws.transport.get_extra_info("socket")
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if sock is None or option is None:
        return False
    sock.setsockopt(socket.IPPROTO_TCP, option, int(seconds * 1000))
    return True
