"""A thundering herd, for real: N websockets clients on 127.0.0.1 lose their server and reconnect.

:func:`run_herd` starts a lab server, connects ``n`` clients, restarts the
server (like :meth:`~wslab.lab.LabServer.restart`: the listening socket really
closes, connection attempts are refused until it listens again on the same port), and records
every reconnection attempt. Each client waits ``Backoff(**policy).next()``
before each attempt, like the simulation in :mod:`wslab.simulate`; the server
admits at most the capacity of an :class:`~wslab.simulate.AcceptLimit` and
answers 503 (try again later) beyond it, like the simulation's server.

Server and clients share one event loop (the notebook's), so nothing here
prints or blocks; everything has a deadline, and the clients are closed
before :func:`run_herd` returns. Clients connect with ``proxy=None``: by
default websockets reads the proxy environment variables on every connect,
which was a third of the loop's time in a 1,000-client herd.
"""

from __future__ import annotations

import asyncio
import math
import resource
import time
from http import HTTPStatus

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import InvalidHandshake

from ..clients.backoff import Backoff
from ..runtime.errors import LabError
from ..runtime.lab import Lab
from ..runtime.timing import close_within
from .simulate import AcceptLimit, HerdResult, client_seed

__all__ = ["run_herd", "herd_member", "raise_fd_limit"]


def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft limit on open files to ``needed`` if the hard limit allows; return the limit.

    Every client and every server-side connection is a file descriptor: a herd
    of 1,000 on one machine needs more than 2,000, and many systems start at 1,024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise LabError(f"a herd this size needs {needed} open files, the limit is {soft}: use fewer clients")
    return soft


async def herd_member(
    i: int, ws: ClientConnection, url: str, backoff: Backoff, result: HerdResult,
    t0: list[float], open_timeout: float, conns: list,
) -> None:
    """One herd member: wait for the connection to drop, then retry with backoff until connected."""
    await ws.wait_closed()
    result.lost[i] = time.monotonic() - t0[0]
    while True:
        await asyncio.sleep(backoff.next())
        started = time.monotonic()
        try:
            ws = await connect(url, open_timeout=open_timeout, ping_interval=None, proxy=None, compression=None)
        except (OSError, asyncio.TimeoutError, InvalidHandshake):
            # refused (server down), 503 (server busy) or too slow: all mean "try again later"
            result.attempt_times.append(started - t0[0])
            result.attempt_ok.append(0)
            result.durations.append(time.monotonic() - started)
            continue
        result.attempt_times.append(started - t0[0])
        result.attempt_ok.append(1)
        result.durations.append(time.monotonic() - started)
        result.reconnected[i] = time.monotonic() - t0[0]
        conns[i] = ws
        backoff.reset()
        return


async def run_herd(
    lab: Lab,
    n: int,
    policy: dict,
    *,
    name: str = "herd",
    downtime: float = 1.0,
    accept_rate: float = 200.0,
    burst: float | None = None,
    open_timeout: float = 2.0,
    deadline: float = 20.0,
    seed: int = 0,
    label: str = "",
) -> HerdResult:
    """Connect ``n`` real clients, restart the server, and record how the herd reconnects.

    Args:
        lab: The lab that runs the server (as ``name``).
        n: Clients.
        policy: Keyword arguments for :class:`~wslab.backoff.Backoff`. Client ``i``
            draws from its own generator, seeded with ``client_seed(seed, i)``.
        downtime: Seconds between closing the listening socket and listening again.
        accept_rate: The server's capacity in connections per second
            (:class:`~wslab.simulate.AcceptLimit`); more get HTTP 503.
        burst: The capacity's burst size (default: 100 ms worth).
        open_timeout: Each attempt's deadline for the opening handshake.
        deadline: Give up waiting for the herd after this many seconds from the
            outage (clients still out stay ``nan`` in the result).

    Returns:
        A :class:`~wslab.simulate.HerdResult`, times since the restart began.
    """
    raise_fd_limit(2 * n + 256)
    limit = AcceptLimit(accept_rate, burst)
    limiting = False  # no limit while the herd first connects

    def admit(connection: ServerConnection, request):
        if not limiting:
            return None
        if not limit.admit():
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "busy, try again later\n")
        result.accepted_at.append(time.monotonic() - t0[0])
        return None

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    result = HerdResult(n=n, back_at=math.nan, reconnected=[math.nan] * n, lost=[math.nan] * n, label=label)
    t0 = [math.nan]  # when the outage began, on the monotonic clock
    server = await lab.serve(handler, name=name, process_request=admit, backlog=max(128, n), compression=None)
    conns: list[ClientConnection | None] = [None] * n
    members: list[asyncio.Task] = []
    try:
        async with asyncio.timeout(10 + n / 50):
            # First connect everyone, at most 100 handshakes at a time.
            gate = asyncio.Semaphore(100)

            async def first(i: int) -> None:
                async with gate:
                    conns[i] = await connect(server.url, open_timeout=10, ping_interval=None, proxy=None, compression=None)

            await asyncio.gather(*(first(i) for i in range(n)))
        for i in range(n):
            backoff = Backoff(**policy, seed=client_seed(seed, i))
            members.append(asyncio.create_task(
                herd_member(i, conns[i], server.url, backoff, result, t0, open_timeout, conns)))
        await asyncio.sleep(0)  # let every member start waiting for its connection to close
        t0[0] = time.monotonic()
        limiting = True
        limit.refill()  # idle during the outage, the bucket is full when the server is back
        # LabServer.restart(downtime=...), in its three steps, to time the moment it listens again.
        await server.stop(code=1012, reason="service restart")
        await asyncio.sleep(downtime)
        result.back_at = time.monotonic() - t0[0]
        await server.start()
        remaining = deadline - result.back_at
        if remaining > 0:
            await asyncio.wait(members, timeout=remaining)
    finally:
        for task in members:
            task.cancel()
        await asyncio.gather(*members, return_exceptions=True)
        await asyncio.gather(*(close_within(ws) for ws in conns if ws is not None))
        await lab.close(name)
    return result
