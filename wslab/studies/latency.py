"""What clients that stop reading cost everyone else: notebook 02's latency and blocked-send experiments.

- :func:`broadcast_latency`: healthy clients' latency, and the bytes the server
  holds, while some clients have stopped reading. It runs in three steps:
  :func:`connect_audience` (setup), :func:`record_broadcasts` (run: raw
  observations only) and :func:`analyse_latency` (analysis: pure, no sockets).
- :func:`blocked_send_removal`: how long a server takes to drop a client
  whose send blocks at once.

Each function starts what it needs in a private :class:`~wslab.runtime.lab.Lab`
on the app's timeline, and closes everything before it returns. Nothing prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from ..runtime.lab import Lab
from ..runtime.server import LabServer
from ..runtime.timing import CLOSE_DEADLINE, abort_all, wait_until
from ..servers import FixedServer, Outbox, ServerApp, stamp, unstamp
from .removal import start_variant, time_to_removal

__all__ = [
    "Audience",
    "LatencyRecord",
    "LatencyRun",
    "analyse_latency",
    "blocked_send_removal",
    "broadcast_latency",
    "connect_audience",
    "held_by_port",
    "percentile",
    "record_broadcasts",
    "stop_reading",
]


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values``, interpolated between ranks; NaN if empty."""
    if not values:
        return float("nan")
    ranked = sorted(values)
    k = (len(ranked) - 1) * p / 100
    low = math.floor(k)
    high = min(low + 1, len(ranked) - 1)
    return ranked[low] + (ranked[high] - ranked[low]) * (k - low)


def stop_reading(ws: ClientConnection, rcvbuf: int) -> None:
    """Make ``ws``'s application stop reading, with a small kernel receive buffer so it fills fast."""
    ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    ws.transport.pause_reading()


def held_by_port(app: ServerApp) -> dict[int, int]:
    """Bytes ``app`` holds for each client, by the client's port.

    That is each connection's write buffer, plus what waits in the server's
    own outbox for it, if it has one (:class:`~wslab.servers.FixedServer`).
    The kernel's socket buffers hold more, outside the process.
    """
    outboxes: Mapping[int, Outbox] = app.outboxes if isinstance(app, FixedServer) else {}
    held = {}
    for session_id, ws in list(app.sessions.items()):
        port = ws.remote_address[1]
        held[port] = 0 if ws.transport.is_closing() else ws.transport.get_write_buffer_size()
        if session_id in outboxes:
            held[port] += outboxes[session_id].bytes
    return held


# -- setup ------------------------------------------------------------------------------------------


@dataclass
class Audience:
    """A served app and its clients: the healthy ones listen, the stalled ones never read."""

    server: LabServer
    healthy: list[ClientConnection]
    stalled: list[ClientConnection]


async def connect_audience(
    lab: Lab, app: ServerApp, *, variant: str, clients: int, stalled: int, sndbuf: int, rcvbuf: int, seed: int
) -> Audience:
    """Serve ``app`` and connect ``clients`` clients; ``stalled`` of them (picked with ``seed``) stop reading.

    Kernel buffers are kept small (``sndbuf`` on the server's sockets,
    ``rcvbuf`` on stalled clients) so that stalled clients push back within a second.
    """
    server, _ = await start_variant(lab, app, name=f"{variant}-server", proxy=False, sndbuf=sndbuf, compression=None)
    conns = await asyncio.gather(*(
        lab.connect(server.url, name=f"{variant}-client-{i}", compression=None, max_size=None)
        for i in range(clients)
    ))
    await wait_until(lambda: len(app.sessions) >= clients, 10.0, f"all {clients} clients' sessions registering")
    chosen = set(random.Random(seed).sample(range(clients), stalled))
    for i in chosen:
        stop_reading(conns[i], rcvbuf)
    return Audience(server, [ws for i, ws in enumerate(conns) if i not in chosen], [conns[i] for i in sorted(chosen)])


# -- run: record raw observations -------------------------------------------------------------------


@dataclass
class LatencyRecord:
    """What one run observed, unjudged. Times are the event loop's clock, in seconds.

    Message ``seq`` was scheduled for ``start + seq * interval``; the run ended
    at ``end``.
    """

    variant: str
    start: float
    interval: float
    count: int  # messages scheduled
    end: float
    received: list[list[tuple[int, float]]]  # per healthy client: (seq, when it arrived), by ``end``
    held: list[tuple[float, dict[int, int]]]  # samples: (when, {client port: bytes the server held for it})
    stalled_ports: frozenset[int]  # the stalled clients' ports
    sessions_before: int  # sessions in the map when the broadcasts began
    ports_after: frozenset[int]  # ports of the sessions still in the map at ``end``


async def record_broadcasts(
    lab: Lab, app: ServerApp, audience: Audience, *, variant: str, duration: float, interval: float,
    payload: bytes, tail: float, sample_every: float = 0.05,
) -> LatencyRecord:
    """Broadcast a numbered ``payload`` every ``interval`` s for ``duration`` s; record arrivals and bytes held.

    A broadcast loop that blocks is cut off ``tail`` seconds after the last
    scheduled message; healthy clients get until then to receive.
    """
    loop = asyncio.get_running_loop()
    logs: list[list[tuple[int, float]]] = [[] for _ in audience.healthy]

    async def listen(ws: ClientConnection, log: list[tuple[int, float]]) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                log.append((unstamp(message)[0], loop.time()))

    for i, (ws, log) in enumerate(zip(audience.healthy, logs, strict=True)):
        lab.spawn(listen(ws, log), name=f"{variant}-listen-{i}")
    held: list[tuple[float, dict[int, int]]] = []
    sessions_before = len(app.sessions)
    count = int(duration / interval)
    start = loop.time()
    end = start + duration + tail

    async def ticker() -> None:
        for seq in range(count):
            await asyncio.sleep(max(0.0, start + seq * interval - loop.time()))
            await app.broadcast(stamp(seq, payload))

    async def sample() -> None:
        while True:
            held.append((loop.time(), held_by_port(app)))
            await asyncio.sleep(sample_every)

    lab.spawn(sample(), name=f"{variant}-sampler")
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(ticker(), end - loop.time())  # a blocked loop is cut off here
    await asyncio.sleep(max(0.0, end - loop.time()))
    held.append((loop.time(), held_by_port(app)))
    return LatencyRecord(
        variant, start, interval, count, end,
        received=[list(log) for log in logs],  # a copy: what arrives after the end doesn't count
        held=held,
        stalled_ports=frozenset(ws.local_address[1] for ws in audience.stalled),
        sessions_before=sessions_before,
        ports_after=frozenset(ws.remote_address[1] for ws in app.sessions.values()),
    )


