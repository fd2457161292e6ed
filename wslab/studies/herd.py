"""A thundering herd, for real: N websockets clients on 127.0.0.1 lose their server and reconnect.

:func:`run_herd` runs in three steps:

1. **setup**: :func:`serve_herd` starts a lab server that admits at most the
   capacity of an :class:`~wslab.studies.simulate.AcceptLimit` once the outage
   began, and answers 503 (try again later) beyond it, like the simulation's
   server; :func:`connect_clients` connects the herd to it;
2. **run**: every client runs :func:`herd_member` while the server restarts
   (:meth:`~wslab.runtime.server.LabServer.restart`: the listening socket really
   closes, connection attempts are refused until it listens again on the same
   port). Each member waits ``Backoff(**policy).next()`` before each attempt,
   like the simulation in :mod:`wslab.studies.simulate`, and reports to a
   :class:`HerdLog` when each attempt was due, started and ended;
3. **analysis**: :func:`herd_result` turns the log into a
   :class:`~wslab.studies.simulate.HerdResult`, the simulation's own result type.
   It is pure, and tested without sockets. An attempt counts at the moment it
   was due (the client's delay ran out), like the simulation's: with 200
   clients on one event loop, the loop starts a wave of attempts over tens of
   milliseconds (more on a busy machine), a smear that 200 separate machines
   would not add. How late each attempt really started is kept too (``lags``).

Server and clients share one event loop (the notebook's), so nothing here
prints or blocks; everything has a deadline, and the clients are closed
before :func:`run_herd` returns. Clients connect with ``proxy=None``: by
default websockets reads the proxy environment variables on every connect,
which was a third of the loop's time in a 1,000-client herd.
"""

from __future__ import annotations

import asyncio
import json
import math
import resource
import sys
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, NamedTuple

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import InvalidHandshake
from websockets.http11 import Request, Response

from ..clients.backoff import Backoff, Delays
from ..runtime.errors import LabError
from ..runtime.lab import Lab
from ..runtime.server import LabServer, Restart
from ..runtime.timing import abort_all, close_within, scaled
from .simulate import AcceptLimit, HerdResult, client_seed

__all__ = [
    "Admission",
    "Attempt",
    "HerdLog",
    "Member",
    "connect_clients",
    "run_worker",
    "herd_member",
    "herd_result",
    "raise_fd_limit",
    "restart_under_herd",
    "run_herd",
    "serve_herd",
]


# -- what a member is, and what it reports ------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One client of the herd: its number, where it reconnects, and how long it waits between attempts."""

    index: int
    url: str
    backoff: Delays  # a Backoff, or anything else with next() and reset()
    open_timeout: float = 2.0  # seconds each attempt may take to complete the opening handshake


class Attempt(NamedTuple):
    """One reconnection attempt: which client, when it was due, started and ended, and whether it connected.

    ``due`` is when the client's delay ran out: what its backoff decided.
    ``started`` is when its event loop got round to it, which is later when
    the loop is busy (say, starting a whole wave of attempts at once).
    """

    client: int
    due: float
    started: float
    ended: float
    connected: bool


@dataclass
class HerdLog:
    """What the herd did, as it happened, every time read from ``clock`` (seconds).

    Members report here (:meth:`lost`, :meth:`attempt`), the server its
    admissions (``accepted``); :func:`herd_result` turns it into a result.
    """

    clock: Callable[[], float] = time.monotonic
    lost_at: dict[int, float] = field(default_factory=dict)  # client -> when it noticed the loss
    attempts: list[Attempt] = field(default_factory=list)
    accepted: list[float] = field(default_factory=list)  # when the server admitted each connection

    def lost(self, client: int) -> None:
        """Client ``client``'s connection just closed."""
        self.lost_at[client] = self.clock()

    def attempt(self, client: int, due: float, started: float, *, connected: bool) -> None:
        """Client ``client``'s attempt, due at ``due`` and begun at ``started``, just ended."""
        self.attempts.append(Attempt(client, due, started, self.clock(), connected))


