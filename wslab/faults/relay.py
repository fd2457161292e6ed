"""One relayed TCP connection: two sockets, bytes forwarded with flow control, and the faults it can suffer.

:class:`~wslab.faults.proxy.FaultProxy` accepts a client, opens a connection
to the upstream server, and joins the two in a :class:`ProxyConnection`.
Each socket is a :class:`Side`, an asyncio protocol that forwards what it
reads to the other side. :meth:`ProxyConnection.apply` switches a
:class:`Fault` on: the table of faults is in :mod:`wslab.faults.proxy`.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, cast

from ..runtime.timeline import EventKind

if TYPE_CHECKING:
    from .proxy import FaultProxy

__all__ = ["FAULTS", "STATES", "Fault", "ProxyConnection", "Side", "check_fault"]


class Fault(StrEnum):
    """The proxy's faults. States last until another state replaces them; events happen once."""

    PASS = "pass"  # state: relay bytes as they come
    LATENCY = "latency"  # state: delay every chunk
    STALL = "stall"  # state: stop reading both ways, keep the sockets open
    RESET = "reset"  # event: RST both sides
    CLOSE = "close"  # event: FIN both sides
    REFUSE = "refuse"  # state of the listener: new connections are refused
    IDLE_TIMEOUT = "idle-timeout"  # state: no byte either way for a timeout: FIN both sides, as nginx does


FAULTS = tuple(fault.value for fault in Fault)

# Faults that last; RESET and CLOSE are events: they end the connections they hit, and change nothing after.
STATES = (Fault.PASS, Fault.LATENCY, Fault.STALL, Fault.IDLE_TIMEOUT)


def check_fault(fault: str) -> Fault:
    """``fault`` as a :class:`Fault`, or a ValueError that lists the faults there are."""
    try:
        return Fault(fault)
    except ValueError:
        raise ValueError(f"unknown fault {fault!r}: choose one of {', '.join(FAULTS)}") from None


