"""A thundering herd, simulated: N clients lose the server at once and reconnect.

No sockets: a discrete-event simulation on a heap of "next attempt" times,
with the delays computed by the same :class:`~wslab.clients.backoff.Backoff` the real
clients use, and the server's capacity modelled by the same
:class:`AcceptLimit` the real herd server (:mod:`wslab.studies.herd`) applies.

The model, for each client:

1. at t = 0 the server goes away; the client waits ``backoff.next()``;
2. it attempts to connect. Before ``downtime`` the attempt fails (connection
   refused). After it, the server admits the attempt if its accept capacity
   allows (a token bucket: ``accept_rate`` per second, bursts of ``burst``),
   else it answers "busy" (HTTP 503) and the attempt fails;
3. after a failure the client waits ``backoff.next()`` again and goes to 2.

That is the contention model of the AWS study "Exponential Backoff And
Jitter": every attempt costs the server work, only some of them succeed.
Attempts take no time here: the model leaves out how long a handshake takes
and the CPU each retry costs the machine (notebook 05 shows where that shows).
"""

from __future__ import annotations

import heapq
import math
import random
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..clients.backoff import Backoff
from ..servers.admission import AcceptLimit  # the real servers' token bucket: the model uses the same one

__all__ = ["AcceptLimit", "HerdResult", "busiest", "client_seed", "simulate"]


_EPSILON = 1e-9  # of a bin: float sums that mean to land on a bin's boundary count in the bin that starts there


@dataclass
class HerdResult:
    """What happened to a herd after an outage, simulated or real. Times in seconds since the outage began.

    Attributes:
        n: Clients in the herd.
        back_at: When the server was accepting connections again.
        attempt_times: When each reconnection attempt was due: the client's
            delay ran out. The model's attempts happen then and take no time;
            a real client starts its attempt when its event loop gets to it
            (``lags``).
        attempt_ok: For each attempt, 1 if it connected, 0 if it failed.
        reconnected: For each client, when it was connected again (``nan`` if never).
        lost: For each client, when it noticed the connection was gone.
        accepted_at: When the server admitted each connection that it accepted.
        lags: For each attempt, how long after it was due it really started
            (real runs only): the time its event loop was busy with others.
        durations: How long each attempt took from its start until it failed
            or connected (real runs only).
        label: What was run, for plot legends.
    """

    n: int
    back_at: float
    attempt_times: array[float] = field(default_factory=lambda: array("d"))
    attempt_ok: bytearray = field(default_factory=bytearray)
    reconnected: list[float] = field(default_factory=list)
    lost: list[float] = field(default_factory=list)
    accepted_at: array[float] = field(default_factory=lambda: array("d"))
    lags: array[float] = field(default_factory=lambda: array("d"))
    durations: array[float] = field(default_factory=lambda: array("d"))
    label: str = ""

    @property
    def total_attempts(self) -> int:
        return len(self.attempt_times)

    @property
    def all_back(self) -> bool:
        return not np.isnan(self.reconnected).any()

    @property
    def completion_time(self) -> float:
        """When the last client was back (``inf`` if some never came back)."""
        return max(self.reconnected, default=0.0) if self.all_back else math.inf

    def per_bin(self, bin: float = 0.1, until: float | None = None, *, ok: bool | None = None) -> np.ndarray:
        """Attempts started in each ``bin``-second interval from 0 (only the successful ones if ``ok=True``)."""
        times = np.frombuffer(self.attempt_times, dtype=float) if len(self.attempt_times) else np.zeros(0)
        if ok is not None:
            times = times[np.frombuffer(self.attempt_ok, dtype=np.uint8) == int(ok)]
        end = until if until is not None else (float(np.max(times)) if times.size else 0.0)
        # A time a hair below a boundary is a float sum meant to land on it (0.1 s x 6 is 0.5999...): nudge it over.
        bins = int(np.floor(end / bin + _EPSILON)) + 1
        index = np.floor(times / bin + _EPSILON).astype(int)
        return np.bincount(index[index < bins], minlength=bins)

    def peak_attempts(self, window: float = 0.1) -> int:
        """The most attempts due within any ``window`` seconds once the server was back: its busiest moment.

        A sliding window (see :func:`busiest`), so a wave that straddles two of
        :meth:`per_bin`'s fixed bins still counts whole.
        """
        return busiest(self.attempt_times, window, since=self.back_at)

    def peak_accepts(self, window: float = 1.0) -> int:
        """The most connections the server admitted within any ``window`` seconds (a count, not a rate)."""
        return busiest(self.accepted_at, window)

    def fraction_back(self, times: Sequence[float] | np.ndarray) -> np.ndarray:
        """For each time, the fraction of clients reconnected by then."""
        done = np.sort(np.asarray(self.reconnected, dtype=float))
        return np.searchsorted(done, np.asarray(times, dtype=float), side="right") / self.n

    def distance(self, other: HerdResult) -> float:
        """The largest gap between this herd's fraction reconnected and ``other``'s, at any moment (0 to 1)."""
        moments = np.concatenate([np.asarray(self.reconnected), np.asarray(other.reconnected)])
        moments = np.sort(moments[~np.isnan(moments)])
        if not moments.size:
            return 0.0
        return float(np.abs(self.fraction_back(moments) - other.fraction_back(moments)).max())

    def summary(self) -> dict[str, Any]:
        """The figures a notebook table shows, rounded."""
        return {
            "strategy": self.label,
            "clients": self.n,
            "attempts": self.total_attempts,
            "all back": self.all_back,
            "server back at (s)": round(self.back_at, 2),
            "all back at (s)": round(self.completion_time, 2),
            "busiest 100 ms once back (attempts due)": self.peak_attempts(),
            "busiest second (accepts)": self.peak_accepts(),
        }


