"""A real herd whose clients run in worker processes, for bench_herd.py.

:func:`run_herd_workers` is :func:`wslab.studies.herd.run_herd` with the clients split
over ``workers`` processes (each with its own event loop) and the server in
this process. A real herd is many machines: with clients and server on one
loop, a no-jitter wave can't start faster than that one loop opens sockets
while it also does the server's handshakes and 503s, and a burst of accepted
handshakes lags every client's timer, which bunches full-jitter attempts.
Here each worker runs :func:`wslab.studies.herd.herd_member` unchanged: an attempt is
counted when the client starts connecting, on ``time.monotonic()``, which on
Linux is one clock for every process. The server is the same lab server, backlog
and capacity as ``run_herd``, and its listening socket really closes for the downtime.
The machine's cores are still shared: that remains a bound on how fast a wave starts.

Run as a script, this file is one worker (``--worker first count url seed policy``):
it connects its clients, prints ``ready``, reads the outage's start and
deadline on stdin, prints its records as one JSON line when its clients are back
(or at the deadline), then closes them when stdin says ``close``.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from http import HTTPStatus

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection

from wslab.clients.backoff import Backoff
from wslab.studies.herd import _close_all, herd_member, raise_fd_limit
from wslab.runtime.lab import Lab
from wslab.studies.simulate import AcceptLimit, HerdResult, client_seed

__all__ = ["run_herd_workers"]


async def _worker(first: int, count: int, url: str, seed: int, policy: dict) -> None:
    """Clients ``first`` to ``first + count - 1`` of the herd, with their own seeds, in this process."""
    raise_fd_limit(count + 256)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    conns: list = [None] * count
    gate = asyncio.Semaphore(50)

    async def first_connect(j: int) -> None:
        async with gate:
            conns[j] = await connect(url, open_timeout=10, ping_interval=None, proxy=None, compression=None)

    async with asyncio.timeout(10 + count / 25):
        await asyncio.gather(*(first_connect(j) for j in range(count)))
    # Times stay on the monotonic clock (t0 = 0): the server's process subtracts the outage's start.
    result = HerdResult(n=count, back_at=math.nan, reconnected=[math.nan] * count, lost=[math.nan] * count)
    members = [
        asyncio.create_task(herd_member(j, conns[j], url, Backoff(**policy, seed=client_seed(seed, first + j)),
                                        result, [0.0], 2.0, conns))
        for j in range(count)
    ]
    await asyncio.sleep(0)
    print("ready", flush=True)
    t0, deadline = map(float, (await asyncio.wait_for(stdin.readline(), 60)).split())
    remaining = t0 + deadline - time.monotonic()
    if remaining > 0:
        await asyncio.wait(members, timeout=remaining)
    for task in members:
        task.cancel()
    await asyncio.gather(*members, return_exceptions=True)
    print(json.dumps({
        "lost": result.lost, "reconnected": result.reconnected, "attempt_times": result.attempt_times.tolist(),
        "attempt_ok": list(result.attempt_ok), "durations": result.durations.tolist(),
    }, allow_nan=True), flush=True)
    await asyncio.wait_for(stdin.readline(), 60)  # "close": every worker has reported
    await _close_all([ws for ws in conns if ws is not None])


async def run_herd_workers(
    lab: Lab, n: int, policy: dict, *, workers: int = 2, name: str = "herd", downtime: float = 1.0,
    accept_rate: float = 200.0, burst: float | None = None, deadline: float = 20.0, seed: int = 0,
    label: str = "",
) -> HerdResult:
    """Like :func:`wslab.studies.herd.run_herd` (same arguments, same result), with the clients in ``workers`` processes."""
    raise_fd_limit(n + 256)
    limit = AcceptLimit(accept_rate, burst)
    limiting = False
    result = HerdResult(n=n, back_at=math.nan, reconnected=[], lost=[], label=label)
    t0 = math.nan

    def admit(connection: ServerConnection, request):
        if not limiting:
            return None
        if not limit.admit():
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "busy, try again later\n")
        result.accepted_at.append(time.monotonic() - t0)
        return None

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    server = await lab.serve(handler, name=name, process_request=admit, backlog=max(128, n), compression=None)
    share = [n // workers + (w < n % workers) for w in range(workers)]
    starts = [sum(share[:w]) for w in range(workers)]
    procs = []
    try:
        for first, count in zip(starts, share):
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--worker", str(first), str(count), server.url, str(seed),
                json.dumps(policy), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                limit=2**24))  # a report is one JSON line of some 100 kB
        async with asyncio.timeout(20 + n / 25):
            for proc in procs:
                line = await proc.stdout.readline()
                if line.strip() != b"ready":
                    raise RuntimeError(f"a herd worker failed to start: {line!r}")
        t0 = time.monotonic()
        for proc in procs:
            proc.stdin.write(f"{t0!r} {deadline!r}\n".encode())
            await proc.stdin.drain()
        limiting = True
        limit.refill()
        await server.stop(code=1012, reason="service restart")
        await asyncio.sleep(downtime)
        result.back_at = time.monotonic() - t0
        await server.start()
        async with asyncio.timeout(deadline + 30):
            reports = [json.loads(await proc.stdout.readline()) for proc in procs]
        for report in reports:
            result.lost += [t - t0 for t in report["lost"]]
            result.reconnected += [t - t0 for t in report["reconnected"]]
            result.attempt_times.extend(t - t0 for t in report["attempt_times"])
            result.attempt_ok.extend(report["attempt_ok"])
            result.durations.extend(report["durations"])
        for proc in procs:
            proc.stdin.write(b"close\n")
            await proc.stdin.drain()
        async with asyncio.timeout(30):
            for proc in procs:
                await proc.wait()
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await lab.close(name)
    return result


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    first, count, url, seed, policy = sys.argv[2:7]
    asyncio.run(_worker(int(first), int(count), url, int(seed), json.loads(policy)))
