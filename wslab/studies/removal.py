"""How long a dead client's session stays in the map: notebook 02's removal experiments.

Each function starts what it needs in a private :class:`~wslab.runtime.lab.Lab`,
lets real clients die for real (:mod:`wslab.faults.failures`) on 127.0.0.1,
and closes everything before it returns, even when cancelled. Nothing prints;
results are dataclasses a notebook cell turns into a table or a plot.

- :func:`survival`: each failure mode against one variant; is the session
  removed from the map, and how fast?
- :func:`map_size`: the size of the session map over time under a fault script.
- :func:`detection_times`: fault-to-removal time of a vanished peer, per
  ``(ping_interval, ping_timeout)``.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection

from ..faults.failures import FAILURE_MODES, Victim, connect_victim, inflict
from ..faults.proxy import FaultProxy, start_proxy
from ..runtime.errors import WaitTimeout
from ..runtime.lab import Lab
from ..runtime.server import LabServer
from ..runtime.timeline import Timeline
from ..runtime.timing import wait_until
from ..servers import ServerApp, make_app, start_app

__all__ = ["DetectionRow", "Removal", "start_variant", "time_to_removal", "survival", "map_size", "detection_times"]


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


async def time_to_removal(
    app: ServerApp, ws: ServerConnection, since: float, timeline: Timeline, deadline: float
) -> float | None:
    """Seconds from ``since`` (timeline time) until ``ws`` left ``app.sessions``; None if not within ``deadline``.

    ``deadline`` is scaled by ``WSLAB_TIMEOUT_FACTOR``, like every wait.
    """
    try:
        await wait_until(lambda: ws not in app.sessions.values(), deadline, "the session's removal")
    except WaitTimeout:
        return None
    return timeline.now() - since


async def _removed_after_fault(app: ServerApp, victim: Victim, timeline: Timeline, deadline: float) -> float | None:
    assert victim.fault_at is not None, "inflict() the failure first"
    return await time_to_removal(app, victim.server_ws, victim.fault_at, timeline, deadline)


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
        # max_queue=None: nobody reads these clients' messages, and after 16 unread ticks websockets
        # would stop reading their socket, so a clean close() would wait close_timeout for the reply.
        victims = [
            await connect_victim(lab, server, mode, proxy=proxy, name=f"{label}-{mode}", deadline=10.0,
                                 max_queue=None)
            for mode in modes
        ]
        await asyncio.sleep(0.1)
        wait = max(bounds.values()) + 0.5

        async def one(victim: Victim) -> Removal:
            await inflict(lab, victim)
            after = await _removed_after_fault(app, victim, lab.timeline, wait)
            return Removal(variant, victim.mode, after, bounds[victim.mode])

        removals = list(await asyncio.gather(*(one(v) for v in victims)))
        server.abort_connections()  # the victims are dead: no closing handshakes to wait for
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
                await connect_victim(lab, server, mode, proxy=proxy, name=f"{label}-w{wave}-{mode}", deadline=10.0,
                                     max_queue=None)  # unread ticks must not pause them: see survival()
                for mode in modes
            ]
            await asyncio.sleep(0.2)
            await asyncio.gather(*(inflict(lab, v) for v in victims))
            await asyncio.sleep(gap)
        server.abort_connections()
    return samples


# -- detection time against ping settings ----------------------------------------------------------

# (ping_interval, ping_timeout, seconds from the fault to the removal, or None: still held)
DetectionRow = tuple[float, float, float | None]


async def detection_times(
    settings: Iterable[tuple[float, float]],
    *,
    repeats: int = 5,
    seed: int = 2,
    slack: float = 1.0,
    timeline: Timeline | None = None,
) -> list[DetectionRow]:
    """Fault-to-removal time of a vanished peer under :class:`~wslab.servers.FixedServer`'s keepalive.

    For every ``(ping_interval, ping_timeout)`` setting, ``repeats`` clients
    vanish: the last one to connect right away, at the start of its ping
    cycle (the worst case, ``ping_interval + ping_timeout``), the others at a
    random moment of the cycle (seeded). All settings run at the same time.
    Returns ``(ping_interval, ping_timeout, seconds)`` rows, each setting's
    worst case last; seconds is None if the session was still held after
    ``ping_interval + ping_timeout + slack``.
    """
    rng = random.Random(seed)
    settings = list(settings)
    async with Lab(timeline if timeline is not None else Timeline()) as lab:

        async def one_setting(index: int, interval: float, timeout: float) -> list[DetectionRow]:
            label = f"fixed-{index}"
            app = make_app("keepalive", lab.timeline, label, ping_interval=interval, ping_timeout=timeout)
            server, proxy = await start_variant(lab, app, name=label)
            victims = [
                await connect_victim(lab, server, "vanished", proxy=proxy, name=f"{label}-v{r}", deadline=10.0)
                for r in range(repeats)
            ]
            # The last client connected last: its cycle has only just begun, so vanishing now is the
            # worst case. The others vanish at random moments of theirs.
            phases = [rng.uniform(0, interval) for _ in victims[:-1]] + [0.0]

            async def one(victim: Victim, phase: float) -> DetectionRow:
                await asyncio.sleep(phase)
                await inflict(lab, victim)
                after = await _removed_after_fault(app, victim, lab.timeline, interval + timeout + slack)
                return interval, timeout, after

            rows = list(await asyncio.gather(*(one(v, p) for v, p in zip(victims, phases, strict=True))))
            server.abort_connections()
            return rows

        results = await asyncio.gather(*(one_setting(i, pi, pt) for i, (pi, pt) in enumerate(settings)))
    return [row for rows in results for row in rows]
