"""A thousand clients in worker processes, a burst of broadcasts, and what it cost: notebook 07's throughput.

One Python process can hold a thousand connections, but it reads their
messages on one core. To measure what the *servers* deliver, the clients run
in a few worker processes of their own (``python -m wslab.studies.crowd``),
and count what they receive::

    crowd = await start_crowd(lab, [p0.url, p1.url], 1000, workers=2)
    run = await burst(publisher, crowd, 100, pids={"p0": p0.pid, "p1": p1.pid})
    run.delivered_per_second, run.cpu          # msgs/s, CPU seconds per process

:func:`cpu_seconds` and :func:`rss_bytes` read a process's CPU time and
resident memory from ``/proc`` (Linux; None elsewhere): what a delivery
costs, measured rather than guessed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..runtime.errors import LabError
from ..runtime.lab import Lab
from ..runtime.timing import scaled, wait_until

__all__ = ["Burst", "Crowd", "burst", "cpu_seconds", "rss_bytes", "start_crowd"]


def cpu_seconds(pid: int) -> float | None:
    """CPU time ``pid`` has used so far, user plus system, in seconds; None if it can't be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # no /proc (macOS): ask ps, which prints [[dd-]hh:]mm:ss[.ss]
        text = _ps(pid, "time")
        if text is None:
            return None
        days, _, clock = text.rpartition("-")
        seconds = 0.0
        for part in clock.split(":"):
            seconds = seconds * 60 + float(part)
        return seconds + 86400 * int(days or 0)
    # After "pid (name)": state is field 3, utime 14 and stime 15 (proc(5)), in clock ticks.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` now, in bytes; None if it can't be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:  # no /proc (macOS): ps prints kilobytes
        text = _ps(pid, "rss")
        return int(text) * 1024 if text is not None and text.isdigit() else None
    return None


def _ps(pid: int, field: str) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["ps", "-o", f"{field}=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    return None


# -- the worker: one process, many clients, counting --------------------------------------------


async def _work(count: int, urls: list[str]) -> None:
    """Connect ``count`` clients over ``urls``; print ``ready``; answer ``report`` lines until ``quit``."""
    from websockets.asyncio.client import connect

    from .herd import raise_fd_limit

    raise_fd_limit(count + 100)
    received = [0] * count
    last = [0.0]  # when the latest frame arrived, any client
    opened, closed = [0], [0]
    opening = asyncio.Semaphore(50)

    async def client(i: int) -> None:
        async with opening:
            ws = await connect(urls[i % len(urls)], open_timeout=60, ping_interval=None, compression=None)
        opened[0] += 1
        try:
            async for _ in ws:  # count only: this process must cost as little as it can per message
                received[i] += 1
                last[0] = time.monotonic()
        finally:
            closed[0] += 1

    tasks = [asyncio.create_task(client(i)) for i in range(count)]
    while opened[0] < count:
        await asyncio.sleep(0.05)
        failed = next((t for t in tasks if t.done() and t.exception() is not None), None)
        if failed is not None:
            print(json.dumps({"error": f"{type(failed.exception()).__name__}: {failed.exception()}"}), flush=True)
            return
    print(json.dumps({"ready": count}), flush=True)
    loop = asyncio.get_running_loop()
    while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "report":
        print(json.dumps({"received": sum(received), "fewest": min(received), "last": last[0],
                          "closed": closed[0]}), flush=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- the controller, in the notebook's process ------------------------------------------------------


class Crowd:
    """Clients in worker processes, started by :func:`start_crowd`. ``lab.close()`` stops the workers."""

    close_rank = 2  # with the lab's clients

    def __init__(self, name: str, count: int, workers: list[asyncio.subprocess.Process]) -> None:
        self.name = name
        self.count = count
        self.workers = workers

    @property
    def pids(self) -> list[int]:
        return [worker.pid for worker in self.workers]

    async def report(self, timeout: float = 10.0) -> dict[str, Any]:
        """What every client received so far, added up: ``received``, ``fewest`` (one client), ``last``, ``closed``."""
        answers = []
        for worker in self.workers:
            assert worker.stdin is not None and worker.stdout is not None
            worker.stdin.write(b"report\n")
            await worker.stdin.drain()
            answers.append(json.loads(await asyncio.wait_for(worker.stdout.readline(), scaled(timeout))))
        return {"received": sum(a["received"] for a in answers), "fewest": min(a["fewest"] for a in answers),
                "last": max(a["last"] for a in answers), "closed": sum(a["closed"] for a in answers)}

    async def close(self) -> None:
        for worker in self.workers:
            if worker.returncode is None:
                with contextlib.suppress(Exception):
                    assert worker.stdin is not None
                    worker.stdin.write(b"quit\n")
                    await worker.stdin.drain()
        for worker in self.workers:
            try:
                await asyncio.wait_for(worker.wait(), 5)
            except asyncio.TimeoutError:
                worker.kill()
                await worker.wait()

    def __repr__(self) -> str:
        return f"<Crowd {self.name}: {self.count} clients in {len(self.workers)} worker processes>"


async def start_crowd(lab: Lab, urls: list[str], count: int, *, workers: int = 2, name: str = "crowd",
                      timeout: float = 60.0) -> Crowd:
    """Start ``workers`` processes holding ``count`` clients in all, spread over ``urls``; return when all are open.

    Raises:
        LabError: a worker could not connect its clients within ``timeout`` seconds (scaled).
    """
    await lab.close(name)
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    shares = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wslab.studies.crowd", str(share), *urls, env=env, limit=1 << 20,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    ) for share in shares]
    crowd = await lab.track(name, Crowd(name, count, procs))
    for proc in procs:
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), scaled(timeout))
        except asyncio.TimeoutError:
            line = b'{"error": "no answer"}'
        answer = json.loads(line or b'{"error": "the worker exited"}')
        if "ready" not in answer:
            await lab.close(name)
            raise LabError(f"{name}: a worker could not connect its clients: {answer['error']}")
    return crowd


