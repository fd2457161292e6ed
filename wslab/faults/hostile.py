"""A hostile client on raw sockets: the bytes a well-behaved WebSocket library would never send.

A WebSocket library checks what it sends, so to see how a server treats bad
input you need a client that does not. :class:`RawClient` opens a TCP
connection and writes exactly what you tell it::

    raw = await RawClient.open(server.url)             # TCP only
    await raw.handshake()                              # a correct opening handshake, by hand
    await raw.send_frame(OPCODE_TEXT, b"\\xff\\xfe")      # text that is not UTF-8
    await raw.read_close()                             # (1007, 'invalid start byte at position 0')

Frames are built here, in a few lines (RFC 6455, section 5.2), not with
websockets' ``Frame``, which refuses to build a reserved opcode. Each
method has a deadline; the connection is the caller's to :meth:`~RawClient.close`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import urllib.parse

from ..runtime.errors import LabError
from ..runtime.timing import scaled

__all__ = ["OPCODE_BINARY", "OPCODE_CLOSE", "OPCODE_TEXT", "RawClient", "build_frame", "handshake_request"]

OPCODE_TEXT, OPCODE_BINARY, OPCODE_CLOSE = 0x1, 0x2, 0x8  # 0x3-0x7 and 0xB-0xF are reserved


def build_frame(opcode: int, payload: bytes, *, mask: bool = True, fin: bool = True, rsv: int = 0) -> bytes:
    """One WebSocket frame. A client must mask its frames (``mask=True``); ``rsv`` sets the three reserved bits."""
    first = (0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, (0x80 if mask else 0) | length)
    elif length < 2**16:
        header = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, length)
    else:
        header = struct.pack("!BBQ", first, (0x80 if mask else 0) | 127, length)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def handshake_request(url: str, *, extra_headers: dict[str, str] | None = None) -> bytes:
    """The bytes of a valid opening handshake for ``url`` (``ws://host:port/path``)."""
    parts = urllib.parse.urlsplit(url)
    lines = [
        f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in (extra_headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawClient:
    """A TCP connection to a WebSocket server that sends whatever it is told. Make one with :meth:`open`."""

    def __init__(self, url: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.url = url
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.status: int | None = None  # the handshake's HTTP status, once read

    @classmethod
    async def open(cls, url: str, *, local_host: str | None = None, timeout: float = 5.0) -> RawClient:
        """Connect to ``url``'s host and port (from ``local_host``, e.g. 127.0.0.2, if given). TCP only."""
        parts = urllib.parse.urlsplit(url)
        local = (local_host, 0) if local_host else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(parts.hostname, parts.port, local_addr=local), scaled(timeout))
        except OSError as exc:
            raise LabError(f"cannot connect to {url}{f' from {local_host}' if local_host else ''}: {exc}") from None
        return cls(url, reader, writer, scaled(timeout))

    async def send(self, data: bytes) -> None:
        """Write raw bytes."""
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), self.timeout)

    async def read_response(self) -> tuple[int | None, bytes]:
        """The server's HTTP response head: ``(status, head)``; ``(None, b"")`` if it closed without one."""
        try:
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), self.timeout)
        except asyncio.IncompleteReadError as exc:
            return None, exc.partial
        except ConnectionResetError:
            return None, b""
        self.status = int(head.split(b" ", 2)[1])
        return self.status, head

    async def handshake(self, *, extra_headers: dict[str, str] | None = None) -> int | None:
        """Send a valid opening handshake and read the answer: its HTTP status (101 on success)."""
        await self.send(handshake_request(self.url, extra_headers=extra_headers))
        status, _ = await self.read_response()
        return status

    async def send_frame(self, opcode: int, payload: bytes, *, mask: bool = True, rsv: int = 0) -> None:
        """Send one frame (see :func:`build_frame`)."""
        await self.send(build_frame(opcode, payload, mask=mask, rsv=rsv))

    async def read_close(self) -> tuple[int, str] | None:
        """Skip data frames until the server's close frame; its ``(code, reason)``. None: TCP closed without one."""
        try:
            while True:
                first, second = await asyncio.wait_for(self.reader.readexactly(2), self.timeout)
                length = second & 0x7F
                if length == 126:
                    (length,) = struct.unpack("!H", await self.reader.readexactly(2))
                elif length == 127:
                    (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
                payload = await asyncio.wait_for(self.reader.readexactly(length), self.timeout)
                if first & 0xF == OPCODE_CLOSE:
                    if len(payload) < 2:
                        return 1005, ""
                    return struct.unpack("!H", payload[:2])[0], payload[2:].decode(errors="replace")
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None

    async def at_eof(self) -> bool:
        """Whether the server closed the connection (reads until EOF or the deadline; True on EOF or reset)."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), self.timeout):
                pass
        except ConnectionResetError:
            return True
        except asyncio.TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Close the TCP connection (abort: no need to be polite here)."""
        self.writer.transport.abort()

    def __repr__(self) -> str:
        return f"<RawClient {self.url} status={self.status}>"
