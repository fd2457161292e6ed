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


# -- ReplayServer: numbered broadcasts, replay of a reconnecting client's gap --------

import contextlib  # noqa: E402  (this region's own imports, kept next to the code that uses them)
import json  # noqa: E402
import urllib.parse  # noqa: E402
from collections import deque  # noqa: E402

__all__ += ["ReplayServer", "encode_message", "decode_message"]


def encode_message(seq: int, data: str) -> str:
    """A numbered broadcast as sent on the wire: ``{"seq": 42, "data": "..."}``."""
    return json.dumps({"seq": seq, "data": data})


def decode_message(raw: str | bytes) -> tuple[int | None, str | bytes, dict | None]:
    """``(seq, data, control)`` for a message from a :class:`ReplayServer`.

    A numbered broadcast gives ``(seq, data, None)``; a control message such as
    ``{"resync": true, ...}`` gives ``(None, raw, control)``; anything else
    (another server's messages) gives ``(None, raw, None)``.
    """
    try:
        obj = json.loads(raw)
    except (ValueError, TypeError):
        return None, raw, None
    if isinstance(obj, dict) and isinstance(obj.get("seq"), int):
        return obj["seq"], obj.get("data", ""), None
    if isinstance(obj, dict) and obj.get("resync"):
        return None, raw, obj
    return None, raw, None


class ReplayServer:
    """Numbers its broadcasts and replays what a reconnecting client missed.

    The protocol, in JSON text frames:

    * every broadcast goes out as ``{"seq": 42, "data": "..."}``, numbered
      from 0, in order;
    * a client that reconnects puts the last number it saw in the URL:
      ``ws://127.0.0.1:PORT/?last_seq=41``. The server sends it 42, 43, ...
      from its history, then live messages, with no gap and no duplicate;
    * the history is bounded (the last ``history`` messages). If the client's
      gap starts before it, the server answers
      ``{"resync": true, "missed": [first, last], "next_seq": N}`` and goes on
      from ``N``: the client must reload its state some other way (an HTTP
      snapshot, say). Same if ``last_seq`` is from the future (the numbering
      restarted);
    * a client without ``last_seq`` gets live messages only.

    Each connection has its own writer walking the history at its own pace,
    so a slow or stalled client never delays the others, and every send has a
    deadline: a client that doesn't take a message within ``send_timeout`` is
    aborted (a blocked ``send()`` ignores close_timeout, see facts.md §4).

    The history lives in this object, so it survives ``LabServer.restart()``,
    which restarts the listener, not the Python process. A real server keeps
    it where a restart doesn't lose it (Redis streams, Kafka, a database).

    Args:
        timeline: Where to record resumes, resyncs and send timeouts.
        name: The source name on the timeline.
        history: How many recent messages to keep for replay.
        send_timeout: Seconds a send may take before the client is aborted.
    """

    def __init__(
        self,
        timeline: Timeline | None = None,
        name: str = "replay",
        *,
        history: int = 1000,
        send_timeout: float = 5.0,
    ) -> None:
        self.timeline = timeline if timeline is not None else Timeline()
        self.name = name
        self.history: deque[str] = deque(maxlen=history)
        self.send_timeout = send_timeout
        self.next_seq = 0  # the number the next broadcast gets
        self.received: deque[str | bytes] = deque(maxlen=10_000)  # what clients sent, latest last
        self.replayed = 0  # messages sent from history to clients that resumed
        self.resyncs = 0
        self._published = asyncio.Event()  # set, then replaced, on every publish

    @property
    def oldest_seq(self) -> int:
        """The oldest number still in the history (``next_seq`` when it is empty)."""
        return self.next_seq - len(self.history)

    def publish(self, data: str) -> int:
        """Number ``data``, keep it in the history, wake every connection's writer. Returns its number."""
        seq = self.next_seq
        self.history.append(encode_message(seq, data))
        self.next_seq += 1
        self._published.set()
        self._published = asyncio.Event()
        return seq

    async def broadcast(self, data: str) -> int:
        """The same as :meth:`publish`: sending happens in each connection's writer."""
        return self.publish(data)

    async def broadcast_forever(self, interval: float, payload: bytes = b"", count: int | None = None) -> None:
        """Publish ``"message N"`` (plus ``payload`` in hex) every ``interval`` seconds."""
        n = 0
        while count is None or n < count:
            self.publish(f"message {n}" + (f" {payload.hex()}" if payload else ""))
            n += 1
            await asyncio.sleep(interval)

    async def handler(self, ws: ServerConnection) -> None:
        """One connection: start its writer where the client left off, then read until it ends."""
        last_seq = _last_seq(ws.request.path if ws.request else "")
        start = self.next_seq if last_seq is None else last_seq + 1
        if last_seq is not None:
            self.timeline.record(self.name, "resume", detail=f"last_seq={last_seq}, now at {self.next_seq}",
                                 last_seq=last_seq)
        writer = asyncio.create_task(self._write(ws, start, live_from=self.next_seq))
        try:
            async for message in ws:
                self.received.append(message)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _write(self, ws: ServerConnection, cursor: int, live_from: int) -> None:
        """Send history[cursor:] and every later message to ``ws``, in order."""
        while True:
            published = self._published  # take it before checking, so no publish is missed
            if not self.oldest_seq <= cursor <= self.next_seq:
                # The gap starts before the history (or the number is from the future): resync.
                missed = [cursor, self.oldest_seq - 1] if cursor < self.oldest_seq else None
                self.resyncs += 1
                why = f"missed {missed[0]}-{missed[1]}" if missed else f"last_seq {cursor - 1} is from the future"
                self.timeline.record(self.name, "resync", detail=why, missed=missed)
                if not await self._send(ws, json.dumps({"resync": True, "missed": missed, "next_seq": self.next_seq})):
                    return
                cursor = live_from = self.next_seq
            elif cursor < self.next_seq:
                if not await self._send(ws, self.history[cursor - self.oldest_seq]):
                    return
                if cursor < live_from:
                    self.replayed += 1
                cursor += 1
            else:
                await published.wait()

    async def _send(self, ws: ServerConnection, message: str) -> bool:
        """Send with a deadline. False when the connection is gone (or was aborted for being too slow)."""
        try:
            await asyncio.wait_for(ws.send(message), self.send_timeout)
        except ConnectionClosed:
            return False
        except asyncio.TimeoutError:
            self.timeline.record(self.name, "send-timeout", detail=f"no progress in {self.send_timeout} s: aborted")
            ws.transport.abort()
            return False
        return True


def _last_seq(path: str) -> int | None:
    """The ``last_seq`` query parameter of a request path, if any."""
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query).get("last_seq")
    try:
        return int(values[0]) if values else None
    except ValueError:
        return None


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

    async def broadcast_forever(self, interval: float, payload: bytes = b"", count: int | None = None) -> None:
        """Broadcast a numbered, timestamped message every ``interval`` seconds."""
        seq = 0
        while count is None or seq < count:
            await self.broadcast(stamp(seq, payload))
            seq += 1
            await asyncio.sleep(interval)

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
SERVERS["replay"] = (ReplayServer, "numbers broadcasts; replays a reconnecting client's gap from a bounded history")