async def herd_member(member: Member, ws: ClientConnection, log: HerdLog) -> ClientConnection:
    """One herd client: wait for the connection to drop, then retry with backoff until connected again."""
    await ws.wait_closed()
    log.lost(member.index)
    while True:
        delay = member.backoff.next()
        due = log.clock() + delay
        await asyncio.sleep(delay)
        started = log.clock()
        try:
            ws = await connect(member.url, open_timeout=member.open_timeout,
                               ping_interval=None, proxy=None, compression=None)
        except (OSError, asyncio.TimeoutError, InvalidHandshake):
            # refused (server down), 503 (server busy) or too slow: all mean "try again later"
            log.attempt(member.index, due, started, connected=False)
            continue
        log.attempt(member.index, due, started, connected=True)
        member.backoff.reset()  # connected: the next outage starts from the shortest delay again
        return ws


# -- setup --------------------------------------------------------------------------------------


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


class Admission:
    """The herd server's capacity, as websockets' ``process_request``.

    Everyone is admitted while the herd first connects. Once armed (:meth:`arm`,
    when the outage begins), at most what ``limit`` allows, and the rest get 503.
    Every admission after that is logged in ``log.accepted``.
    """

    def __init__(self, limit: AcceptLimit, log: HerdLog) -> None:
        self.limit = limit
        self.log = log
        self.armed = False

    def arm(self) -> None:
        self.armed = True
        self.limit.refill()  # idle during the outage, the bucket is full when the server is back

    def __call__(self, connection: ServerConnection, request: Request) -> Response | None:
        if not self.armed:
            return None
        if not self.limit.admit():
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "busy, try again later\n")
        self.log.accepted.append(self.log.clock())
        return None


async def serve_herd(lab: Lab, n: int, admission: Admission, *, name: str = "herd") -> LabServer:
    """A lab server for a herd of ``n``: it holds each connection open and admits through ``admission``."""

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    return await lab.serve(handler, name=name, process_request=admission, backlog=max(128, n), compression=None)


async def connect_clients(url: str, n: int, *, at_once: int = 100, timeout: float) -> list[ClientConnection]:
    """Open ``n`` client connections to ``url``, ``at_once`` handshakes at a time, all within ``timeout`` (scaled).

    On failure, aborts those it opened and raises.
    """
    conns: list[ClientConnection] = []
    gate = asyncio.Semaphore(at_once)

    async def one() -> None:
        async with gate:
            conns.append(await connect(url, open_timeout=10, ping_interval=None, proxy=None, compression=None))

    try:
        async with asyncio.timeout(scaled(timeout)), asyncio.TaskGroup() as group:
            for _ in range(n):
                group.create_task(one())
    except BaseException:
        abort_all(conns)
        raise
    return conns


async def run_worker(url: str, count: int,
                     member: Callable[[int, ClientConnection, HerdLog], Coroutine[Any, Any, ClientConnection]]) -> None:
    """One worker process of a herd spread over processes: ``count`` clients, driven over stdin and stdout.

    It connects its clients, starts ``member(j, ws, log)`` for each, prints ``ready``, reads the
    deadline (on ``time.monotonic()``, one clock for every process on Linux), lets the members run
    until then, prints what they logged as JSON, then waits for ``close`` (every worker has
    reported) before closing its connections. ``wslab.studies.storm`` and ``benchmarks/herd_workers.py``
    run their workers with it.
    """
    raise_fd_limit(count + 256)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    conns = await connect_clients(url, count, at_once=50, timeout=10 + count / 25)
    log = HerdLog()
    members = [asyncio.create_task(member(j, ws, log)) for j, ws in enumerate(conns)]
    await asyncio.sleep(0)
    print("ready", flush=True)
    until = float(await asyncio.wait_for(stdin.readline(), 60))
    if (remaining := until - time.monotonic()) > 0:
        await asyncio.wait(members, timeout=remaining)
    for task in members:
        task.cancel()
    await asyncio.gather(*members, return_exceptions=True)
    back = [task.result() for task in members if not task.cancelled() and task.exception() is None]
    print(json.dumps({"lost_at": log.lost_at, "attempts": log.attempts}), flush=True)
    await asyncio.wait_for(stdin.readline(), 60)  # "close": every worker has reported
    await asyncio.gather(*(close_within(ws) for ws in conns + back))


# -- run ----------------------------------------------------------------------------------------


