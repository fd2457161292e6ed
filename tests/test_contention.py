"""The AWS study's model (wslab.studies.contention), without sockets: pure, seeded, and the study's own."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from wslab.clients.backoff import Backoff
from wslab.studies.contention import BASE, CAP, NETWORK, STUDY_POLICIES, Network, contend, study


def test_one_client_writes_once_after_four_trips():
    result = contend(1, STUDY_POLICIES["full"], seed=3)
    assert (result.calls, result.failures) == (1, 0)
    assert result.completion_time == result.done_at[0]
    assert 0.02 < result.completion_time < 0.06  # read, its reply, write, its reply: about 4 x 10 ms


@pytest.mark.parametrize("name", list(STUDY_POLICIES))
def test_every_client_writes_exactly_once(name):
    result = contend(30, STUDY_POLICIES[name], seed=1, label=name)
    assert result.calls - result.failures == 30  # the row's version went up once per client
    assert result.failures > 0  # they contended
    assert all(math.isfinite(t) for t in result.done_at)
    assert result.completion_time == max(result.done_at)
    assert result.label == name


def test_the_same_seed_gives_the_same_run():
    a, b = contend(20, STUDY_POLICIES["equal"], seed=5), contend(20, STUDY_POLICIES["equal"], seed=5)
    assert (a.calls, a.done_at) == (b.calls, b.done_at)
    assert contend(20, STUDY_POLICIES["equal"], seed=6).done_at != a.done_at


def test_clients_in_lock_step_succeed_one_a_round():
    # A network without variance and no backoff: all three read the same version every round, one write wins.
    result = contend(3, STUDY_POLICIES["fixed"], network=Network(mean=0.01, sd=0.0))
    assert (result.calls, result.failures) == (3 + 2 + 1, 2 + 1)
    assert sorted(result.done_at) == pytest.approx([0.04, 0.08, 0.12])  # four 10 ms trips a round


def test_the_network_delay_is_the_absolute_value_of_a_normal():
    rng = random.Random(1)
    delays = [NETWORK.delay(rng) for _ in range(20_000)]
    assert min(delays) >= 0
    assert statistics.mean(delays) == pytest.approx(0.010, abs=0.0002)
    assert statistics.stdev(delays) == pytest.approx(0.002, abs=0.0002)


def test_the_policies_are_the_studys_formulas():
    base, cap = BASE, CAP
    backoff = Backoff(**STUDY_POLICIES["exponential"])
    # the study: min(cap, base * 2**n) for the n-th retry, n = 1, 2, ...
    assert [backoff.next() for _ in range(12)] == [min(cap, base * 2**n) for n in range(1, 13)]
    assert Backoff(**STUDY_POLICIES["fixed"]).next() == 0.0  # no backoff: retry at once
    rng = random.Random(2)
    for _ in range(200):
        first = Backoff(**STUDY_POLICIES["decorrelated"], rng=rng).next()
        assert base <= first <= 3 * base  # min(cap, uniform(base, previous * 3)), previous = base at first
        full = Backoff(**STUDY_POLICIES["full"], rng=rng).next()
        assert 0 <= full <= 2 * base


def test_the_study_averages_runs_with_consecutive_seeds():
    policies = {"full": STUDY_POLICIES["full"]}
    result = study([5, 10], policies, runs=3, seed=7)
    expected = [statistics.mean(contend(n, policies["full"], seed=7 + k).calls for k in range(3)) for n in (5, 10)]
    assert result.calls["full"] == pytest.approx(expected)
    assert result.clients == [5, 10] and result.runs == 3
    assert [row["strategy"] for row in result.rows()] == ["full"]


def test_the_studys_findings_hold_at_a_small_scale():
    result = study([10, 20, 30], runs=3, seed=1)
    work = {name: sum(calls) for name, calls in result.calls.items()}
    took = {name: sum(seconds) for name, seconds in result.completion.items()}
    jitters = ("full", "equal", "decorrelated")
    assert took["exponential"] > 3 * max(took[name] for name in jitters)  # by far the slowest
    assert work["exponential"] > max(work[name] for name in jitters)
    assert min(work, key=work.get) == "full"


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="at least one client"):
        contend(0, STUDY_POLICIES["full"])
    with pytest.raises(ValueError, match="at least one run"):
        study([10], runs=0)
