"""The seed's server: a session map that never lets go, and a serial broadcast loop.

The naive server is the Tomcat pattern from the blog post, in Python:

* every session goes into a dict when it connects, and never leaves it;
* a broadcast is a serial loop of ``await ws.send(...)`` over that dict;
* there is no keepalive, so a client that vanishes is never noticed.

Read :class:`NaiveServer` top to bottom: it is short on purpose.
"""

from __future__ import annotations

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..runtime.timeline import EventKind, Timeline, describe_exception
from .base import SessionServer

__all__ = ["NaiveServer"]


class NaiveServer(SessionServer):
    """Keeps sessions in a dict, never removes them, broadcasts in a serial loop.

    Args:
        timeline: Where to record send errors (the server never prints).
        name: The source name on the timeline.
    """

    def __init__(self, timeline: Timeline | None = None, name: str = "naive") -> None:
        super().__init__(timeline, name)

    async def handler(self, ws: ServerConnection) -> None:
        """One connection: register the session, then read until the connection ends."""
        self.register(ws)  # added on connect ... and never removed
        async for _ in ws:
            pass  # clients only listen in this lab; a real chat would handle each message here

    async def broadcast(self, message: bytes | str) -> None:
        """Send ``message`` to every session, one after the other."""
        for session_id, ws in list(self.sessions.items()):  # a snapshot: sessions join mid-loop
            try:
                await ws.send(message)
                self.sent += 1
            except ConnectionClosed as exc:
                # Like the Tomcat server in the post: log the error, keep the session.
                self.timeline.record(self.name, EventKind.SEND_ERROR, conn=f"s{session_id}",
                                     detail=describe_exception(exc))
