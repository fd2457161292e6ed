"""Notebook 04's check: each mistake gets its own hint, and the reference solution passes.

The verdicts (:func:`judge`) and the adapter that calls the student's function
(:class:`FunctionPolicy`) are tested without sockets; a few whole checks run
for real, against real servers, to show that each kind of wrong answer fails
the case it should, with the hint it should.
"""

from __future__ import annotations

import runpy
import time
from pathlib import Path

import pytest

from wslab.checks.reconnect import (
    MAX_ATTEMPTS_PER_SECOND,
    Call,
    CaseRun,
    FunctionPolicy,
    check_reconnect_policy,
    judge,
    peak_attempts,
)
from wslab.clients.policy import CloseEvent, GiveUp, Retry

SOLUTION = Path(__file__).resolve().parent.parent / "notebooks" / "solutions" / "04-reconnect.py"


# -- without sockets --------------------------------------------------------------


def test_peak_attempts_counts_the_busiest_second():
    assert peak_attempts([]) == 0
    assert peak_attempts([0.0, 0.5, 0.99, 1.0, 1.5]) == 3
    assert peak_attempts([0.01 * i for i in range(50)]) == 50
    assert peak_attempts([float(i) for i in range(5)]) == 1


def test_the_policy_passes_the_close_code_and_counts_attempts_since_a_connection_that_lasted():
    seen = []
    policy = FunctionPolicy(lambda code, attempt: seen.append((code, attempt)) or 0.25, min_uptime=0.5)
    assert policy.decide(CloseEvent(1012, "service restart", True), uptime=3.0) == Retry(0.25, 1)
    assert policy.decide(ConnectionRefusedError()) == Retry(0.25, 2)
    assert policy.decide(CloseEvent(1006, "", False), uptime=0.1) == Retry(0.25, 3)  # too short: no reset
    assert policy.decide(CloseEvent(1006, "", False), uptime=0.6) == Retry(0.25, 1)
    assert seen == [(1012, 1), (None, 2), (1006, 3), (1006, 1)]


def test_none_stops_the_client_and_is_not_an_error():
    policy = FunctionPolicy(lambda code, attempt: None)
    assert isinstance(policy.decide(CloseEvent(1008, "", True)), GiveUp)
    assert policy.error is None and policy.calls == [Call(1008, 1, None)]


@pytest.mark.parametrize(("decide", "expected"), [
    (lambda code, attempt: {}[code], "decide(1006, 1) raised KeyError: 1006"),
    (lambda code, attempt: "1", "returned '1': return a delay in seconds"),
    (lambda code, attempt: -1.0, "returned -1.0"),
    (lambda code, attempt: float("nan"), "returned nan"),
    (lambda code, attempt: True, "returned True"),
    (lambda code, attempt: time.sleep(0.15) or 0.1, "took 0.1"),
])
def test_a_broken_decide_stops_the_client_with_one_line(decide, expected):
    policy = FunctionPolicy(decide)
    assert isinstance(policy.decide(CloseEvent(1006, "", False)), GiveUp)
    assert policy.error is not None and expected in policy.error, policy.error
    assert "\n" not in policy.error


def test_an_async_decide_is_named_and_never_left_unawaited():
    async def decide(code, attempt):
        return 0.1

    policy = FunctionPolicy(decide)
    assert isinstance(policy.decide(ConnectionRefusedError()), GiveUp)
    assert "decide() is async" in (policy.error or "")


def test_a_storm_is_cut_short():
    policy = FunctionPolicy(lambda code, attempt: 0.0, max_decisions=5)
    decisions = [policy.decide(ConnectionRefusedError()) for _ in range(7)]
    assert [type(d) for d in decisions] == [Retry] * 5 + [GiveUp] * 2
    assert policy.cut_short


def _storm_run(case: str) -> CaseRun:
    times = [0.01 * i for i in range(MAX_ATTEMPTS_PER_SECOND + 1)]
    return CaseRun(case, calls=[Call(None, i + 1, 0.01) for i in range(len(times))], attempt_times=times,
                   opens=1, back_after=0.1)


