"""Chat-style broadcast servers: the seed's naive one, and (later) fixed ones.

The naive server is the Tomcat pattern from the blog post, in Python:

* every session goes into a dict when it connects, and never leaves it;
* a broadcast is a serial loop of ``await ws.send(...)`` over that dict;
* there is no keepalive, so a client that vanishes is never noticed.

Read :class:`NaiveServer` top to bottom: it is short on purpose.
"""

from __future__ import annotations

import asyncio
import time

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .timeline import Timeline, describe_exception

__all__ = ["NaiveServer", "stamp", "unstamp"]


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
