"""Notebook 05's check: each mistake gets its own hint, and the reference solution passes.

The four direct cases (:func:`sample` and the ``judge_*`` verdicts) and the
herd's verdict are tested without sockets; a few whole checks run for real,
with real herds of 200 clients, to show that the herd case tells full jitter
from no jitter, and that a function that never returns a delay is stopped
before any herd runs.
"""

from __future__ import annotations

import random
import runpy
import time
from pathlib import Path

import pytest

from wslab.checks.jitter import (
    HERD_CLIENTS,
    FunctionBackoff,
    HerdRun,
    check_full_jitter,
    judge_cap,
    judge_growth,
    judge_herd,
    judge_range,
    judge_seeded,
    sample,
)

SOLUTION = Path(__file__).resolve().parent.parent / "notebooks" / "solutions" / "05-jitter.py"


def full(attempt, base, cap, rng):
    return rng.uniform(0, min(cap, base * 2**attempt))


def no_jitter(attempt, base, cap, rng):  # the exercise as committed
    return min(cap, base * 2**attempt)


def socket_io(attempt, base, cap, rng):  # jitter first, then the cap
    return min(cap, base * 2**attempt * rng.uniform(0.5, 1.5))


def judged(delay) -> dict:
    samples = sample(delay)
    return {case.name: case for case in (judge_range(samples), judge_growth(samples), judge_seeded(samples),
                                         judge_cap(samples))}


# -- without sockets --------------------------------------------------------------


def test_full_jitter_passes_the_four_direct_cases():
    cases = judged(full)
    assert all(case.passed for case in cases.values()), cases


def test_no_jitter_fails_only_the_cap_case_with_the_no_jitter_hint():
    cases = judged(no_jitter)
    assert [name for name, case in cases.items() if not case.passed] == ["cap"]
    assert cases["cap"].message.startswith("no jitter: every client waits the same delay")


@pytest.mark.parametrize(("delay", "case", "hint"), [
    (socket_io, "cap", "Socket.IO's mistake: jitter first, then cap"),
    (lambda attempt, base, cap, rng: min(cap, rng.uniform(0, 1.25 * min(cap, base * 2**attempt))), "cap",
     "exactly the cap"),  # the draw clipped by the cap: a fifth of the clients in step
    (lambda attempt, base, cap, rng: (c := min(cap, base * 2**attempt)) / 2 + rng.uniform(0, c / 2), "cap",
     "equal jitter"),
    (lambda attempt, base, cap, rng: rng.uniform(0, base * 2**attempt), "range", "delays above the cap"),
    (lambda attempt, base, cap, rng: rng.uniform(-base, min(cap, base * 2**attempt)), "range", "negative delays"),
    (lambda attempt, base, cap, rng: random.uniform(0, min(cap, base * 2**attempt)), "seeded",
     "draw only from the rng you're given"),
    (lambda attempt, base, cap, rng: rng.uniform(0, cap), "growth", "longer than base"),
    (lambda attempt, base, cap, rng: rng.uniform(0, base), "growth", "don't grow with the attempt"),
])
def test_each_mistake_has_its_own_hint(delay, case, hint):
    cases = judged(delay)
    assert not cases[case].passed
    assert hint in cases[case].message, cases[case].message


def test_the_hints_for_different_mistakes_differ():
    at_cap = {judged(f)["cap"].message.split(":")[0] for f in (no_jitter, socket_io)}
    assert len(at_cap) == 2


@pytest.mark.parametrize(("delay", "expected"), [
    (lambda attempt, base, cap, rng: {}[attempt], "full_jitter(0, 0.1, 2, rng) raised KeyError: 0"),
    (lambda attempt, base, cap, rng: "0.1", "returned '0.1': return the delay in seconds, a number"),
    (lambda attempt, base, cap, rng: None, "returned None"),
    (lambda attempt, base, cap, rng: float("nan"), "returned nan"),
    (lambda attempt, base, cap, rng: True, "returned True"),
    (lambda attempt, base, cap, rng: time.sleep(0.02) or 0.1, "took 2"),
])
def test_a_broken_function_is_one_line_in_every_direct_case(delay, expected):
    cases = judged(delay)
    for case in cases.values():
        assert not case.passed
        assert expected in case.message and "\n" not in case.message, case.message


