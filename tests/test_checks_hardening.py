"""Notebook 08's check: each mistake gets its own hint, and the reference solution passes.

:func:`judge` is tested from records alone; whole checks run for real in Chromium (skipped on a
laptop without it, never in CI).
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from wslab.checks.hardening import CASES, Knock, check_front_door, judge
from wslab.runtime.programs import CHROMIUM

SOLUTION = Path(__file__).resolve().parent.parent / "notebooks" / "solutions" / "08-hardening.py"
SKIP_REASON = CHROMIUM.skip_reason()
needs_browser = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


def test_a_right_answer_passes_every_case():
    for case, expected in CASES.items():
        if case == "refresh":
            knock = Knock(case, asked=True, opens=4, received=50)
        else:
            knock = Knock(case, answered=expected, asked=True, received=1 if expected is None else 0,
                          origin="http://127.0.0.1:8001" if "page" in case else None)
        assert judge(knock).passed, case


@pytest.mark.parametrize(("knock", "hint"), [
    (Knock("other page", answered=None, asked=True, received=3, origin="http://127.0.0.1:9"),
     "compare origin with app_origin"),
    (Knock("other page", answered=401, asked=True, origin="http://127.0.0.1:9"), "is 403 Forbidden"),
    (Knock("app page", answered=403, asked=True, origin="http://127.0.0.1:8"), "app's own page"),
    (Knock("no Origin", answered=403, asked=True), "not a browser"),
    (Knock("no token", answered=None, asked=True, received=1), "raises TokenError for None"),
    (Knock("forged", answered=None, asked=True, received=1), "forged signature"),
    (Knock("expired", answered=None, asked=True, received=1), "once it expired"),
    (Knock("expired", answered=403, asked=True), "is 401 Unauthorized"),
    (Knock("no token", answered="no", asked=True), "return None to let in"),
    (Knock("no token", error="admit() raised KeyError: 'x'"), "admit() raised KeyError"),
    (Knock("refresh", asked=True, opens=0, rejected=1), "first handshake was refused"),
    (Knock("refresh", asked=True, opens=1, rejected=1), "mint a new token every time"),
    (Knock("refresh", asked=True, opens=1, gave_up="stop: ..."), "it gave up"),
    (Knock("refresh", asked=True, opens=4, missed=3), "missed 3"),
    (Knock("refresh", asked=True, error="url_for_attempt() returned 3: return the URL, a str"), "a str"),
])
def test_each_mistake_gets_its_own_hint(knock, hint):
    case = judge(knock)
    assert not case.passed and hint in case.message and "\n" not in case.message


async def test_something_that_is_not_a_function_is_one_line():
    report = await check_front_door("403", lambda signer, url: url)
    assert not report.passed and "must be a function" in str(report)


@needs_browser
@pytest.mark.deadline(120)
async def test_the_exercise_as_given_fails_and_the_solution_passes():
    solution = runpy.run_path(str(SOLUTION))
    report = await check_front_door(solution["admit"], solution["url_for_attempt"])
    assert report.passed, str(report)
    given = await check_front_door(lambda origin, token, app_origin, signer: None, lambda signer, url: url)
    assert set(given.failed) == {"other page", "no token", "forged", "expired", "refresh"}
    assert given.case("app page").passed and given.case("no Origin").passed  # the controls hold