def test_each_mistake_has_its_own_hint():
    storm = judge(_storm_run("refused"))
    assert not storm.passed and "retry storm" in storm.message and f"at most {MAX_ATTEMPTS_PER_SECOND}" in storm.message

    quit_refused = judge(CaseRun("refused", calls=[Call(None, 1, None)], attempt_times=[0.0]))
    assert not quit_refused.passed and "gave up (returned None) at attempt 1" in quit_refused.message

    slow = judge(CaseRun("refused", calls=[Call(None, 1, 30.0)], attempt_times=[0.0]), back_within=2.0)
    assert not slow.passed and "not back within 2 s" in slow.message and "30" in slow.message

    quit_1012 = judge(CaseRun("restart", calls=[Call(1012, 1, None)], attempt_times=[0.0], opens=1,
                              close_codes=[1012]))
    assert not quit_1012.passed and "after 1012 your code gave up" in quit_1012.message

    retry_1008 = judge(CaseRun("1008", calls=[Call(1008, n, 0.0) for n in (1, 2)], attempt_times=[0.0, 0.1, 0.2],
                               opens=3, close_codes=[1008] * 3))
    assert not retry_1008.passed
    assert "after 1008 your code reconnected 2 times" in retry_1008.message and "stop" in retry_1008.message

    # A long delay after 1008 reconnects nobody within the case, but it is still the wrong answer.
    later_1008 = judge(CaseRun("1008", calls=[Call(1008, 1, 60.0)], attempt_times=[0.0], opens=1))
    assert not later_1008.passed and "1008" in later_1008.message

    hints = {storm.message, quit_refused.message, slow.message, quit_1012.message, retry_1008.message}
    assert len(hints) == 5


def test_the_error_of_decide_is_the_case_message():
    case = judge(CaseRun("restart", error="decide(1012, 1) raised KeyError: 1012"))
    assert not case.passed and case.message == "decide(1012, 1) raised KeyError: 1012"


def test_the_healthy_control_fails_when_a_live_connection_is_reconnected():
    assert judge(CaseRun("healthy", attempt_times=[0.0], opens=1)).passed
    reconnected = judge(CaseRun("healthy", calls=[Call(1006, 1, 0.1)], attempt_times=[0.0, 0.2], opens=2))
    assert not reconnected.passed and "was reconnected" in reconnected.message


def test_the_good_runs_pass():
    assert judge(CaseRun("refused", calls=[Call(None, n, 0.1 * 2**n) for n in (1, 2, 3)],
                         attempt_times=[0.0, 0.2, 0.6, 1.4], opens=1, back_after=0.1)).passed
    assert judge(CaseRun("restart", calls=[Call(1012, 1, 0.1), Call(None, 2, 0.2)], attempt_times=[0.0, 1.0, 1.1, 1.3],
                         opens=2, close_codes=[1012], back_after=0.2)).passed
    assert judge(CaseRun("1008", calls=[Call(1008, 1, None)], attempt_times=[0.0], opens=1, close_codes=[1008])).passed


# -- for real: the whole check, against real servers ------------------------------------------


@pytest.mark.slow
async def test_the_reference_solution_passes():
    decide = runpy.run_path(str(SOLUTION))["decide"]
    report = await check_reconnect_policy(decide)
    assert report.passed, str(report)


@pytest.mark.slow
async def test_the_immediate_retry_of_the_exercise_fails_on_storms_and_1008_but_not_the_healthy_control():
    report = await check_reconnect_policy(lambda code, attempt: 0.0)
    assert report.failed == ["refused", "restart", "1008"], str(report)
    assert "retry storm" in report.case("refused").message
    assert "retry storm" in report.case("restart").message
    assert "after 1008 your code reconnected" in report.case("1008").message


@pytest.mark.slow
async def test_giving_up_always_fails_the_refused_and_restart_cases():
    report = await check_reconnect_policy(lambda code, attempt: None)
    assert report.failed == ["refused", "restart"], str(report)
    assert "after 1012 your code gave up" in report.case("restart").message
    assert "a connect was refused and your code gave up" in report.case("refused").message


@pytest.mark.slow
async def test_backoff_that_ignores_the_close_code_fails_only_1008():
    report = await check_reconnect_policy(lambda code, attempt: min(1.0, 0.1 * 2 ** (attempt - 1)))
    assert report.failed == ["1008"], str(report)


@pytest.mark.slow
async def test_an_exception_in_decide_is_one_line_in_each_case_it_hits():
    def decide(code, attempt):
        return {1008: None}[code]  # KeyError for anything else

    report = await check_reconnect_policy(decide)
    assert report.failed == ["refused", "restart"], str(report)
    assert report.case("restart").message == "decide(1012, 1) raised KeyError: 1012"
    assert report.case("refused").message == "decide(None, 1) raised KeyError: None"