async def restart_under_herd(
    server: LabServer, admission: Admission, members: Iterable[asyncio.Task[Any]], *, downtime: float, deadline: float
) -> tuple[float, Restart]:
    """Restart ``server`` while the herd's ``members`` run; wait until they are back, or ``deadline`` s from the outage.

    Returns when the outage began and the :class:`~wslab.runtime.server.Restart`, in timeline seconds.
    """
    timeline = server.lab.timeline
    members = list(members)
    await asyncio.sleep(0)  # let every member start waiting for its connection to close
    outage_at = timeline.now()
    admission.arm()
    restart = await server.restart(downtime=downtime)
    remaining = outage_at + deadline - timeline.now()
    if members and remaining > 0:
        await asyncio.wait(members, timeout=remaining)
    return outage_at, restart


# -- analysis -----------------------------------------------------------------------------------


def herd_result(log: HerdLog, n: int, *, outage_at: float, back_at: float, label: str = "") -> HerdResult:
    """A herd's :class:`~wslab.studies.simulate.HerdResult`, from its log. No I/O.

    ``outage_at`` and ``back_at`` (when the server listened again) are on the
    log's clock; every time in the result is in seconds since ``outage_at``.
    A client that never reconnected stays ``nan``.
    """
    result = HerdResult(n=n, back_at=back_at - outage_at, reconnected=[math.nan] * n, lost=[math.nan] * n,
                        label=label)
    for client, at in log.lost_at.items():
        result.lost[client] = at - outage_at
    for attempt in sorted(log.attempts, key=lambda a: a.due):
        result.attempt_times.append(attempt.due - outage_at)
        result.attempt_ok.append(int(attempt.connected))
        result.lags.append(attempt.started - attempt.due)
        result.durations.append(attempt.ended - attempt.started)
        if attempt.connected:
            result.reconnected[attempt.client] = attempt.ended - outage_at
    result.accepted_at.extend(sorted(at - outage_at for at in log.accepted))
    return result


async def run_herd(
    lab: Lab,
    n: int,
    policy: dict[str, Any] | Callable[[int], Delays],
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
        policy: Keyword arguments for :class:`~wslab.clients.backoff.Backoff`. Client ``i``
            draws from its own generator, seeded with ``client_seed(seed, i)``.
            Or a function that makes client ``i``'s delays (a
            :class:`~wslab.clients.backoff.Delays`), e.g. from your own code.
        downtime: Seconds between closing the listening socket and listening again.
        accept_rate: The server's capacity in connections per second
            (:class:`~wslab.studies.simulate.AcceptLimit`); more get HTTP 503.
        burst: The capacity's burst size (default: 100 ms worth).
        open_timeout: Each attempt's deadline for the opening handshake.
        deadline: Give up waiting for the herd after this many seconds from the
            outage (clients still out stay ``nan`` in the result).

    Returns:
        A :class:`~wslab.studies.simulate.HerdResult`, times since the restart began.
    """
    raise_fd_limit(2 * n + 256)
    if callable(policy):
        delays = policy
    else:
        def delays(i: int) -> Delays:
            return Backoff(**policy, seed=client_seed(seed, i))
    log = HerdLog(clock=lab.timeline.now)
    admission = Admission(AcceptLimit(accept_rate, burst), log)
    server = await serve_herd(lab, n, admission, name=name)
    conns: list[ClientConnection] = []
    members: list[asyncio.Task[Any]] = []
    try:
        conns = await connect_clients(server.url, n, timeout=10 + n / 50)
        members = [
            asyncio.create_task(herd_member(Member(i, server.url, delays(i), open_timeout), ws, log))
            for i, ws in enumerate(conns)
        ]
        outage_at, restart = await restart_under_herd(server, admission, members, downtime=downtime,
                                                      deadline=deadline)
    finally:
        for task in members:
            task.cancel()
        await asyncio.gather(*members, return_exceptions=True)
        back = [task.result() for task in members if not task.cancelled() and task.exception() is None]
        await asyncio.gather(*(close_within(ws) for ws in conns + back))
        await lab.close(name)
    return herd_result(log, n, outage_at=outage_at, back_at=restart.up_at, label=label)
