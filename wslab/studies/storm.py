"""A reconnect storm against a real server, with and without admission control, measured from both sides.

1,000 clients lose their server (a real restart: the listening socket closes
for ``downtime`` seconds) and come back. The clients run in worker
processes, ``workers`` event loops of their own, as a herd of real machines
would; the server runs alone in this process, so its CPU time is its own.

Each client is :func:`storm_member`: it waits, tries, and asks the policy core
(:class:`~wslab.clients.policy.ReconnectPolicy`, no I/O) how long to wait
after each failure. That policy honours ``Retry-After``: told "come back in 2 s",
the client waits 2 s plus its own backoff.

The server is a :class:`StormServer` behind a :class:`~wslab.servers.gate.Gate`.
Without admission control it takes every handshake as fast as its one event
loop can. With it (:class:`~wslab.servers.admission.AdmissionControl`, armed
when the outage begins) it admits ``rate`` handshakes a second, in bursts of
``burst``, and answers the others ``503`` with ``Retry-After``.

Measured: the server process's CPU (sampled by a thread every 20 ms), the
accepted handshakes per 100 ms, each attempt's duration as the client saw it
(a successful one is the handshake latency), and when each client was back.
:class:`StormResult` holds them; its figures are pure functions, tested
without sockets.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import InvalidHandshake

from ..clients.backoff import Backoff
from ..clients.policy import CloseEvent, GiveUp, ReconnectPolicy
from ..runtime.lab import Lab
from ..runtime.timeline import Timeline
from ..servers import AdmissionControl, Gate, SessionServer, start_app
from .herd import Attempt, HerdLog, Member, herd_result, raise_fd_limit, run_worker
from .simulate import HerdResult, client_seed

__all__ = ["CpuSampler", "StormResult", "StormServer", "cpu_per_bin", "run_storm", "storm_member"]


# -- the client -------------------------------------------------------------------------------------------


async def storm_member(member: Member, ws: ClientConnection, log: HerdLog) -> ClientConnection:
    """One client of the storm: wait for the loss, then retry as the policy says until connected again."""
    assert isinstance(member.backoff, Backoff), "the policy spreads a Retry-After with the backoff's generator"
    policy = ReconnectPolicy(member.backoff, min_uptime=0.0)
    await ws.wait_closed()
    log.lost(member.index)
    # The server restarted (1012): a planned goodbye after a long connection; the backoff starts over.
    decision = policy.decide(CloseEvent(1012, "service restart", True), uptime=math.inf)
    while not isinstance(decision, GiveUp):
        due = log.clock() + decision.delay
        await asyncio.sleep(decision.delay)
        started = log.clock()
        try:
            ws = await connect(member.url, open_timeout=member.open_timeout, ping_interval=None, proxy=None,
                               compression=None)
        except (OSError, asyncio.TimeoutError, InvalidHandshake) as exc:
            log.attempt(member.index, due, started, connected=False)
            decision = policy.decide(exc)  # 503 with Retry-After: at least that long, plus the backoff
            continue
        log.attempt(member.index, due, started, connected=True)
        return ws
    raise RuntimeError(f"client {member.index} gave up: {decision.reason}")


# -- the server --------------------------------------------------------------------------------------------


class StormServer(SessionServer):
    """Sends each client a snapshot of the state, holds its connection open, and notes each admission.

    What a real server does first for a client that connects: serialize the
    state it needs (here ``snapshot`` items, as JSON) and send it. That, not
    the handshake, is most of what a connection costs, and it runs on the
    server's one event loop.
    """

    def __init__(self, timeline: Timeline, log: HerdLog, *, name: str = "storm", gate: Gate | None = None,
                 snapshot: int = 0) -> None:
        super().__init__(timeline, name, gate=gate)
        self.log = log
        self.state = [{"id": i, "name": f"item {i}", "price": i * 0.01, "tags": ["a", "b"]} for i in range(snapshot)]
        self.armed = False  # log admissions once the outage began
        self.handshakes: list[float] = []  # seconds from TCP accept to open, for each admitted handshake

    async def handler(self, ws: ServerConnection) -> None:
        if self.armed:
            self.log.accepted.append(self.log.clock())
            # From the TCP accept to here: the handshake as the server lived it (the lab's server notes the accept).
            self.handshakes.append(time.monotonic() - getattr(ws, "accepted_at", time.monotonic()))
        if self.state:
            await ws.send(json.dumps(self.state))  # serialized for each client: CPU on the event loop
        await ws.wait_closed()

    async def broadcast(self, message: bytes | str) -> None:
        raise NotImplementedError("the storm server broadcasts nothing")


class CpuSampler:
    """This process's CPU time, sampled every ``every`` seconds by a thread (the event loop may be too busy)."""

    def __init__(self, every: float = 0.02) -> None:
        self.every = every
        self.samples: list[tuple[float, float]] = []  # (time.monotonic(), time.process_time())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wslab-cpu-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), time.process_time()))
            self._stop.wait(self.every)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def cpu_per_bin(samples: list[tuple[float, float]], start: float, bin: float = 0.1) -> np.ndarray:
    """CPU use per ``bin``-second window from ``start`` (same clock as the samples): 1.0 is one core busy. No I/O."""
    if len(samples) < 2:
        return np.zeros(0)
    wall = np.array([s[0] for s in samples]) - start
    cpu = np.array([s[1] for s in samples])
    edges = np.arange(0.0, wall[-1] + bin, bin)
    cpu_at_edges = np.interp(edges, wall, cpu)  # process_time at each window edge
    per_bin: np.ndarray = np.maximum(np.diff(cpu_at_edges), 0.0) / bin
    return per_bin


