"""Fault scripts that measure what each server variant does, for notebook 02 and its benchmark.

Each function starts what it needs in a private :class:`~wslab.lab.Lab`,
runs real clients over real sockets on 127.0.0.1, and closes everything
before it returns, even when cancelled. Nothing prints; results are
dataclasses a notebook cell turns into a table or a plot.

- :func:`survival`: each failure mode against one variant; is the session
  removed from the map, and how fast?
- :func:`map_size`: the size of the session map over time under a fault script.
- :func:`detection_times`: fault-to-removal time of a vanished peer, per
  ``(ping_interval, ping_timeout)``.
- :func:`broadcast_latency`: healthy clients' latency and the bytes the
  server holds, while some clients have stopped reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..faults.failures import FAILURE_MODES, Victim, connect_victim, inflict
from ..faults.proxy import FaultProxy, start_proxy
from ..runtime.errors import WaitTimeout
from ..runtime.lab import Lab, LabServer
from ..runtime.timeline import Timeline
from ..runtime.timing import POLL, wait_until
from ..servers import ServerApp, make_app, start_app, unstamp

__all__ = [
    "Removal",
    "LatencyRun",
    "start_variant",
    "survival",
    "map_size",
    "detection_times",
    "broadcast_latency",
    "held_bytes",
    "blocked_send_removal",
    "percentile",
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


async def start_variant(
    lab: Lab, app: ServerApp, *, name: str, proxy: bool = True, sndbuf: int | None = None, **serve_options: Any
) -> tuple[LabServer, FaultProxy | None]:
    """Serve ``app`` (:func:`~wslab.servers.start_app`) and put a fault proxy in front.

    ``sndbuf`` caps the kernel send buffer of each accepted socket, so a client
    that stops reading fills it in a fraction of a second instead of after
    megabytes (loopback grows it to 4 MiB).
    """
    if sndbuf is not None:
        inner = app.handler

        async def handler(ws: ServerConnection) -> None:
            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            await inner(ws)

        server = await lab.serve(handler, name=name, **{**app.serve_options, **serve_options})
    else:
        server = await start_app(lab, app, name=name, **serve_options)
    front = await start_proxy(lab, server, name=f"{name}-proxy") if proxy else None
    return server, front


def _holds(app: ServerApp, ws: ServerConnection) -> bool:
    return ws in app.sessions.values()


async def _removed_after(app: ServerApp, ws: ServerConnection, since: float, timeline: Timeline,
                         deadline: float) -> float | None:
    """Seconds from ``since`` (timeline time) until ``ws`` left ``app.sessions``; None if not within ``deadline``."""
    try:
        await wait_until(lambda: not _holds(app, ws), deadline, "the session's removal")
    except WaitTimeout:
        return None
    return timeline.now() - since


# -- survival ---------------------------------------------------------------------------------


@dataclass
class Removal:
    """How long a server held a dead client's session (None: still held at the deadline)."""

    variant: str
    mode: str
    removed_after: float | None
    bound: float  # seconds the session may stay, for this mode

    @property
    def survived(self) -> bool:
        return self.removed_after is not None and self.removed_after <= self.bound


async def survival(
    variant: str,
    *,
    modes: Iterable[str] = FAILURE_MODES,
    bounds: dict[str, float],
    timeline: Timeline | None = None,
    label: str | None = None,
    broadcast_every: float = 0.1,
    **options: Any,
) -> list[Removal]:
    """Let one client die by each of ``modes`` (at the same time), while the server broadcasts.

    ``bounds[mode]`` is how long the session may stay in the map; the
    function waits at most ``max(bounds) + 0.5`` seconds.
    """
    label = label or variant
    async with Lab(timeline if timeline is not None else Timeline()) as lab:
        app = make_app(variant, lab.timeline, label, **options)
        server, proxy = await start_variant(lab, app, name=label)
        lab.spawn(app.broadcast_forever(broadcast_every, b"tick"), name=f"{label}-broadcast")
        victims = [
            await connect_victim(lab, server, mode, proxy=proxy, name=f"{label}-{mode}", deadline=10.0) for mode in modes
        ]
        await asyncio.sleep(0.1)
        wait = max(bounds.values()) + 0.5

        async def one(victim: Victim) -> Removal:
            await inflict(lab, victim)
            after = await _removed_after(app, victim.server_ws, victim.fault_at, lab.timeline, wait)
            return Removal(variant, victim.mode, after, bounds[victim.mode])

        removals = list(await asyncio.gather(*(one(v) for v in victims)))
        server.abort_connections()
        return removals


