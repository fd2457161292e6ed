"""The AWS study's own model: N clients contend for one row, with optimistic concurrency.

The AWS Architecture Blog post "Exponential Backoff And Jitter" (Marc Brooker,
2015) compared backoff strategies with a small simulator, published as
``aws-samples/aws-arch-backoff-simulator`` (``src/backoff_simulator.py``). This
is that model, written again on the lab's :class:`~wslab.clients.backoff.Backoff`:

- one server holds one row with a version number; ``n`` clients each want to
  update it once, all starting at t = 0;
- a client reads the version (a request, a reply), then writes on condition
  that the version is still the one it read (a request, a reply). If another
  client wrote in between, the write fails: the client waits its backoff
  delay, and reads again;
- every message takes ``|N(10 ms, 2 ms)|`` (:class:`Network`);
- the study's two figures: **calls**, the conditional writes the server
  received (its work; reads are not counted, and there is one per write), and
  the **completion time**, when the last client's write succeeded.

There is no downtime and no capacity limit: retrying together costs only
contention (two writers who read the same version: one of them fails). That
is the difference from :mod:`wslab.studies.simulate`, whose server is down for
a while and admits a limited number of connections per second.

:data:`STUDY_POLICIES` gives the study's five strategies (base 5 ms, cap 2 s) as
:class:`Backoff` arguments. The simulator counts a client's first retry as
attempt 1, so its exponential delays are ``min(cap, 5 ms * 2**n)`` for ``n = 1,
2, ...``: ``min_delay`` is 10 ms here. Its decorrelated jitter,
``min(cap, uniform(base, 3 * previous))``, is :class:`Backoff`'s with factor 1.5,
except at the cap, where the study clips the draw (two thirds of the delays
become the cap) and :class:`Backoff` clips the upper bound. "No backoff" retries at
once, after only the network's delay.

Seeded and pure: same arguments, same numbers; no sockets, no clock.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..clients.backoff import Backoff

__all__ = ["CAP", "BASE", "NETWORK", "STUDY_POLICIES", "Contention", "Network", "Study", "contend", "study"]

BASE, CAP = 0.005, 2.0  # seconds: the study's 5 ms and 2,000 ms

# The study's five strategies, as Backoff arguments (see the module's docstring for how they map).
STUDY_POLICIES: dict[str, dict[str, Any]] = {
    "fixed": {"min_delay": 0.0, "max_delay": CAP, "factor": 1.0, "jitter": "none"},  # the study's "None": no wait
    "exponential": {"min_delay": 2 * BASE, "max_delay": CAP, "factor": 2.0, "jitter": "none"},
    "full": {"min_delay": 2 * BASE, "max_delay": CAP, "factor": 2.0, "jitter": "full"},
    "equal": {"min_delay": 2 * BASE, "max_delay": CAP, "factor": 2.0, "jitter": "equal"},
    "decorrelated": {"min_delay": BASE, "max_delay": CAP, "factor": 1.5, "jitter": "decorrelated"},
}


@dataclass(frozen=True)
class Network:
    """How long one message takes: ``|N(mean, sd)|`` seconds (the study's model of a network)."""

    mean: float = 0.010
    sd: float = 0.002

    def delay(self, rng: random.Random) -> float:
        return abs(rng.gauss(self.mean, self.sd))


NETWORK = Network()

# What arrives, and where: the four messages of one read-then-write attempt.
_READ, _VERSION, _WRITE, _RESULT = range(4)


@dataclass
class Contention:
    """One run of the model: ``n`` clients, each updating the row once.

    Attributes:
        n: Clients.
        calls: Conditional writes the server received (the study's work).
        failures: Those that failed: another client had written since the read.
        completion_time: When the last client's write succeeded, in seconds.
        done_at: For each client, when its write succeeded.
        label: The strategy, for tables and plots.
    """

    n: int
    calls: int = 0
    failures: int = 0
    completion_time: float = 0.0
    done_at: list[float] = field(default_factory=list)
    label: str = ""


def contend(
    n: int, policy: dict[str, Any], *, seed: int = 0, network: Network = NETWORK, label: str = ""
) -> Contention:
    """Run the model once: ``n`` clients retrying with ``Backoff(**policy)``, all drawing from one seeded generator."""
    if n < 1:
        raise ValueError(f"need at least one client, got {n}")
    rng = random.Random(seed)
    backoffs = [Backoff(**policy, rng=rng) for _ in range(n)]
    mean, sd, gauss = network.mean, network.sd, rng.gauss  # |N(mean, sd)|, inlined: the loop runs 100,000s of times
    result = Contention(n=n, done_at=[math.nan] * n, label=label)
    version = 0  # the row's
    seen = [0] * n  # the version each client read last
    won = [False] * n  # whether each client's last write succeeded
    order = itertools.count()  # ties in time keep the order they were sent in: the same run every time
    queue = [(abs(gauss(mean, sd)), next(order), _READ, i) for i in range(n)]
    heapq.heapify(queue)
    push, pop = heapq.heappush, heapq.heappop
    while queue:
        now, _, what, i = pop(queue)
        if what == _READ:  # at the server: answer with the current version
            seen[i] = version
            push(queue, (now + abs(gauss(mean, sd)), next(order), _VERSION, i))
        elif what == _VERSION:  # at the client: write, on condition the version is still the one it read
            push(queue, (now + abs(gauss(mean, sd)), next(order), _WRITE, i))
        elif what == _WRITE:  # at the server: the conditional write
            result.calls += 1
            won[i] = seen[i] == version
            if won[i]:
                version += 1
            else:
                result.failures += 1
            push(queue, (now + abs(gauss(mean, sd)), next(order), _RESULT, i))
        elif won[i]:  # the result, at the client: done
            result.done_at[i] = now
            result.completion_time = now
        else:  # failed: wait, then read again (the wait and the request's trip, as in the study)
            push(queue, (now + abs(gauss(mean, sd)) + backoffs[i].next(), next(order), _READ, i))
    return result


@dataclass
class Study:
    """The study's two figures for each strategy and herd size, averaged over ``runs`` runs.

    ``calls[name][k]`` and ``completion[name][k]`` (seconds) are for ``clients[k]`` clients.
    """

    clients: list[int]
    runs: int
    calls: dict[str, list[float]] = field(default_factory=dict)
    completion: dict[str, list[float]] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One table row per strategy: its calls and completion time at each herd size."""
        return [
            {"strategy": name,
             **{f"calls, N={n}": round(c) for n, c in zip(self.clients, self.calls[name], strict=True)},
             **{f"ms, N={n}": round(t * 1000) for n, t in zip(self.clients, self.completion[name], strict=True)}}
            for name in self.calls
        ]


def study(
    clients: Sequence[int], policies: dict[str, dict[str, Any]] | None = None, *, runs: int = 100, seed: int = 0,
    network: Network = NETWORK,
) -> Study:
    """Run the model ``runs`` times for each herd size in ``clients`` and each strategy, and average, as the study did.

    The study ran 100 runs per point. Run ``k`` of every strategy and herd size uses seed ``seed + k``.
    """
    if runs < 1:
        raise ValueError(f"need at least one run, got {runs}")
    policies = STUDY_POLICIES if policies is None else policies
    result = Study(clients=list(clients), runs=runs)
    for name, policy in policies.items():
        result.calls[name], result.completion[name] = [], []
        for n in clients:
            trials = [contend(n, policy, seed=seed + k, network=network) for k in range(runs)]
            result.calls[name].append(sum(t.calls for t in trials) / runs)
            result.completion[name].append(sum(t.completion_time for t in trials) / runs)
    return result
