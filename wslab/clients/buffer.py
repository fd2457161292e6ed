"""What a disconnected client keeps to send later: a bounded buffer, flushed in order on the next connection.

:meth:`~wslab.clients.reconnect.ReconnectingClient.send` puts a message here
while there is no connection. The buffer is bounded: an application that
keeps sending into a link that stays down must hear about it
(:class:`BufferFull`), not grow without limit.
"""

from __future__ import annotations

from collections import deque

from websockets.asyncio.client import ClientConnection

from ..runtime.errors import LabError

__all__ = ["BufferFull", "SendBuffer"]


class BufferFull(LabError):
    """:meth:`~wslab.clients.reconnect.ReconnectingClient.send` while disconnected, with the outbound buffer full."""


class SendBuffer:
    """At most ``size`` messages, kept in order until :meth:`flush` sends them.

    Args:
        size: How many messages it keeps.
        name: The client's name, for the error message.
    """

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._messages: deque[str | bytes] = deque()

    def __len__(self) -> int:
        return len(self._messages)

    def add(self, message: str | bytes) -> None:
        """Keep ``message`` for the next connection.

        Raises:
            BufferFull: ``size`` messages are waiting already.
        """
        if len(self._messages) >= self.size:
            raise BufferFull(
                f"{self.name}: {len(self._messages)} messages are waiting for a connection (buffer_size="
                f"{self.size}); wait for client.wait_open() or make the buffer bigger"
            )
        self._messages.append(message)

    async def flush(self, ws: ClientConnection) -> None:
        """Send every kept message on ``ws``, oldest first."""
        # Remove a message only once it is sent: if the link dies here, the rest waits for the next one.
        while self._messages:
            await ws.send(self._messages[0])
            self._messages.popleft()