def _linger_zero(transport: asyncio.BaseTransport) -> None:
    # With SO_LINGER on and a zero timeout, close() discards unsent data and
    # sends RST instead of FIN. This is how Toxiproxy's reset_peer works too.
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class Side(asyncio.Protocol):
    """One socket of a relayed connection. It forwards what it reads to its peer side."""

    def __init__(self, conn: ProxyConnection, direction: str) -> None:
        self.conn = conn
        self.direction = direction  # "up": this side reads the client's bytes
        self.transport: asyncio.Transport | None = None
        self.peer: Side | None = None
        self.writing_paused = False
        self.eof_in = False  # the socket's peer sent a FIN
        self.eof_out = False  # we sent a FIN on this socket
        self.early: list[bytes] = []  # bytes for this side that arrived before its socket was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP connection's transport: it reads and writes (asyncio types it as the base class).
        self.transport = cast(asyncio.Transport, transport)
        if self.direction == "up":
            # The client's socket is not read until the upstream connection is up.
            self.transport.pause_reading()
        for data in self.early:  # see ProxyConnection._relay
            self.transport.write(data)
        self.early.clear()

    def data_received(self, data: bytes) -> None:
        self.conn._relay(self, data)

    def eof_received(self) -> bool:
        # Half-close: pass the FIN on, keep the other direction open.
        self.eof_in = True
        peer = self.peer
        if peer and peer.transport and not peer.transport.is_closing() and peer.transport.can_write_eof():
            self.conn._after_pending(peer, peer._write_eof)
        self._close_if_done()
        return True

    def _write_eof(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write_eof()
            self.eof_out = True
            self._close_if_done()

    def _close_if_done(self) -> None:
        # A FIN each way: nothing more can flow, so close the socket (else it leaks).
        if self.eof_in and self.eof_out and self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn._side_lost(self, exc)

    # Flow control: when our write buffer is full, stop reading from the peer,
    # so a slow reader slows down the writer at the far end, as TCP would.
    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.peer and self.peer.transport:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.peer and self.peer.transport and self.conn.fault != Fault.STALL:
            self.peer.transport.resume_reading()


@dataclass
class ProxyConnection:
    """One client connection relayed to the upstream server."""

    proxy: FaultProxy
    label: str
    fault: Fault = Fault.PASS
    delay: float = 0.0
    bytes_up: int = 0  # client -> server
    bytes_down: int = 0  # server -> client
    closed: bool = False
    idle_timeout: float = 0.0  # seconds without a byte, either way, before the idle-timeout fault closes it

    def __post_init__(self) -> None:
        self.client = Side(self, "up")
        self.server = Side(self, "down")
        self.client.peer, self.server.peer = self.server, self.client
        # Chunks held back by the latency fault, per side they will be written to.
        self._delayed: dict[str, deque[tuple[float, bytes | Callable[[], None]]]] = {"up": deque(), "down": deque()}
        self._flush_handles: dict[str, asyncio.TimerHandle | None] = {"up": None, "down": None}
        # The idle-timeout fault: when a byte last went through, either way, and the timer that checks.
        self.last_active = 0.0
        self._idle_from = 0.0  # when the fault was switched on: a connection idle before that gets a full timeout
        self._idle_handle: asyncio.TimerHandle | None = None

    # -- relaying -----------------------------------------------------------

    def _relay(self, source: Side, data: bytes) -> None:
        # Any byte, either way, restarts the idle timer, as in nginx. Only the time is noted here;
        # the timer itself is re-armed when it fires (check_idle), not once per chunk.
        self.last_active = time.monotonic()
        if source.direction == "up":
            self.bytes_up += len(data)
        else:
            self.bytes_down += len(data)
        target = source.peer
        assert target is not None
        if self.fault == Fault.LATENCY or self._delayed[target.direction]:
            due = asyncio.get_running_loop().time() + self.delay
            self._delayed[target.direction].append((due, data))
            self._schedule_flush(target)
        elif target.transport is None:
            # The upstream connection is not up yet. connection_made() paused the client's socket
            # until it is, but Python 3.11.0 to 3.11.3 (Debian 12's python3 is 3.11.2) ignore a
            # pause made there and read anyway (CPython gh-103607): keep the bytes, don't drop them.
            target.early.append(data)
        elif not target.transport.is_closing():
            target.transport.write(data)

    def _schedule_flush(self, target: Side) -> None:
        if self._flush_handles[target.direction] is None and self._delayed[target.direction]:
            due = self._delayed[target.direction][0][0]
            self._flush_handles[target.direction] = asyncio.get_running_loop().call_at(due, self._flush, target)

    def _flush(self, target: Side) -> None:
        self._flush_handles[target.direction] = None
        now = asyncio.get_running_loop().time()
        queue = self._delayed[target.direction]
        while queue and queue[0][0] <= now:
            _, data = queue.popleft()
            if callable(data):  # a deferred write_eof
                data()
            elif target.transport is not None and not target.transport.is_closing():
                target.transport.write(data)
        self._schedule_flush(target)

    def _after_pending(self, target: Side, action: Callable[[], None]) -> None:
        """Run ``action`` after delayed chunks for ``target``, so a FIN never overtakes data."""
        if self._delayed[target.direction]:
            self._delayed[target.direction].append((self._delayed[target.direction][-1][0], action))
        else:
            action()

    # -- faults -------------------------------------------------------------

    def apply(self, fault: str, delay: float = 0.0, timeout: float = 0.0) -> None:
        kind = check_fault(fault)
        if kind == Fault.REFUSE:
            raise ValueError("'refuse' applies to the proxy's listener, not to one connection")
        if kind == Fault.IDLE_TIMEOUT and not timeout > 0:
            raise ValueError("idle-timeout needs a timeout above 0 seconds, e.g. timeout=2")
        if self.closed:
            return
        previous, self.fault, self.delay = self.fault, kind, delay
        self._set_idle_timeout(timeout if kind == Fault.IDLE_TIMEOUT else 0.0)
        # Both sockets are connected by now: the proxy lists a connection once its upstream is up.
        sides = [(side, side.transport) for side in (self.client, self.server) if side.transport is not None]
        if kind == Fault.STALL:
            for _, transport in sides:
                transport.pause_reading()
        elif previous == Fault.STALL:
            for side, transport in sides:
                if side.peer is not None and not side.peer.writing_paused:
                    transport.resume_reading()
        if kind == Fault.RESET:
            for _, transport in sides:
                _linger_zero(transport)
                transport.abort()
        elif kind == Fault.CLOSE:
            for _, transport in sides:
                transport.close()
        detail = f"{kind} {timeout:g} s" if kind == Fault.IDLE_TIMEOUT else str(kind)
        self.proxy.timeline.record(self.proxy.name, "fault", conn=self.label, detail=detail, delay=delay,
                                   timeout=timeout)

    # -- the idle timeout -----------------------------------------------------

    def _set_idle_timeout(self, timeout: float) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        self.idle_timeout = timeout
        if timeout > 0:
            self._idle_from = time.monotonic()
            self._idle_handle = asyncio.get_running_loop().call_later(timeout, self.check_idle)

    def check_idle(self) -> None:
        """The idle timer fired. No byte either way for a whole timeout: FIN both sides. Else: wait for the rest.

        Every chunk relayed, either way, notes the time in ``last_active``
        (:meth:`_relay`); the timer is only re-armed here, when it fires, so
        a busy connection costs one timer per timeout, not one per chunk.
        """
        self._idle_handle = None
        if self.closed or self.fault != Fault.IDLE_TIMEOUT:
            return
        left = max(self.last_active, self._idle_from) + self.idle_timeout - time.monotonic()
        if left > 0.001:  # bytes went through since it was armed: wait the rest of the timeout
            self._idle_handle = asyncio.get_running_loop().call_later(left, self.check_idle)
            return
        self.proxy.timeline.record(self.proxy.name, EventKind.IDLE_TIMEOUT, conn=self.label,
                                   detail=f"no byte either way for {self.idle_timeout:g} s: FIN to both sides")
        # A FIN each way, like nginx when its proxy_read_timeout fires: the client sees the stream
        # end without a close frame (websockets: 1006, EOFError), and so does the server.
        for side in (self.client, self.server):
            if side.transport is not None and not side.transport.is_closing():
                side.transport.close()

    def _side_lost(self, side: Side, exc: Exception | None) -> None:
        # When one side goes, close the other (after any delayed bytes).
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        peer = side.peer
        if peer and peer.transport and not peer.transport.is_closing():
            self._after_pending(peer, peer.transport.close)
        if not self.closed and (peer is None or peer.transport is None or peer.transport.is_closing()):
            self.closed = True
            self.proxy._connection_closed(self, side, exc)