def test_an_async_function_is_named_and_never_left_unawaited(recwarn):
    async def delay(attempt, base, cap, rng):
        return 0.1

    cases = judged(delay)
    assert all("is async: make it a plain def" in case.message for case in cases.values())
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


def test_a_slow_function_is_given_up_on_quickly():
    started = time.perf_counter()
    judged(lambda attempt, base, cap, rng: time.sleep(0.02) or 0.1)
    assert time.perf_counter() - started < 1.0  # three slow calls, not thousands


def test_the_herd_verdict():
    good = HerdRun(peak=25, baseline=200, back=HERD_CLIENTS, attempts=300)
    assert judge_herd(good).passed
    assert judge_herd(HerdRun(peak=50, baseline=200, back=HERD_CLIENTS)).passed  # exactly 1/4
    storm = judge_herd(HerdRun(peak=51, baseline=200, back=HERD_CLIENTS))
    assert not storm.passed and "at most 50 (25%) allowed" in storm.message
    late = judge_herd(HerdRun(peak=20, baseline=200, back=150))
    assert not late.passed and "only 150 of 200 clients were back" in late.message
    error = judge_herd(HerdRun(error="full_jitter(3, ...) raised ZeroDivisionError: division by zero"))
    assert not error.passed and error.message == "in the herd, full_jitter(3, ...) raised ZeroDivisionError: " \
                                                 "division by zero"
    no_herd = judge_herd(HerdRun(peak=20, baseline=90, back=HERD_CLIENTS))
    assert not no_herd.passed and no_herd.message.startswith("not measured: the check's own no-jitter herd")
    setup = judge_herd(HerdRun(setup_error="LabError: a herd this size needs 656 open files"))
    assert not setup.passed and "the herd did not run" in setup.message


def test_function_backoff_counts_attempts_like_backoff_and_keeps_the_first_error():
    seen = []
    backoff = FunctionBackoff(lambda attempt, base, cap, rng: seen.append((attempt, base, cap)) or 0.5,
                              base=1.5, cap=3.0, rng=random.Random(1))
    assert [backoff.next(), backoff.next()] == [0.5, 0.5]
    backoff.reset()
    backoff.next()
    assert seen == [(0, 1.5, 3.0), (1, 1.5, 3.0), (0, 1.5, 3.0)]

    broken = FunctionBackoff(lambda attempt, base, cap, rng: 1 / attempt, base=1.5, cap=3.0, rng=random.Random(1))
    with pytest.raises(ZeroDivisionError):
        broken.next()
    assert broken.error == "full_jitter(0, ...) raised ZeroDivisionError: division by zero"


def test_the_solution_file_defines_full_jitter():
    namespace = runpy.run_path(str(SOLUTION))
    assert judged(namespace["full_jitter"])["cap"].passed


# -- for real: herds of 200 clients ------------------------------------------------


@pytest.mark.slow
async def test_the_reference_solution_passes():
    report = await check_full_jitter(runpy.run_path(str(SOLUTION))["full_jitter"])
    assert report.passed, report
    herd = report.case("herd").measured
    assert herd["peak"] <= herd["baseline"] / 4 and herd["back"] == HERD_CLIENTS


@pytest.mark.slow
async def test_no_jitter_fails_the_herd_with_a_peak_like_no_jitters():
    report = await check_full_jitter(no_jitter)
    assert report.failed == ["cap", "herd"], report
    herd = report.case("herd").measured
    assert herd["peak"] > herd["baseline"] / 2  # the same herd as the check's own no-jitter run


@pytest.mark.slow
async def test_socket_io_passes_the_herd_and_fails_only_at_the_cap():
    report = await check_full_jitter(socket_io)
    assert report.failed == ["cap"], report


async def test_a_function_that_never_returns_a_delay_runs_no_herd():
    started = time.perf_counter()
    report = await check_full_jitter(lambda attempt, base, cap, rng: {}[attempt])
    assert time.perf_counter() - started < 2.0
    assert report.failed == ["range", "growth", "seeded", "cap", "herd"]
    assert report.case("herd").message.startswith("not run")