def simulate(
    n: int,
    policy: dict[str, Any],
    *,
    downtime: float,
    accept_rate: float,
    burst: float | None = None,
    seed: int = 0,
    replay: bool = False,
    lost_at: list[float] | None = None,
    horizon: float = 3600.0,
    label: str = "",
) -> HerdResult:
    """Simulate ``n`` clients reconnecting with ``Backoff(**policy)`` after an outage of ``downtime`` seconds.

    Args:
        n: Clients.
        policy: Keyword arguments for :class:`~wslab.clients.backoff.Backoff`
            (``min_delay``, ``max_delay``, ``factor``, ``jitter``).
        downtime: When the server listens again, in seconds after the outage began.
        accept_rate: The server's capacity, connections per second (see :class:`AcceptLimit`).
        burst: The capacity's burst size (default: 100 ms worth).
        seed: Seeds the one random generator all clients draw from: same seed, same result.
        replay: Give client ``i`` its own generator seeded like
            :func:`wslab.studies.herd.run_herd` does, so it draws the same delays as its
            real twin (uses memory: for small herds).
        lost_at: When each client noticed the loss (default: all at 0). Pass a
            real run's ``lost`` to replay it.
        horizon: Stop simulating after this many seconds (clients still out stay ``nan``).
    """
    if replay:
        backoffs = [Backoff(**policy, seed=client_seed(seed, i)) for i in range(n)]
    else:
        rng = random.Random(seed)
        backoffs = [Backoff(**policy, rng=rng) for _ in range(n)]
    limit = AcceptLimit(accept_rate, burst)
    limit.refill(now=downtime)
    lost = list(lost_at) if lost_at is not None else [0.0] * n
    result = HerdResult(n=n, back_at=downtime, reconnected=[math.nan] * n, lost=lost, label=label)
    times, oks, reconnected, accepted = result.attempt_times, result.attempt_ok, result.reconnected, result.accepted_at

    # While the server is down, clients don't affect each other: every attempt is
    # refused. So run each client alone up to its first attempt after ``downtime``.
    heap = []
    for i, backoff in enumerate(backoffs):
        t = lost[i] + backoff.next()
        while t < downtime and t <= horizon:
            times.append(t)
            oks.append(0)
            t += backoff.next()
        heap.append((t, i))
    # From then on they compete for the server's capacity: take attempts in time order.
    heapq.heapify(heap)
    admit = limit.admit
    while heap:
        t, i = heap[0]  # the earliest next attempt
        if t > horizon:
            break
        times.append(t)
        if admit(t):
            oks.append(1)
            reconnected[i] = t
            accepted.append(t)
            heapq.heappop(heap)
        else:
            oks.append(0)
            heapq.heapreplace(heap, (t + backoffs[i].next(), i))  # pop and push in one step
    return result


def busiest(times: Sequence[float] | array[float], window: float, *, since: float = -math.inf) -> int:
    """The most of ``times`` (seconds, any order) that fall within any ``window`` seconds, counting those >= ``since``.

    ``window`` is half-open: times ``t`` and ``t + window`` are not in the same
    window, nor are times a nanosecond short of that (float sums: 0.1 s x 6 is 0.5999...).
    """
    t = np.sort(np.asarray(times, dtype=float))
    t = t[t >= since]
    if not t.size:
        return 0
    ends = np.searchsorted(t, t + window - 1e-9, side="left")  # for each time, the first one a window later
    return int(np.max(ends - np.arange(t.size)))


def client_seed(seed: int, i: int) -> int:
    """The seed of client ``i``'s generator in a herd run with ``seed``."""
    return seed * 1_000_003 + i
