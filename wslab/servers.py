"""Chat-style broadcast servers: the seed's naive one, and (later) fixed ones.

The naive server is the Tomcat pattern from the blog post, in Python:

* every session goes into a dict when it connects, and never leaves it;
* a broadcast is a serial loop of ``await ws.send(...)`` over that dict;
* there is no keepalive, so a client that vanishes is never noticed.

Read :class:`NaiveServer` top to bottom: it is short on purpose.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import websockets.asyncio.server
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .timeline import Timeline, describe_exception

__all__ = ["NaiveServer", "FixedServer", "BroadcastServer", "Outbox", "SERVERS", "set_tcp_user_timeout", "stamp", "unstamp"]


def stamp(seq: int, payload: bytes = b"") -> bytes:
    """A broadcast message: sequence number and send time, then the payload.

    Receivers use the time to measure latency (same machine, same clock).
    """
    return b"%d %.6f " % (seq, time.monotonic()) + payload


def unstamp(message: bytes | str) -> tuple[int, float]:
    """The sequence number and send time of a :func:`stamp`-ed message."""
    if isinstance(message, str):
        message = message.encode()
    seq, sent_at, _ = message.split(b" ", 2)
    return int(seq), float(sent_at)


class NaiveServer:
    """Keeps sessions in a dict, never removes them, broadcasts in a serial loop.

    Args:
        timeline: Where to record send errors (the server never prints).
        name: The source name on the timeline.
    """

    def __init__(self, timeline: Timeline | None = None, name: str = "naive") -> None:
        self.sessions: dict[int, ServerConnection] = {}
        self.timeline = timeline if timeline is not None else Timeline()
        self.name = name
        self.sent = 0  # messages handed to send() successfully
        self._next_id = 0

    async def handler(self, ws: ServerConnection) -> None:
        """One connection: register the session, then read until the connection ends."""
        session_id = self._next_id
        self._next_id += 1
        self.sessions[session_id] = ws  # added on connect ... and never removed
        async for message in ws:
            pass  # clients only listen in this lab; a real chat would handle messages here

    async def broadcast(self, message: bytes | str) -> None:
        """Send ``message`` to every session, one after the other."""
        for session_id, ws in list(self.sessions.items()):  # a snapshot: sessions join mid-loop
            try:
                await ws.send(message)
                self.sent += 1
            except ConnectionClosed as exc:
                # Like the Tomcat server in the post: log the error, keep the session.
                self.timeline.record(self.name, "send-error", conn=f"s{session_id}", detail=describe_exception(exc))

    async def broadcast_forever(self, interval: float, payload: bytes = b"", count: int | None = None) -> None:
        """Broadcast a numbered, timestamped message every ``interval`` seconds."""
        seq = 0
        while count is None or seq < count:
            await self.broadcast(stamp(seq, payload))
            seq += 1
            await asyncio.sleep(interval)


# -- the fix --------------------------------------------------------------------------------------


@dataclass
class Outbox:
    """One client's outbound queue, and how many bytes it holds."""

    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    bytes: int = 0


