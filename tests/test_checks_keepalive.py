"""Notebook 06's check: the verdicts and hints (pure), then the real chains with a right and a nearly right answer."""

from __future__ import annotations

import asyncio

import pytest

from wslab import LabError
from wslab.checks.keepalive import CHAINS, ChainRun, _interval, check_ping_interval, judge

NGINX_PROXY, THREE, MOBILE, CONTROL = CHAINS


def test_the_chains_are_what_the_notebook_says():
    assert [c.name for c in CHAINS] == ["nginx+proxy", "three hops", "mobile link", "control"]
    assert THREE.timeouts == [2.0, 0.9, 1.5] and MOBILE.timeouts == [1.2] and MOBILE.delay == 0.15
    assert CONTROL.timeouts == []


def test_the_function_is_called_once_and_its_errors_are_one_line():
    assert _interval(lambda t: min(t) / 2, [2.0, 1.0]) == (0.5, None)
    assert _interval(lambda t: None, [1.0]) == (None, None)
    try:  # Python's own message: "min() arg is an empty sequence" on 3.11, "... iterable argument is empty" on 3.12+
        min([])
    except ValueError as exc:
        empty = str(exc)
    assert _interval(lambda t: min(t), []) == (None, f"choose_ping_interval([]) raised ValueError: {empty}")
    for bad in ("0.5", 0, -1, float("nan"), True):
        interval, error = _interval(lambda t, bad=bad: bad, [1.0])
        assert interval is None and "return seconds between pings" in error, bad

    async def asynchronous(t):
        return 1.0

    assert "is async" in _interval(asynchronous, [1.0])[1]


def run(chain, answer, lived=None, **kw) -> ChainRun:
    watched = 3 * min(chain.timeouts) if chain.timeouts else 2.0
    return ChainRun(chain, answer=answer, lived=lived, watched=watched, **kw)


def test_a_connection_alive_at_the_end_with_a_sensible_interval_passes():
    case = judge(run(THREE, 0.45))
    assert case.passed and "0.50x the smallest timeout" in case.message and "3 x the 0.9 s timeout" in case.message
    assert judge(run(CONTROL, None)).passed and judge(run(CONTROL, 20.0)).passed


@pytest.mark.parametrize(
    ("the_run", "hint"),
    [
        (run(THREE, None, lived=0.9), "None means no keepalive"),
        (run(MOBILE, 1.2, lived=1.05), "races the 1.2 s timeout and loses"),
        (run(THREE, 2.0, lived=0.9), "not below the smallest idle timeout on the path, 0.9 s"),
        (run(THREE, 1.0, lived=0.9), "below [2.0, 1.5] but not below the smallest"),
        (run(MOBILE, 1.08, lived=1.06), "delays on the path (here 0.15 s each way)"),
        (run(THREE, 0.05), "18 pings per 0.9 s timeout, more than 10"),  # alive, but absurd
        (run(CONTROL, 0.1), "more than one ping a second for nothing"),
        (run(CONTROL, None, error="choose_ping_interval([]) raised ValueError: min() arg is an empty sequence"),
         "nothing on this path cuts idle connections"),
        (run(THREE, None, error="choose_ping_interval([2.0, 0.9, 1.5]) raised KeyError: 0"), "raised KeyError: 0"),
        (ChainRun(THREE, setup_error="OSError: address in use"), "could not build this chain"),
    ],
)
def test_each_mistake_gets_its_own_hint(the_run, hint):
    case = judge(the_run)
    assert not case.passed and hint in case.message, case.message
    assert "\n" not in case.message


async def test_not_a_function_is_one_line():
    with pytest.raises(LabError, match="needs your function choose_ping_interval"):
        await check_ping_interval(0.5)


@pytest.mark.slow
async def test_half_the_smallest_timeout_passes_every_real_chain_and_nine_tenths_fails_only_with_delay():
    # Both answers through the real chains at once: the chains are idle connections, so the two
    # checks do not compete for the CPU, and the pair costs one watch instead of two.
    half, nine_tenths = await asyncio.gather(
        check_ping_interval(lambda timeouts: min(timeouts) / 2 if timeouts else 20.0),
        check_ping_interval(lambda timeouts: 0.9 * min(timeouts) if timeouts else None),
    )
    assert half.passed, str(half)
    assert nine_tenths.failed == ["mobile link"], str(nine_tenths)