# -- the result ---------------------------------------------------------------------------------------------


@dataclass
class StormResult:
    """A storm, measured. Times in seconds since the outage began.

    Attributes:
        herd: The clients' attempts, reconnections and the server's admissions.
        cpu: The server process's CPU use per 100 ms window (1.0 = one core).
        refused: Handshakes the server turned away (503).
        server_handshakes: For each admitted handshake, seconds from the server's TCP accept to open.
        label: What was run.
        load: The machine's load average (1 minute) when the run began: other programs share the cores.
    """

    herd: HerdResult
    cpu: np.ndarray = field(default_factory=lambda: np.zeros(0))
    refused: int = 0
    server_handshakes: list[float] = field(default_factory=list)
    label: str = ""
    load: float = 0.0

    @property
    def peak_cpu(self) -> float:
        """The busiest 100 ms of the server process once it was back, as a fraction of one core."""
        first = int(self.herd.back_at / 0.1)
        return float(self.cpu[first:].max(initial=0.0))

    def peak_accepts(self, bin: float = 0.1) -> int:
        """The most handshakes the server admitted in any ``bin`` seconds."""
        return self.herd.peak_accepts(bin)

    def server_handshake_latency(self, q: float = 99.0) -> float:
        """The ``q``-th percentile of an admitted handshake, from the server's TCP accept to open, in seconds."""
        return float(np.percentile(self.server_handshakes, q)) if self.server_handshakes else math.nan

    def handshake_latency(self, q: float = 99.0) -> float:
        """The ``q``-th percentile of a successful attempt's duration as the client saw it (connect to open), in s."""
        ok = np.frombuffer(self.herd.attempt_ok, dtype=np.uint8).astype(bool)
        durations = np.frombuffer(self.herd.durations, dtype=float)
        return float(np.percentile(durations[ok], q)) if ok.any() else math.nan

    @property
    def all_back_after(self) -> float:
        """Seconds from the server listening again to the last client back (``inf``: not all came back)."""
        return self.herd.completion_time - self.herd.back_at

    def row(self) -> dict[str, Any]:
        return {
            "server": self.label, "clients": self.herd.n, "attempts": self.herd.total_attempts,
            "refused (503)": self.refused, "peak CPU (% of a core)": round(100 * self.peak_cpu),
            "peak accepts / 100 ms": self.peak_accepts(),
            "handshake p99, server (ms)": round(1000 * self.server_handshake_latency(99)),
            "handshake p99, client (ms)": round(1000 * self.handshake_latency(99)),
            "all back after (s)": round(self.all_back_after, 2),
            "load average": round(self.load, 1),
        }


