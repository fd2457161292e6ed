"""Notebook 03's check: rejects "retry after anything", accepts the reference solution, names what failed.

The verdicts are tested first on hand-made records (no browser), then the whole
check in a real Chromium. Without a Chromium the browser tests skip on a
laptop and fail in CI (:meth:`wslab.runtime.programs.Program.skip_reason`).
"""

from __future__ import annotations

import runpy
import time
from pathlib import Path

import pytest

from wslab.checks import check_onclose
from wslab.checks.onclose import CLOSES, MEANS, WHY, CloseRun, judge
from wslab.clients.closecodes import AfterClose, after_close
from wslab.clients.page import CloseEvent, Decision
from wslab.runtime.programs import CHROMIUM
from wslab.runtime.timing import scaled

SOLUTION = Path(__file__).resolve().parent.parent / "notebooks" / "solutions" / "03-onclose.py"
SKIP_REASON = CHROMIUM.skip_reason()
needs_browser = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


def _closed(code: int, answer: str | None = None, *, returned: str = "string", error: str | None = None) -> CloseRun:
    seen = CloseEvent(0, code, "", code != 1006)
    return CloseRun(str(code), code, seen=seen, decision=Decision(0, answer, returned, error))


# -- the verdict, from a record alone ------------------------------------------------------------


@pytest.mark.parametrize("code", CLOSES.values())
def test_the_table_s_answer_passes_and_each_other_answer_fails_naming_the_code_and_why(code):
    expected = after_close(code, code != 1006)
    case = judge(_closed(code, expected.value))
    assert case.passed and repr(expected.value) in case.message
    for wrong in set(AfterClose) - {expected}:
        case = judge(_closed(code, wrong.value))
        assert not case.passed
        assert case.message.startswith(f"{code} ")
        assert f"answered {wrong.value!r}, expected {expected.value!r} ({MEANS[expected]})" in case.message
        assert WHY[code] in case.message


def test_the_expected_answers_are_the_table_s():
    # The check holds no answers of its own: they come from closecodes.after_close.
    assert {code: after_close(code, code != 1006).value for code in CLOSES.values()} == {
        1000: "back off", 1001: "retry", 1008: "stop", 1011: "back off", 1012: "retry", 4001: "stop", 1006: "back off",
    }


def test_every_mistake_in_the_answer_gets_its_own_hint():
    threw = judge(_closed(1008, error="TypeError: Cannot read properties of undefined (reading 'x')"))
    undefined = judge(_closed(1008, returned="undefined"))
    misspelt = judge(_closed(1011, "backoff"))
    not_asked = judge(CloseRun("1012", 1012, seen=CloseEvent(0, 1012, "service restart", True)))
    assert not any(c.passed for c in (threw, undefined, misspelt, not_asked))
    assert threw.message == (
        "1008 policy violation: decide(event) threw TypeError: Cannot read properties of undefined (reading 'x')"
    )
    assert "returned undefined: return a string" in undefined.message
    assert "returned 'backoff': the answers are exactly 'retry', 'back off' and 'stop'" in misspelt.message
    assert "decide(event) was not asked" in not_asked.message
    assert len({threw.message, undefined.message, misspelt.message, not_asked.message}) == 4


def test_a_close_that_never_came_or_came_with_another_code_fails_without_blaming_the_answer():
    silent = judge(CloseRun("1012", 1012, bound=5.0))
    assert not silent.passed and "did not fire within 5 s of the 1012 close" in silent.message
    other = judge(CloseRun("1012", 1012, seen=CloseEvent(0, 1006, "", False),
                           decision=Decision(0, "back off", "string")))
    assert not other.passed and "drove a 1012 close, but the page saw code=1006" in other.message
    broken = judge(CloseRun("1001", 1001, error="the page's WebSocket to ws://... got no answer"))
    assert not broken.passed and broken.message == "the page's WebSocket to ws://... got no answer"


def test_the_control_passes_only_open_and_undecided():
    assert judge(CloseRun("control", None, still_open=True)).passed
    closed = judge(CloseRun("control", None, seen=CloseEvent(0, 1005, "", True), still_open=False))
    assert not closed.passed and "closed (code=1005" in closed.message and "only answer" in closed.message
    decided = judge(CloseRun("control", None, still_open=True, decision=Decision(0, "stop", "string")))
    assert not decided.passed and "still open: 'stop'" in decided.message


async def test_code_that_is_not_a_string_is_reported_in_one_line_without_a_browser():
    report = await check_onclose(lambda event: "retry")  # a Python function, not JavaScript
    assert not report.passed and report.failed == ["javascript"]
    assert "pass the JavaScript as a string" in report.case("javascript").message
    assert "\n" not in report.case("javascript").message


# -- the whole check, in a real Chromium ---------------------------------------------------------


@needs_browser
async def test_retry_after_anything_fails_on_every_code_that_is_not_a_planned_goodbye():
    # What the exercise cell returns as committed, and what ReconnectingWebSocket does.
    report = await check_onclose('function decide(event) { return "retry"; }')
    assert report.failed == ["1000", "1008", "1011", "4001", "1006"]
    assert report.case("control").passed and report.case("1001").passed and report.case("1012").passed
    assert "expected 'stop'" in report.case("1008").message
    assert "wasClean is false" in report.case("1006").message


@needs_browser
async def test_the_reference_solution_passes_every_case_within_the_time_a_check_may_take():
    source = runpy.run_path(str(SOLUTION))["DECIDE"]
    started = time.monotonic()
    report = await check_onclose(source)
    took = time.monotonic() - started
    assert report.passed, str(report)
    assert [c.name for c in report.cases] == ["control", *CLOSES]
    assert took < scaled(30), f"the check took {took:.1f} s"  # about 3 s on an idle laptop


@needs_browser
async def test_javascript_errors_are_reported_in_one_line_per_case():
    syntax = await check_onclose("function decide(event) {")
    assert syntax.failed == ["javascript"]
    assert syntax.case("javascript").message.startswith("your JavaScript did not load: SyntaxError")

    throws = await check_onclose("function decide(event) { return event.nope.code; }")
    assert throws.case("control").passed  # nothing closed it, so nothing asked decide about it
    for code in CLOSES:
        message = throws.case(code).message
        assert "decide(event) threw TypeError: Cannot read properties of undefined" in message, message
        assert "\n" not in message


@needs_browser
async def test_a_decide_that_closes_every_socket_fails_the_control():
    report = await check_onclose(
        'function decide(event) { window.sockets.forEach(s => s.close()); return "stop"; }'
    )
    assert not report.case("control").passed
    assert "the healthy socket, which nothing should close, closed" in report.case("control").message
