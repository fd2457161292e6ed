"""Notebook 07's check: the verdicts, each mistake with its own hint, and the whole check against a real Redis.

:func:`judge` is tested on hand-made records (no sockets); then the whole check
runs for real: the reference solution passes, the unmodified exercise fails
with both controls passing, and common mistakes fail with their own hint.
"""

from __future__ import annotations

import asyncio
import runpy
from pathlib import Path

import pytest

from wslab.checks import check_resume
from wslab.checks.resume import Call, CaseRun, Recorder, describe_story, expected_story, judge
from wslab.runtime.redis import REDIS
from wslab.servers.resume import Replay, Resync, plan_resume

SOLUTION = Path(__file__).resolve().parent.parent / "notebooks" / "solutions" / "07-resume.py"
needs_redis = pytest.mark.skipif(REDIS.skip_reason() is not None, reason=str(REDIS.skip_reason()))

LIVE = [321, 322, 323]


def run(case: str, last_seq: int | None, story: list, **kwargs) -> CaseRun:
    return CaseRun(case, last_seq, 240, 320, LIVE, story, **kwargs)


def messages(first: int, last: int) -> list:
    return [("message", n) for n in range(first, last + 1)]


# -- without sockets -----------------------------------------------------------------------------


def test_the_expected_story_is_plan_resume_carried_out():
    assert expected_story(None, 240, 320, LIVE) == messages(321, 323)
    assert expected_story(320, 240, 320, LIVE) == messages(321, 323)
    assert expected_story(305, 240, 320, LIVE) == messages(306, 323)
    assert expected_story(5, 240, 320, LIVE) == [("resync", (6, 239), 240)] + messages(240, 323)
    assert expected_story(5003, 240, 320, LIVE) == [("resync", None, 321)] + messages(321, 323)


def test_a_story_reads_as_ranges():
    assert describe_story([("resync", (6, 239), 240)] + messages(240, 250) + [("message", 3)]) == (
        "resync (missed 6-239, go on from 240), then 240-250 (11), then 3")
    assert describe_story([]) == "nothing"


@pytest.mark.parametrize(("case", "last_seq"), [("fresh", None), ("up-to-date", 320), ("gap", 305), ("trimmed", 5),
                                                ("future", 5003)])
def test_the_expected_story_passes(case, last_seq):
    verdict = judge(run(case, last_seq, expected_story(last_seq, 240, 320, LIVE)))
    assert verdict.passed, verdict.message


def test_each_mistake_has_its_own_hint():
    hints = {
        "fresh replayed": judge(run("fresh", None, messages(240, 323))),
        "fresh resync": judge(run("fresh", None, [("resync", None, 321)] + messages(321, 323))),
        "resync for nothing": judge(run("up-to-date", 320, [("resync", (321, 320), 321)] + messages(321, 323))),
        "off by one": judge(run("gap", 305, messages(305, 323))),
        "not replayed": judge(run("gap", 305, messages(321, 323))),
        "no resync": judge(run("trimmed", 5, messages(240, 323))),
        "wrong missed": judge(run("trimmed", 5, [("resync", (6, 320), 240)] + messages(240, 323))),
        "skipped the stream": judge(run("trimmed", 5, [("resync", (6, 239), 321)] + messages(321, 323))),
        "future ignored": judge(run("future", 5003, messages(321, 323))),
        "future missed": judge(run("future", 5003, [("resync", (5004, 320), 321)] + messages(321, 323))),
        "future next": judge(run("future", 5003, [("resync", None, 1)] + messages(1, 323))),
    }
    assert not any(verdict.passed for verdict in hints.values())
    expected = {
        "fresh replayed": "81 old broadcasts (240-320) it never asked for",
        "fresh resync": "has missed nothing: send it no resync",
        "resync for nothing": "nothing is lost, so no resync",
        "off by one": "it got 305 again",
        "not replayed": "it never got 306-320, which the stream still held",
        "no resync": "6-239 can't be replayed",
        "wrong missed": "what is lost is (last_seq + 1, oldest - 1) = (6, 239)",
        "skipped the stream": "go on from 321, but the stream still held 240-320",
        "future ignored": "a number this Redis never gave out",
        "future missed": "no number of this numbering was missed",
        "future next": "the next number given out is newest + 1 = 321",
    }
    for name, words in expected.items():
        assert words in hints[name].message, (name, hints[name].message)
    assert len({verdict.message.split("; it got")[0] for verdict in hints.values()}) == len(hints)


def test_an_error_in_the_function_is_its_case_row_in_one_line():
    call = Call(None, 240, 320, error="decide_resume(None, 240, 320) raised TypeError: unsupported operand")
    verdict = judge(run("fresh", None, [], calls=[call], came_back=False))
    assert not verdict.passed and verdict.message.startswith("decide_resume(None, 240, 320) raised TypeError")
    assert "1011" in verdict.message and "\n" not in verdict.message


def test_a_client_that_never_came_back_and_a_case_that_could_not_run():
    assert "did not come back" in judge(run("gap", 305, [], came_back=False)).message
    broken = judge(CaseRun("gap", setup_error="LabError: redis-server is not installed"))
    assert not broken.passed and "could not run this case: LabError" in broken.message


def test_the_recorder_names_each_broken_answer_in_one_line():
    def raises(last_seq, oldest, newest):
        return {}[last_seq]

    async def is_async(last_seq, oldest, newest):
        return None

    for function, words in ((raises, "decide_resume(7, 1, 10) raised KeyError: 7"),
                            (is_async, "decide_resume() is async"),
                            (lambda *args: (8, 10), "returned (8, 10): return Replay(first, last)")):
        recorder = Recorder(function)
        with pytest.raises(Exception):  # noqa: B017 - the server turns any of them into a 1011
            recorder(7, 1, 10)
        assert words in (recorder.calls[0].error or ""), recorder.calls
    good = Recorder(plan_resume)
    assert good(7, 1, 10) == Replay(8, 10) and good.calls == [Call(7, 1, 10, Replay(8, 10))]


# -- for real ---------------------------------------------------------------------------------------


@needs_redis
@pytest.mark.slow
async def test_the_reference_solution_passes():
    decide_resume = runpy.run_path(str(SOLUTION))["decide_resume"]
    result = await check_resume(decide_resume)
    assert result.passed, str(result)


@needs_redis
@pytest.mark.slow
async def test_live_only_fails_the_gaps_and_passes_both_controls():
    result = await check_resume(lambda last_seq, oldest, newest: None)  # what the exercise does as committed
    assert result.failed == ["gap", "trimmed", "future"], str(result)
    assert "which the stream still held" in result.case("gap").message
    assert "can't be replayed" in result.case("trimmed").message


@needs_redis
@pytest.mark.slow
async def test_common_mistakes_fail_with_their_hint_in_a_real_run():
    def off_by_one(last_seq, oldest, newest):
        return None if last_seq is None else Replay(last_seq, newest)

    def no_none(last_seq, oldest, newest):
        return Replay(last_seq + 1, newest)  # TypeError for a new client

    def resync_everything(last_seq, oldest, newest):
        return None if last_seq is None else Resync((last_seq + 1, newest), newest + 1)

    results = await asyncio.gather(*(check_resume(f) for f in (off_by_one, no_none, resync_everything)))
    off, none, everything = results
    assert "it got 305 again" in off.case("gap").message and not off.case("up-to-date").passed
    assert none.failed[0] == "fresh" and "raised TypeError" in none.case("fresh").message
    assert "nothing is lost, so no resync" in everything.case("gap").message
    assert everything.case("fresh").passed