# -- analysis: pure -----------------------------------------------------------------------------------


@dataclass
class LatencyRun:
    """Healthy clients' latency and the server's buffered bytes while ``stalled`` clients stopped reading."""

    variant: str
    clients: int
    stalled: int
    latencies: list[float] = field(repr=False)  # seconds, scheduled send time to receipt; late = censored
    delivered: float  # fraction of the scheduled messages healthy clients received
    held: list[tuple[float, int]] = field(repr=False)  # (seconds, bytes held for the stalled clients)
    removed: int  # sessions the server removed during the run
    removed_stalled: int = 0  # of which stalled clients

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 99)

    @property
    def held_peak(self) -> int:
        return max((b for _, b in self.held), default=0)

    @property
    def held_end(self) -> int:
        return self.held[-1][1] if self.held else 0


def analyse_latency(record: LatencyRecord) -> LatencyRun:
    """Latencies, delivery and bytes held, from a run's raw observations. No I/O.

    Latency runs from each message's *scheduled* time, so a stuck broadcast
    loop delays every later message too. A message not received by the end
    counts as ``end - scheduled``: a lower bound (censored).
    """
    latencies = []
    for log in record.received:
        arrived = dict(log)
        for seq in range(record.count):
            due = record.start + seq * record.interval
            latencies.append(arrived.get(seq, record.end) - due)
    delivered = sum(len(log) for log in record.received) / max(1, len(record.received) * record.count)
    held = [(t - record.start, sum(b for port, b in sample.items() if port in record.stalled_ports))
            for t, sample in record.held]
    return LatencyRun(
        record.variant,
        clients=len(record.received) + len(record.stalled_ports),
        stalled=len(record.stalled_ports),
        latencies=latencies,
        delivered=delivered,
        held=held,
        removed=record.sessions_before - len(record.ports_after),
        removed_stalled=len(record.stalled_ports - record.ports_after),
    )


async def broadcast_latency(
    app: ServerApp,
    *,
    variant: str | None = None,
    clients: int = 100,
    stalled: int = 10,
    duration: float = 1.5,
    interval: float = 0.02,
    payload_size: int = 4096,
    sndbuf: int = 16 * 1024,
    rcvbuf: int = 16 * 1024,
    tail: float = 0.25,
    seed: int = 1,
) -> LatencyRun:
    """Broadcast a numbered message every ``interval`` s to ``clients`` clients, ``stalled`` of which never read.

    Latency is measured from each message's *scheduled* time (start +
    seq x interval), so a broadcast loop that is stuck delays every later
    message too; a message not received by the end counts as ``end -
    scheduled`` (a lower bound). Kernel buffers are kept small (``sndbuf``
    on the server's sockets, ``rcvbuf`` on stalled clients) so that
    stalled clients push back within a second. Healthy clients get ``tail``
    more seconds to receive the last messages.
    """
    variant = variant or app.name
    payload = random.Random(seed).randbytes(payload_size)
    async with Lab(app.timeline) as lab:
        audience = await connect_audience(lab, app, variant=variant, clients=clients, stalled=stalled,
                                          sndbuf=sndbuf, rcvbuf=rcvbuf, seed=seed)
        record = await record_broadcasts(lab, app, audience, variant=variant, duration=duration,
                                         interval=interval, payload=payload, tail=tail)
        abort_all(audience.healthy + audience.stalled)  # the clients are instruments: no closing handshake
    return analyse_latency(record)


# -- a blocked send -------------------------------------------------------------------------------


async def blocked_send_removal(
    app: ServerApp, *, size: int = 4 * 1024 * 1024, deadline: float = 5.0, **serve_options: Any
) -> float | None:
    """Seconds from a broadcast to the removal of a client whose send blocks at once.

    One client stops reading, then the server broadcasts one ``size``-byte
    message: more than its kernel buffers take, so the send blocks right
    away. Returns None if the session is still held after ``deadline``.
    ``serve_options`` go to ``lab.serve()``, e.g. websockets' ``ping_interval``.
    """
    payload = random.Random(0).randbytes(size)
    async with Lab(app.timeline) as lab:
        server, _ = await start_variant(
            lab, app, name="blocked-server", proxy=False, sndbuf=16 * 1024, compression=None, **serve_options
        )
        ws = await lab.connect(server.url, name="blocked-client", compression=None, max_size=None)
        stop_reading(ws, 16 * 1024)
        await wait_until(lambda: bool(app.sessions), 2.0, "the client's session registering")
        [server_ws] = app.sessions.values()
        start = lab.timeline.now()
        broadcast = asyncio.create_task(app.broadcast(payload))
        try:
            return await time_to_removal(app, server_ws, start, lab.timeline, deadline)
        finally:
            broadcast.cancel()
            await asyncio.wait([broadcast], timeout=CLOSE_DEADLINE)
            ws.transport.abort()
