"""A loopback TCP relay that breaks connections on command.

Put it between a client and a server, then switch a fault on, for one
connection or for all of them, while they are open::

    proxy = await FaultProxy.start(upstream_port=server.port)
    ws = await connect(proxy.url)
    await proxy.set_fault("stall")    # the client has vanished, no FIN, no RST

The faults are real TCP events, modelled on Toxiproxy's toxics but
deterministic: nothing is random, every fault is recorded on the timeline.

============  ==============================================================
pass          relay bytes as they come (with TCP flow control end to end)
latency       delay every chunk by a fixed ``delay`` seconds, order kept
stall         stop reading in both directions, keep both sockets open: the
              peer vanished without a FIN. The far side's writes are
              accepted until the kernel buffers fill, then they block.
reset         close both sides with SO_LINGER 0: each side gets an RST
close         close both sides cleanly: each side gets a FIN
refuse        close the listening socket: new connections are refused.
              Connections already open are left alone; ``pass`` listens again.
idle-timeout  close both sides cleanly (a FIN each) once no byte went through,
              either way, for ``timeout`` seconds: what nginx does at its
              ``proxy_read_timeout``, an AWS load balancer at its idle
              timeout. Every byte starts the timer again; so does switching
              the fault on (a connection idle before that gets a full timeout).
============  ==============================================================
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..runtime.errors import LabError, bind_error
from ..runtime.lab import host_port
from ..runtime.timeline import Timeline
from .relay import FAULTS, STATES, Fault, ProxyConnection, Side, check_fault

if TYPE_CHECKING:
    from ..runtime.lab import Lab

__all__ = ["Fault", "FAULTS", "FaultProxy", "ProxyConnection", "UpstreamUnreachable", "start_proxy"]


class UpstreamUnreachable(ConnectionError):
    """The proxy could not reach its upstream server."""


class FaultProxy:
    """A TCP relay from ``127.0.0.1:port`` to an upstream server, with switchable faults.

    Use :meth:`start` to create one. Attributes worth reading:

    - ``url``: ``ws://127.0.0.1:PORT``, for a WebSocket client;
    - ``connections``: the open :class:`ProxyConnection` objects, with byte counts;
    - ``bytes_up`` / ``bytes_down``: totals over all connections ever relayed.
    """

    close_rank = 1  # the lab closes proxies before clients: a client behind a stall would wait otherwise

    def __init__(self, upstream_host: str, upstream_port: int, *, name: str, timeline: Timeline | None) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.name = name
        self.timeline = timeline if timeline is not None else Timeline()
        self.host = "127.0.0.1"
        self.port = 0
        self.fault: Fault = Fault.PASS  # the state new connections start in
        self.refusing = False  # the listener is closed: connects are refused until "pass"
        self.delay = 0.0
        self.idle_timeout = 0.0  # seconds, while the fault is idle-timeout
        self.connections: list[ProxyConnection] = []
        self._closed_bytes = [0, 0]
        self._listener: asyncio.Server | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._count = 0

    @classmethod
    async def start(
        cls,
        upstream_port: int,
        *,
        upstream_host: str = "127.0.0.1",
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "proxy",
        timeline: Timeline | None = None,
    ) -> FaultProxy:
        """Listen on ``host:port`` (0: any free port) and relay to the upstream.

        Raises:
            UpstreamUnreachable: nothing accepts connections at the upstream address.
            OSError: the listening address is taken (see :func:`wslab.runtime.errors.bind_error`).
        """
        proxy = cls(upstream_host, upstream_port, name=name, timeline=timeline)
        await proxy._probe_upstream()
        proxy.host = host
        proxy.port = port
        await proxy._listen()
        return proxy

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def bytes_up(self) -> int:
        return self._closed_bytes[0] + sum(c.bytes_up for c in self.connections)

    @property
    def bytes_down(self) -> int:
        return self._closed_bytes[1] + sum(c.bytes_down for c in self.connections)

    async def _probe_upstream(self) -> None:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.upstream_host, self.upstream_port), timeout=2
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise UpstreamUnreachable(
                f"upstream {self.upstream_host}:{self.upstream_port} is not accepting connections "
                f"({type(exc).__name__}: {exc}); start the server first"
            ) from None
        writer.close()

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(self._accept_protocol, self.host, self.port)
        self.port = self._listener.sockets[0].getsockname()[1]

    def _accept_protocol(self) -> Side:
        # Called for each accepted client socket. The upstream connection is
        # made right away; until it is up, the client socket is not read.
        self._count += 1
        conn = ProxyConnection(self, f"p{self._count}", delay=self.delay)
        task = asyncio.get_running_loop().create_task(self._connect_upstream(conn))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return conn.client

    async def _connect_upstream(self, conn: ProxyConnection) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: conn.server, self.upstream_host, self.upstream_port)
        except OSError as exc:
            self.timeline.record(self.name, "upstream-error", conn=conn.label, detail=str(exc))
            if conn.client.transport:
                conn.client.transport.close()
            return
        self.connections.append(conn)
        self.timeline.record(self.name, "open", conn=conn.label)
        if conn.client.transport is not None:
            conn.client.transport.resume_reading()
        # Apply the proxy's fault as it is now: set_fault() may have run while the upstream
        # connection was being made, and this connection wasn't in self.connections yet.
        conn.fault, conn.delay = Fault.PASS, 0.0
        if self.fault != Fault.PASS:
            conn.apply(self.fault, self.delay, self.idle_timeout)

    def _connection_closed(self, conn: ProxyConnection, side: Side, exc: Exception | None) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
            self._closed_bytes[0] += conn.bytes_up
            self._closed_bytes[1] += conn.bytes_down
        self.timeline.record(
            self.name, "closed", conn=conn.label,
            detail=f"bytes up={conn.bytes_up} down={conn.bytes_down}",
            bytes_up=conn.bytes_up, bytes_down=conn.bytes_down,
        )

    def connection(self, label: str) -> ProxyConnection:
        for conn in self.connections:
            if conn.label == label:
                return conn
        raise KeyError(f"no open proxy connection {label!r}; open ones: {[c.label for c in self.connections]}")

    async def set_fault(
        self, fault: str, *, delay: float = 0.0, timeout: float = 0.0, conn: str | ProxyConnection | None = None
    ) -> None:
        """Switch a fault on, for one connection (``conn``) or for all, now and future.

        ``stall``, ``latency`` (with a ``delay``) and ``idle-timeout`` (with a
        ``timeout``) are states: they last, for new connections too, until
        another state replaces them. ``reset`` and ``close`` are events: they
        end the connections they hit and change nothing else. ``refuse``
        closes the listener; only ``pass`` opens it again (and ends the states).
        """
        fault = check_fault(fault)
        if fault == Fault.LATENCY and delay <= 0:
            raise ValueError("latency needs a positive delay in seconds, e.g. delay=0.2")
        if fault == Fault.IDLE_TIMEOUT and not timeout > 0:
            raise ValueError("idle-timeout needs a positive timeout in seconds, e.g. timeout=2")
        if conn is not None:
            target = conn if isinstance(conn, ProxyConnection) else self.connection(conn)
            target.apply(fault, delay, timeout)
            return
        if fault == Fault.REFUSE:
            await self._stop_listening()
            self.refusing = True
            self.timeline.record(self.name, "fault", detail=fault)
            return
        if fault == Fault.PASS and self.refusing:
            await self._listen()
            self.refusing = False
        if fault in STATES:
            self.fault, self.delay = fault, delay
            self.idle_timeout = timeout if fault == Fault.IDLE_TIMEOUT else 0.0
        if not self.connections:
            self.timeline.record(self.name, "fault", detail=fault)
        for c in list(self.connections):
            c.apply(fault, delay, timeout)

    async def _stop_listening(self) -> None:
        if self._listener is not None:
            self._listener.close()
            # Don't wait_closed(): on 3.12+ it waits for relayed connections too.
            self._listener = None
            await asyncio.sleep(0)

    async def close(self) -> None:
        """Stop listening and reset every relayed connection."""
        await self._stop_listening()
        for task in list(self._pending):
            task.cancel()
        for c in list(self.connections):
            for side in (c.client, c.server):
                if side.transport is not None:
                    side.transport.abort()
        self.connections.clear()
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        refusing = " refusing" if self.refusing else ""
        timeout = f" {self.idle_timeout:g} s" if self.fault == Fault.IDLE_TIMEOUT else ""
        return (
            f"<FaultProxy {self.name} {self.url} -> {self.upstream_host}:{self.upstream_port} "
            f"fault={self.fault}{timeout}{refusing} open={len(self.connections)}>"
        )


async def start_proxy(lab: Lab, upstream: Any, *, name: str, host: str = "127.0.0.1", port: int = 0) -> FaultProxy:
    """Start a :class:`FaultProxy` in front of ``upstream`` (a server, a proxy, a URL or a port), tracked by ``lab``.

    Starting under a name that is taken closes the old one first, so re-running a cell is safe.
    """
    await lab.close(name)
    up_host, up_port = host_port(upstream)
    try:
        proxy = await FaultProxy.start(up_port, upstream_host=up_host, host=host, port=port, name=name,
                                       timeline=lab.timeline)
    except UpstreamUnreachable as exc:
        raise LabError(str(exc)) from None
    except OSError as exc:
        raise bind_error(exc, host, port) from None
    return await lab.track(name, proxy)