# -- session map over time -----------------------------------------------------------------------


async def map_size(
    variant: str,
    *,
    waves: int = 3,
    modes: Iterable[str] = FAILURE_MODES,
    gap: float = 0.6,
    sample_every: float = 0.02,
    timeline: Timeline | None = None,
    label: str | None = None,
    **options: Any,
) -> list[tuple[float, int]]:
    """The fault script: ``waves`` times, one client per mode joins, then all die together.

    Returns ``(seconds since start, sessions in the map)`` samples, taken
    every ``sample_every`` seconds until ``gap`` seconds after the last wave.
    """
    label = label or variant
    modes = list(modes)
    samples: list[tuple[float, int]] = []
    async with Lab(timeline if timeline is not None else Timeline()) as lab:
        app = make_app(variant, lab.timeline, label, **options)
        server, proxy = await start_variant(lab, app, name=label)
        lab.spawn(app.broadcast_forever(0.1, b"tick"), name=f"{label}-broadcast")
        start = lab.timeline.now()

        async def sample() -> None:
            while True:
                samples.append((lab.timeline.now() - start, len(app.sessions)))
                await asyncio.sleep(sample_every)

        lab.spawn(sample(), name=f"{label}-sampler")
        for wave in range(waves):
            victims = [
                await connect_victim(lab, server, mode, proxy=proxy, name=f"{label}-w{wave}-{mode}", deadline=10.0) for mode in modes
            ]
            await asyncio.sleep(0.2)
            await asyncio.gather(*(inflict(lab, v) for v in victims))
            await asyncio.sleep(gap)
        server.abort_connections()
    return samples


# -- detection time against ping settings ----------------------------------------------------------


async def detection_times(
    settings: Iterable[tuple[float, float]],
    *,
    repeats: int = 5,
    seed: int = 2,
    slack: float = 1.0,
    timeline: Timeline | None = None,
) -> list[tuple[float, float, float | None]]:
    """Fault-to-removal time of a vanished peer under :class:`~wslab.servers.FixedServer`'s keepalive.

    For every ``(ping_interval, ping_timeout)`` setting, ``repeats`` clients
    vanish at a random moment of the ping cycle (seeded). All settings run
    at the same time. Returns ``(ping_interval, ping_timeout, seconds)``
    rows; seconds is None if the session was still held after
    ``ping_interval + ping_timeout + slack``.
    """
    rng = random.Random(seed)
    settings = list(settings)
    async with Lab(timeline if timeline is not None else Timeline()) as lab:

        async def one_setting(index: int, interval: float, timeout: float) -> list[tuple[float, float, float | None]]:
            label = f"fixed-{index}"
            app = make_app("keepalive", lab.timeline, label, ping_interval=interval, ping_timeout=timeout)
            server, proxy = await start_variant(lab, app, name=label)
            victims = [
                await connect_victim(lab, server, "vanished", proxy=proxy, name=f"{label}-v{r}", deadline=10.0)
                for r in range(repeats)
            ]
            phases = [rng.uniform(0, interval) for _ in victims]

            async def one(victim: Victim, phase: float) -> tuple[float, float, float | None]:
                await asyncio.sleep(phase)
                await inflict(lab, victim)
                after = await _removed_after(app, victim.server_ws, victim.fault_at, lab.timeline, interval + timeout + slack)
                return interval, timeout, after

            rows = list(await asyncio.gather(*(one(v, p) for v, p in zip(victims, phases))))
            server.abort_connections()
            return rows

        results = await asyncio.gather(*(one_setting(i, pi, pt) for i, (pi, pt) in enumerate(settings)))
    return [row for rows in results for row in rows]


# -- latency and memory with stalled clients ---------------------------------------------------


@dataclass
class LatencyRun:
    """Healthy clients' latency and the server's buffered bytes while ``stalled`` clients stopped reading."""

    variant: str
    clients: int
    stalled: int
    latencies: list[float] = field(repr=False)  # seconds, intended send time to receipt; late = censored
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


def held_bytes(app: Any, ports: set[int] | None = None) -> int:
    """Bytes a server holds for its clients (those whose port is in ``ports``, or all).

    That is each connection's write buffer, plus what waits in the server's
    own outbox for it, if it has one. (The kernel's socket buffers hold more,
    outside the process.)
    """
    sessions = app.sessions.items() if isinstance(app.sessions, dict) else enumerate(app.sessions)
    outboxes = getattr(app, "outboxes", {})
    held = 0
    for session_id, ws in list(sessions):
        if ports is not None and ws.remote_address[1] not in ports:
            continue
        if not ws.transport.is_closing():
            held += ws.transport.get_write_buffer_size()
        if session_id in outboxes:
            held += outboxes[session_id].bytes
    return held