# -- a burst, measured --------------------------------------------------------------------------------


class Publisher(Protocol):
    async def publish(self, data: bytes | str) -> int | None: ...


@dataclass
class Burst:
    """One burst of broadcasts to a crowd.

    Attributes:
        broadcasts: How many were published, in all rounds.
        deliveries: Frames the crowd received (broadcasts x clients, if none was lost).
        seconds: Each round's time from its first publish to its last frame's arrival, added up.
        cpu: CPU seconds each named process used meanwhile (None where it can't be read).
        dropped: Clients whose connection ended during the burst.
    """

    broadcasts: int
    deliveries: int
    seconds: float
    cpu: dict[str, float | None] = field(default_factory=dict)
    dropped: int = 0

    @property
    def delivered_per_second(self) -> float:
        return self.deliveries / self.seconds if self.seconds > 0 else 0.0


async def burst(publisher: Publisher, crowd: Crowd, broadcasts: int, pids: Mapping[str, int], *,
                rounds: int = 1, timeout: float = 30.0) -> Burst:
    """Publish ``broadcasts`` messages back to back, ``rounds`` times; each time, wait until every client has them.

    Small bursts, repeated, keep each server busy for a fraction of a second at a
    time: a server's event loop runs every client's outbox dry in one pass, and a
    pong that arrives meanwhile waits for the pass to end. ``pids`` names the
    processes whose CPU time to measure (the servers, Redis, the crowd's workers).

    Raises:
        WaitTimeout: the crowd did not receive a round within ``timeout`` seconds (scaled).
    """
    first = await crowd.report()
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    seconds, latest = 0.0, dict(first)
    for _ in range(rounds):
        expected = latest["received"] + broadcasts * crowd.count
        started = time.monotonic()
        for n in range(broadcasts):
            if await publisher.publish(f"burst {n}") is None:
                raise LabError("the publisher could not publish: is Redis up?")

        async def all_received(expected: int = expected) -> bool:
            latest.update(await crowd.report())
            return bool(latest["received"] >= expected or latest["closed"] > first["closed"])

        await wait_until(all_received, timeout, f"{crowd.count} clients receiving {broadcasts} broadcasts", poll=0.05)
        seconds += latest["last"] - started
        if latest["closed"] > first["closed"]:
            break  # clients were dropped: the rest of the run would not measure the same thing
    cpu: dict[str, float | None] = {}
    for name, pid in pids.items():
        now, then = cpu_seconds(pid), cpu_before[name]
        cpu[name] = None if now is None or then is None else now - then
    return Burst(broadcasts * rounds, latest["received"] - first["received"], seconds, cpu,
                 latest["closed"] - first["closed"])


if __name__ == "__main__":
    asyncio.run(_work(int(sys.argv[1]), sys.argv[2:]))
