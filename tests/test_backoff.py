"""Property tests of every backoff policy in wslab.clients.backoff."""

import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wslab.clients.backoff import JITTERS, STRATEGIES, Backoff

policies = st.fixed_dictionaries({
    "min_delay": st.floats(0.001, 5.0),
    "cap_ratio": st.floats(1.0, 1000.0),
    "factor": st.floats(1.0, 4.0),
    "jitter": st.sampled_from(JITTERS),
    "seed": st.integers(0, 2**32),
})


def make(p: dict, **overrides) -> Backoff:
    kwargs = {"min_delay": p["min_delay"], "max_delay": p["min_delay"] * p["cap_ratio"],
              "factor": p["factor"], "jitter": p["jitter"], "seed": p["seed"]}
    kwargs.update(overrides)
    return Backoff(**kwargs)


@given(policies, st.integers(1, 200))
def test_delays_lie_within_zero_and_cap(p, count):
    backoff = make(p)
    for _ in range(count):
        assert 0.0 <= backoff.next() <= backoff.max_delay


@given(policies)
def test_same_seed_same_sequence(p):
    a, b = make(p), make(p)
    assert [a.next() for _ in range(50)] == [b.next() for _ in range(50)]


@given(policies)
def test_attempt_counts_and_reset_restarts(p):
    backoff = make(p)
    first = [backoff.next() for _ in range(20)]
    assert backoff.attempt == 20
    backoff.reset()
    assert backoff.attempt == 0
    if p["jitter"] == "none":
        assert [backoff.next() for _ in range(20)] == first
    else:  # same distribution again: the first delay is back to at most the first ceiling
        assert backoff.next() <= max(backoff.ceiling(0), backoff.min_delay * 2 * backoff.factor)


@settings(max_examples=30)
@given(policies.filter(lambda p: p["jitter"] != "none" and p["cap_ratio"] >= 2 and p["factor"] >= 1.5))
def test_jitter_stays_spread_at_the_cap(p):
    """Many draws after reaching the cap are not all equal and spread over a good part of it."""
    backoff = make(p)
    while backoff.ceiling(backoff.attempt) < backoff.max_delay:
        backoff.next()
    for _ in range(50):
        backoff.next()
    draws = [backoff.next() for _ in range(300)]
    assert len(set(draws)) > 250
    spread = max(draws) - min(draws)
    # full: [0, cap]; equal: [cap/2, cap]; decorrelated: [min, cap] (cap >= 2 * min here)
    assert spread > 0.25 * backoff.max_delay
    assert statistics.pstdev(draws) > 0.05 * backoff.max_delay
    # ... and not piled up exactly at the cap, as when the draw itself is clipped
    assert draws.count(backoff.max_delay) < 5


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(JITTERS), st.floats(1.5, 3.0))
def test_expected_delay_grows_until_the_cap(jitter, factor):
    """The mean delay over many seeds is non-decreasing in the attempt number, and reaches the cap's level."""
    min_delay, max_delay, seeds, attempts = 0.1, 10.0, 1000, 25
    sums = [0.0] * attempts
    for seed in range(seeds):
        backoff = Backoff(min_delay=min_delay, max_delay=max_delay, factor=factor, jitter=jitter, seed=seed)
        for n in range(attempts):
            sums[n] += backoff.next()
    means = [s / seeds for s in sums]
    for n in range(attempts - 1):
        # generous: at the cap the mean of 1,000 draws still wanders by a few percent
        assert means[n + 1] >= means[n] - 0.08 * max_delay, (n, means)
    # well below the cap at first, near its steady level at the end
    if jitter == "decorrelated":
        # it keeps wandering back towards min_delay: its steady mean lies below cap / 2
        assert means[0] < 0.05 * max_delay
        assert 0.1 * max_delay < means[-1] < 0.6 * max_delay
        return
    steady = {"none": max_delay, "full": max_delay / 2, "equal": 0.75 * max_delay}[jitter]
    assert means[0] < 0.2 * steady
    assert 0.8 * steady < means[-1] < 1.2 * steady


def test_none_is_plain_exponential_and_defaults_are_reconnecting_websocket():
    backoff = Backoff()
    assert [backoff.next() for _ in range(4)] == [1.0, 1.5, 2.25, 3.375]
    for _ in range(20):
        last = backoff.next()
    assert last == 30.0


def test_huge_attempt_numbers_do_not_overflow():
    backoff = Backoff(factor=4.0)
    backoff.attempt = 10_000
    assert backoff.next() == 30.0


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="jitter must be one of"):
        Backoff(jitter="gaussian")
    with pytest.raises(ValueError, match="min_delay <= max_delay"):
        Backoff(min_delay=5, max_delay=1)
    with pytest.raises(ValueError, match="factor"):
        Backoff(factor=0.5)


def test_strategies_are_usable():
    for kwargs in STRATEGIES.values():
        Backoff(min_delay=0.05, max_delay=2.0, **kwargs).next()


def test_each_strategy_name_means_one_thing():
    # "none" names a jitter (no randomness) and never a strategy; no backoff at all is "fixed".
    assert "none" in JITTERS and "none" not in STRATEGIES
    assert set(STRATEGIES) == {"fixed", "exponential", "full", "equal", "decorrelated"}
    fixed = Backoff(min_delay=0.1, max_delay=2.0, **STRATEGIES["fixed"])
    assert [fixed.next() for _ in range(5)] == [0.1] * 5
    exponential = Backoff(min_delay=0.1, max_delay=2.0, factor=2.0, **STRATEGIES["exponential"])
    assert [exponential.next() for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    for name in ("full", "equal", "decorrelated"):
        assert STRATEGIES[name]["jitter"] == name