async def broadcast_latency(
    app: Any,
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
    """Broadcast a stamped message every ``interval`` s to ``clients`` clients, ``stalled`` of which never read.

    Latency is measured from each message's *scheduled* time (start +
    seq x interval), so a broadcast loop that is stuck delays every later
    message too; a message not received by the end counts as ``end -
    scheduled`` (a lower bound). Kernel buffers are kept small (``sndbuf``
    on the server's sockets, ``rcvbuf`` on stalled clients) so that
    stalled clients push back within a second. Healthy clients get ``tail``
    more seconds to receive the last messages.
    """
    variant = variant or getattr(app, "name", type(app).__name__)
    rng = random.Random(seed)
    payload = rng.randbytes(payload_size)
    loop = asyncio.get_running_loop()
    received: list[list[tuple[int, float]]] = []
    held: list[tuple[float, int]] = []
    async with Lab(app.timeline) as lab:
        server, _ = await start_variant(lab, app, name=f"{variant}-server", proxy=False, sndbuf=sndbuf, compression=None)
        order = list(range(clients))
        rng.shuffle(order)
        stalled_ids = set(order[:stalled])
        conns: list[ClientConnection] = list(await asyncio.gather(*(
            lab.connect(server.url, name=f"{variant}-client-{i}", compression=None, max_size=None)
            for i in range(clients)
        )))
        while len(app.sessions) < clients:  # every handler has registered its session
            await asyncio.sleep(POLL)
        before = len(app.sessions)

        async def listen(ws: ClientConnection, log: list[tuple[int, float]]) -> None:
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    log.append((unstamp(message)[0], loop.time()))

        stalled_ports = {conns[i].local_address[1] for i in stalled_ids}
        for i, ws in enumerate(conns):
            if i in stalled_ids:
                ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                ws.transport.pause_reading()  # this client's application stopped reading
            else:
                received.append([])
                lab.spawn(listen(ws, received[-1]), name=f"{variant}-listen-{i}")

        start = loop.time()
        count = int(duration / interval)

        async def ticker() -> None:
            for seq in range(count):
                await asyncio.sleep(max(0.0, start + seq * interval - loop.time()))
                await app.broadcast(b"%d 0 " % seq + payload)

        async def sample() -> None:
            while True:
                held.append((loop.time() - start, held_bytes(app, stalled_ports)))
                await asyncio.sleep(0.05)

        lab.spawn(sample(), name=f"{variant}-sampler")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ticker(), duration + tail)  # a blocked loop is cut off here
        end = start + duration + tail
        await asyncio.sleep(max(0.0, end - loop.time()))
        held.append((loop.time() - start, held_bytes(app, stalled_ports)))
        removed = before - len(app.sessions)
        still = {ws.remote_address[1] for ws in (app.sessions.values() if isinstance(app.sessions, dict) else app.sessions)}
        removed_stalled = len(stalled_ports - still)
        for ws in conns:  # the clients are instruments: end them now, no closing handshake
            ws.transport.abort()

    latencies = []
    for log in received:
        got = dict(log)
        for seq in range(count):
            due = start + seq * interval
            latencies.append(got[seq] - due if seq in got else end - due)
    delivered = sum(len(log) for log in received) / max(1, len(received) * count)
    return LatencyRun(variant, clients, stalled, latencies, delivered, held, removed, removed_stalled)


# -- a blocked send -------------------------------------------------------------------------------


async def blocked_send_removal(
    app: Any, *, size: int = 4 * 1024 * 1024, deadline: float = 5.0, **serve_options: Any
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
        ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        ws.transport.pause_reading()
        loop = asyncio.get_running_loop()
        end = loop.time() + 2.0
        while not app.sessions and loop.time() < end:
            await asyncio.sleep(POLL)
        [server_ws] = app.sessions.values()
        start = lab.timeline.now()
        broadcast = asyncio.ensure_future(app.broadcast(payload))
        try:
            return await _removed_after(app, server_ws, start, lab.timeline, deadline)
        finally:
            broadcast.cancel()
            with contextlib.suppress(BaseException):
                await broadcast
            ws.transport.abort()
