"""A broadcast server that numbers its messages and replays what a reconnecting client missed.

Reconnecting is half of surviving a dropped connection; the other half is the
messages broadcast while the client was away. :class:`ReplayServer` keeps a
bounded history, and a client that comes back with the last number it saw gets
the gap replayed, or a "resync" answer when the gap is older than the history.
:class:`wslab.reconnect.ReconnectingClient` speaks this protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import urllib.parse
from collections import deque

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..runtime.timeline import EventKind, Timeline
from .base import SessionServer
from .gate import Gate
from .wire import Numbered, Resync, decode, encode, encode_resync

__all__ = ["ReplayServer", "last_seq_of"]


class ReplayServer(SessionServer):
    """Numbers its broadcasts and replays what a reconnecting client missed.

    The protocol, in the lab's wire format (:mod:`wslab.servers.wire`):

    * every broadcast goes out as ``42 SENT_AT data``, numbered from 0, in order;
    * a client that reconnects puts the last number it saw in the URL:
      ``ws://127.0.0.1:PORT/?last_seq=41``. The server sends it 42, 43, ...
      from its history, then live messages, with no gap and no duplicate;
    * the history is bounded (the last ``history`` messages). If the client's
      gap starts before it, the server answers
      ``resync FIRST LAST N`` and goes on
      from ``N``: the client must reload its state some other way (an HTTP
      snapshot, say). Same if ``last_seq`` is from the future (the numbering
      restarted);
    * a client without ``last_seq`` gets live messages only.

    Each connection has its own writer walking the history at its own pace,
    so a slow or stalled client never delays the others, and every send has a
    deadline: a client that doesn't take a message within ``send_timeout`` is
    aborted (a blocked ``send()`` ignores close_timeout: notebook 01 shows it).

    The history lives in this object, so it survives ``LabServer.restart()``,
    which restarts the listener, not the Python process. A real server keeps
    it where a restart doesn't lose it (Redis streams, Kafka, a database).

    Args:
        timeline: Where to record resumes, resyncs and send timeouts.
        name: The source name on the timeline.
        history: How many recent messages to keep for replay.
        send_timeout: Seconds a send may take before the client is aborted.
        gate: Checks at the opening handshake, e.g. a token (:class:`~wslab.servers.gate.Gate`).
    """

    def __init__(
        self,
        timeline: Timeline | None = None,
        name: str = "replay",
        *,
        history: int = 1000,
        send_timeout: float = 5.0,
        gate: Gate | None = None,
    ) -> None:
        super().__init__(timeline, name, gate=gate)
        self.history: deque[bytes | str] = deque(maxlen=history)
        self.send_timeout = send_timeout
        self.next_seq = 0  # the number the next broadcast gets
        self.received: deque[str | bytes] = deque(maxlen=10_000)  # what clients sent, latest last
        self.replayed = 0  # messages sent from history to clients that resumed
        self.resyncs = 0
        self.positions: dict[ServerConnection, int] = {}  # per connection: the number its writer sends next
        self._published = asyncio.Event()  # set, then replaced, on every publish

    @property
    def oldest_seq(self) -> int:
        """The oldest number still in the history (``next_seq`` when it is empty)."""
        return self.next_seq - len(self.history)

    def publish(self, data: bytes | str) -> int:
        """Number ``data``, keep it in the history, wake every connection's writer. Returns its number."""
        seq = self.next_seq
        self.history.append(encode(seq, data, sent_at=time.monotonic()))
        self.next_seq += 1
        self._published.set()
        self._published = asyncio.Event()
        return seq

    async def broadcast(self, message: bytes | str) -> None:
        """The same as :meth:`publish`: sending happens in each connection's writer."""
        self.publish(message)

    async def broadcast_forever(self, interval: float, payload: bytes = b"", count: int | None = None) -> None:
        """Publish ``"message N"`` (plus ``payload`` in hex) every ``interval`` seconds."""
        n = 0
        while count is None or n < count:
            self.publish(f"message {n}" + (f" {payload.hex()}" if payload else ""))
            n += 1
            await asyncio.sleep(interval)

    async def publish_ticks(self, interval: float, epoch: float, count: int | None = None) -> None:
        """Publish ``"tick N"``, numbered N, at ``epoch + N * interval`` seconds (Unix time).

        Every server given the same ``epoch`` and ``interval`` publishes the same
        numbered stream, whenever it started and in whatever process: the lab's
        stand-in for one feed that all the servers of a deployment read (a Redis
        stream, a Kafka topic). A new server started before the old one stops
        holds the same recent history, so it can replay the gap of a client that
        moves over. A tick that is late (a busy loop) is published late, never skipped.
        """
        if not self.history:  # join the stream at the current tick
            self.next_seq = max(0, math.ceil((time.time() - epoch) / interval))
        published = 0
        while count is None or published < count:
            await asyncio.sleep(max(0.0, epoch + self.next_seq * interval - time.time()))
            self.publish(f"tick {self.next_seq}")
            published += 1

    def unsent(self, ws: ServerConnection) -> int:
        """How many published messages ``ws``'s writer has yet to send: 0 once it has caught up.

        A drain (:func:`wslab.servers.drain.drain`) waits for 0 before it closes the connection.
        """
        position = self.positions.get(ws)
        return 0 if position is None else max(0, self.next_seq - position)

    async def handler(self, ws: ServerConnection) -> None:
        """One connection: start its writer where the client left off, then read until it ends."""
        last_seq = last_seq_of(ws.request.path if ws.request else "")
        start = self.next_seq if last_seq is None else last_seq + 1
        if last_seq is not None:
            self.timeline.record(self.name, EventKind.RESUME, detail=f"last_seq={last_seq}, now at {self.next_seq}",
                                 last_seq=last_seq)
        self.positions[ws] = start
        session_id = self.register(ws)
        writer = asyncio.create_task(self.write_to(ws, start, live_from=self.next_seq))
        try:
            async for message in ws:
                self.received.append(message)
        finally:
            self.remove(session_id, f"connection closed ({ws.close_code})")
            self.positions.pop(ws, None)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def write_to(self, ws: ServerConnection, cursor: int, live_from: int) -> None:
        """Send history[cursor:] and every later message to ``ws``, in order."""
        while True:
            published = self._published  # take it before checking, so no publish is missed
            if not self.oldest_seq <= cursor <= self.next_seq:
                # The gap starts before the history (or the number is from the future): resync.
                missed = (cursor, self.oldest_seq - 1) if cursor < self.oldest_seq else None
                self.resyncs += 1
                why = f"missed {missed[0]}-{missed[1]}" if missed else f"last_seq {cursor - 1} is from the future"
                self.timeline.record(self.name, EventKind.RESYNC, detail=why, missed=missed)
                if not await self._send(ws, encode_resync(missed, self.next_seq)):
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

    async def _send(self, ws: ServerConnection, message: bytes | str) -> bool:
        """Send with a deadline. False when the connection is gone (or was aborted for being too slow)."""
        try:
            await asyncio.wait_for(ws.send(message), self.send_timeout)
            self.sent += 1
            frame = decode(message)  # where this connection's writer is now, for unsent()
            if isinstance(frame, Numbered):
                self.positions[ws] = frame.seq + 1
            elif isinstance(frame, Resync):
                self.positions[ws] = frame.next_seq
        except ConnectionClosed:
            return False
        except asyncio.TimeoutError:
            self.timeline.record(self.name, EventKind.SEND_TIMEOUT,
                                 detail=f"no progress in {self.send_timeout} s: aborted")
            ws.transport.abort()
            return False
        return True


def last_seq_of(path: str) -> int | None:
    """The ``last_seq`` query parameter of a request path, if any."""
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query).get("last_seq")
    try:
        return int(values[0]) if values else None
    except ValueError:
        return None