class FixedServer:
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
        isolation: Send through a bounded outbox per client, with a deadline.
        max_buffer: Bytes a client may hold: its outbox plus its write buffer.
        send_deadline: Seconds one send may take before the client is dropped.
        tcp_user_timeout: Linux only: seconds sent data may stay unacknowledged
            before the kernel kills the connection (``TCP_USER_TIMEOUT``).
    """

    def __init__(
        self,
        timeline: Timeline | None = None,
        name: str = "fixed",
        *,
        keepalive: bool = True,
        ping_interval: float = 0.5,
        ping_timeout: float = 0.5,
        isolation: bool = True,
        max_buffer: int = 1024 * 1024,
        send_deadline: float = 0.5,
        tcp_user_timeout: float | None = None,
    ) -> None:
        self.sessions: dict[int, ServerConnection] = {}
        self.outboxes: dict[int, Outbox] = {}
        self.timeline = timeline if timeline is not None else Timeline()
        self.name = name
        self.keepalive = keepalive
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.isolation = isolation
        self.max_buffer = max_buffer
        self.send_deadline = send_deadline
        self.tcp_user_timeout = tcp_user_timeout
        self.sent = 0  # messages handed to send() successfully
        self._next_id = 0

    @property
    def serve_options(self) -> dict[str, Any]:
        """Options for ``lab.serve()``: none, this server runs its own keepalive."""
        return {}

    async def handler(self, ws: ServerConnection) -> None:
        """One connection: register the session, read until the end, then remove it."""
        session_id = self._next_id
        self._next_id += 1
        self.sessions[session_id] = ws
        if self.tcp_user_timeout is not None:
            set_tcp_user_timeout(ws, self.tcp_user_timeout)
        helpers = []
        if self.keepalive:
            helpers.append(asyncio.create_task(self._keepalive(session_id, ws)))
        if self.isolation:
            self.outboxes[session_id] = Outbox()
            helpers.append(asyncio.create_task(self._send_from_outbox(session_id, ws)))
        try:
            async for message in ws:
                pass  # clients only listen in this lab
        finally:  # 1. removal: however the handler ends
            for task in helpers:
                task.cancel()
            self.remove(session_id, f"connection closed ({ws.close_code})")

    async def broadcast(self, message: bytes | str) -> None:
        """Send ``message`` to every session: into outboxes, or one after the other."""
        for session_id, ws in list(self.sessions.items()):
            if self.isolation:
                self._put(session_id, ws, message)
                continue
            try:
                await ws.send(message)
                self.sent += 1
            except ConnectionClosed:
                self.remove(session_id, "send failed")  # 1. removal: as soon as a send fails

    # The same loop as the naive server: only broadcast() differs.
    broadcast_forever = NaiveServer.broadcast_forever

    async def _keepalive(self, session_id: int, ws: ServerConnection) -> None:
        # 2. liveness: one deadline around sending the ping and receiving the pong.
        while True:
            await asyncio.sleep(self.ping_interval)
            try:
                async with asyncio.timeout(self.ping_timeout):
                    pong = await ws.ping()
                    await pong
            except TimeoutError:
                self.drop(session_id, ws, f"no pong within {self.ping_timeout} s")
                return
            except ConnectionClosed:
                return  # the handler's finally removes the session

    def _put(self, session_id: int, ws: ServerConnection, message: bytes | str) -> None:
        # 3. isolation: never wait; a client that holds too much is dropped.
        outbox = self.outboxes.get(session_id)
        if outbox is None:
            return
        held = outbox.bytes + ws.transport.get_write_buffer_size() + len(message)
        if held > self.max_buffer:
            self.drop(session_id, ws, f"would hold {held} bytes, over {self.max_buffer}")
            return
        outbox.bytes += len(message)
        outbox.queue.put_nowait(message)

    async def _send_from_outbox(self, session_id: int, ws: ServerConnection) -> None:
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

    def drop(self, session_id: int, ws: ServerConnection, reason: str) -> None:
        """Abort the TCP connection now (no closing handshake to wait for) and remove the session."""
        self.timeline.record(self.name, "abort", conn=f"s{session_id}", detail=reason)
        ws.transport.abort()
        self.remove(session_id, reason)

    def remove(self, session_id: int, reason: str) -> None:
        """Take the session out of the dict (once) and record why."""
        if self.sessions.pop(session_id, None) is None:
            return
        self.outboxes.pop(session_id, None)
        self.timeline.record(self.name, "removed", conn=f"s{session_id}", detail=reason, sessions=len(self.sessions))


class BroadcastServer(FixedServer):
    """Removal as in :class:`FixedServer`, then what websockets offers: its keepalive and ``broadcast()``.

    websockets' keepalive runs when the server is started with
    ``ping_interval``/``ping_timeout`` (see :attr:`serve_options`).
    ``broadcast()`` never waits: it writes each message into every OPEN
    connection's buffer and skips the others. It never drops a client
    either, so a client that stopped reading holds more and more memory.
    """

    def __init__(self, timeline: Timeline | None = None, name: str = "broadcast", **options: Any) -> None:
        options.setdefault("keepalive", True)
        super().__init__(timeline, name, isolation=False, **options)
        self.builtin_keepalive, self.keepalive = self.keepalive, False

    @property
    def serve_options(self) -> dict[str, Any]:
        if not self.builtin_keepalive:
            return {}
        return {"ping_interval": self.ping_interval, "ping_timeout": self.ping_timeout}

    async def broadcast(self, message: bytes | str) -> None:
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


# Every server variant by name, in the order of notebook 02's ablation: a factory called as
# ``factory(timeline=..., name=...)`` (keyword options go to it too), and a one-line description.
# ``wslab serve --server NAME`` offers the same list.
SERVERS: dict[str, tuple[Callable[..., Any], str]] = {
    "naive": (NaiveServer, "the seed's session map: never removes a session, serial broadcast loop"),
    "removal": (
        functools.partial(FixedServer, keepalive=False, isolation=False),
        "removes a session when its handler ends or a send fails; serial broadcast loop",
    ),
    "keepalive": (
        functools.partial(FixedServer, isolation=False),
        "removal, plus pings that drop a peer whose pong is late; serial broadcast loop",
    ),
    "fixed": (FixedServer, "removal, keepalive, and a bounded outbox per client with a send deadline"),
    "broadcast": (BroadcastServer, "removal, websockets' own keepalive and broadcast(): never waits, never bounds"),
}


# Registered here, after SERVERS exists: the replaying server for ``wslab serve --server replay``.
from .replay import ReplayServer  # noqa: E402  (replay imports nothing from here)

SERVERS["replay"] = (ReplayServer, "numbers broadcasts; replays a reconnecting client's gap from a bounded history")
