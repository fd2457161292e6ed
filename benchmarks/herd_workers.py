"""A real herd whose clients run in worker processes, for bench_herd.py.

:func:`run_herd_workers` is :func:`wslab.studies.herd.run_herd` with the clients split
over ``workers`` processes (each with its own event loop) and the server in
this process. A real herd is many machines: with clients and server on one
loop, a no-jitter wave can't start faster than that one loop opens sockets
while it also does the server's handshakes and 503s, and a burst of accepted
handshakes lags every client's timer, which bunches full-jitter attempts.
Here each worker runs :func:`wslab.studies.herd.herd_member` unchanged, and reports
its :class:`~wslab.studies.herd.HerdLog`: an attempt is counted when it was due
(the client's delay ran out), on ``time.monotonic()``, which on Linux is one clock for every
process (the lab's timeline counts from it too). The server is the same lab server, backlog
and capacity as ``run_herd``, and its listening socket really closes for the downtime.
The machine's cores are still shared: that remains a bound on how fast a wave starts.

Run as a script, this file is one worker (``--worker first count url seed policy``):
it connects its clients, prints ``ready``, reads the deadline on stdin, prints its
log as one JSON line when its clients are back (or at the deadline), then closes
them when stdin says ``close``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Coroutine
from typing import Any

from websockets.asyncio.client import ClientConnection

from wslab.clients.backoff import Backoff
from wslab.runtime.lab import Lab
from wslab.studies.herd import (
    Admission,
    Attempt,
    HerdLog,
    Member,
    herd_member,
    herd_result,
    raise_fd_limit,
    restart_under_herd,
    run_worker,
    serve_herd,
)
from wslab.studies.simulate import AcceptLimit, HerdResult, client_seed

__all__ = ["run_herd_workers"]


async def _worker(first: int, count: int, url: str, seed: int, policy: dict) -> None:
    """Clients ``first`` to ``first + count - 1`` of the herd, with their own seeds, in this process."""

    def member(j: int, ws: ClientConnection, log: HerdLog) -> Coroutine[Any, Any, ClientConnection]:
        backoff = Backoff(**policy, seed=client_seed(seed, first + j))
        return herd_member(Member(first + j, url, backoff), ws, log)

    await run_worker(url, count, member)


async def run_herd_workers(
    lab: Lab, n: int, policy: dict, *, workers: int = 2, name: str = "herd", downtime: float = 1.0,
    accept_rate: float = 200.0, burst: float | None = None, deadline: float = 20.0, seed: int = 0,
    label: str = "",
) -> HerdResult:
    """Like :func:`wslab.studies.herd.run_herd` (same arguments, same result), with the clients in worker processes."""
    raise_fd_limit(n + 256)
    timeline = lab.timeline
    assert timeline.clock is time.monotonic, "the workers report time.monotonic(): the timeline must use it too"
    log = HerdLog(clock=timeline.now)
    admission = Admission(AcceptLimit(accept_rate, burst), log)
    server = await serve_herd(lab, n, admission, name=name)
    share = [n // workers + (w < n % workers) for w in range(workers)]
    starts = [sum(share[:w]) for w in range(workers)]
    procs = []
    try:
        for first, count in zip(starts, share, strict=True):
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--worker", str(first), str(count), server.url, str(seed),
                json.dumps(policy), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                limit=2**24))  # a report is one JSON line of some 100 kB
        async with asyncio.timeout(20 + n / 25):
            for proc in procs:
                line = await proc.stdout.readline()
                if line.strip() != b"ready":
                    raise RuntimeError(f"a herd worker failed to start: {line!r}")
        for proc in procs:
            proc.stdin.write(f"{time.monotonic() + deadline!r}\n".encode())
            await proc.stdin.drain()
        # The members run in the workers, which wait out the deadline themselves: no tasks to wait for here.
        outage_at, restart = await restart_under_herd(server, admission, [], downtime=downtime, deadline=0)
        async with asyncio.timeout(deadline + 30):
            reports = [json.loads(await proc.stdout.readline()) for proc in procs]
        for report in reports:  # from time.monotonic() to timeline seconds
            log.lost_at.update({int(client): at - timeline.start for client, at in report["lost_at"].items()})
            log.attempts += [Attempt(client, due - timeline.start, started - timeline.start, ended - timeline.start,
                                     connected)
                             for client, due, started, ended, connected in report["attempts"]]
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
    return herd_result(log, n, outage_at=outage_at, back_at=restart.up_at, label=label)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    first, count, url, seed, policy = sys.argv[2:7]
    asyncio.run(_worker(int(first), int(count), url, int(seed), json.loads(policy)))