# -- run -------------------------------------------------------------------------------------------------------


async def _worker(first: int, count: int, url: str, seed: int, policy: dict[str, Any]) -> None:
    """Clients ``first`` to ``first + count - 1``, in this worker process (``python -m wslab.studies.storm``)."""

    def member(j: int, ws: ClientConnection, log: HerdLog) -> Coroutine[Any, Any, ClientConnection]:
        backoff = Backoff(**policy, seed=client_seed(seed, first + j))
        return storm_member(Member(first + j, url, backoff, open_timeout=10.0), ws, log)

    await run_worker(url, count, member)


async def run_storm(
    lab: Lab, n: int, policy: dict[str, Any], *, rate: float | None = None, burst: float | None = None,
    workers: int = 4, downtime: float = 1.0, deadline: float = 30.0, seed: int = 0, snapshot: int = 0,
    label: str = "",
) -> StormResult:
    """Connect ``n`` clients in ``workers`` processes, restart the server, measure the storm.

    Args:
        policy: Keyword arguments for each client's :class:`~wslab.clients.backoff.Backoff`.
        rate: Admission control: handshakes admitted per second once the outage began; None: none.
        burst: Its burst (default: 100 ms worth).
        downtime: Seconds the listening socket stays closed.
        deadline: Seconds from the outage to wait for every client.
        snapshot: Items of state the server serializes and sends to each client that connects.
    """
    assert lab.timeline.clock is time.monotonic, "the workers report time.monotonic(): the timeline must use it too"
    raise_fd_limit(n + 256)
    load = os.getloadavg()[0]
    timeline = lab.timeline
    log = HerdLog(clock=timeline.now)
    gate = Gate(open_timeout=10.0)
    app = StormServer(timeline, log, name="storm", gate=gate, snapshot=snapshot)
    server = await start_app(lab, app, backlog=max(128, n), compression=None)
    share = [n // workers + (w < n % workers) for w in range(workers)]
    procs: list[asyncio.subprocess.Process] = []
    try:
        for w in range(workers):
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "wslab.studies.storm", "--worker", str(sum(share[:w])), str(share[w]),
                server.url, str(seed), json.dumps(policy), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, limit=2**24))
        async with asyncio.timeout(20 + n / 25):
            for proc in procs:
                assert proc.stdout is not None
                line = await proc.stdout.readline()
                if line.strip() != b"ready":
                    raise RuntimeError(f"a storm worker failed to start: {line!r}")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{time.monotonic() + deadline!r}\n".encode())
            await proc.stdin.drain()
        with CpuSampler() as sampler:
            outage_at = timeline.now()
            app.armed = True
            if rate is not None:
                gate.admission = AdmissionControl(rate, burst)  # armed now: the bucket starts full
            restart = await server.restart(downtime=downtime)
            reports = []
            async with asyncio.timeout(deadline + 30):
                for proc in procs:
                    assert proc.stdout is not None
                    reports.append(json.loads(await proc.stdout.readline()))
        for report in reports:  # from time.monotonic() to timeline seconds
            log.lost_at.update({int(client): at - timeline.start for client, at in report["lost_at"].items()})
            log.attempts += [Attempt(client, due - timeline.start, started - timeline.start, ended - timeline.start,
                                     connected) for client, due, started, ended, connected in report["attempts"]]
        for proc in procs:
            assert proc.stdin is not None
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
        await lab.close("storm")
    herd = herd_result(log, n, outage_at=outage_at, back_at=restart.up_at, label=label)
    cpu = cpu_per_bin(sampler.samples, timeline.start + outage_at)
    refused = gate.admission.refused if gate.admission is not None else 0
    return StormResult(herd, cpu, refused, app.handshakes, label, load)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    first, count, url, seed, policy = sys.argv[2:7]
    asyncio.run(_worker(int(first), int(count), url, int(seed), json.loads(policy)))
