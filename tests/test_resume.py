"""Where a reconnecting client's broadcasts start again (wslab.servers.resume): pure, no sockets, no Redis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wslab.servers.resume import Replay, ResumeSteps, Resync, plan_resume, resume_steps


def test_a_new_client_gets_live_broadcasts_only():
    assert plan_resume(None, 1, 100) is None
    assert resume_steps(None, 1, 100) == ResumeSteps(None, None, None)


def test_a_gap_the_stream_holds_is_replayed_from_the_number_after_last_seq():
    assert plan_resume(90, 1, 100) == Replay(91, 100)
    assert plan_resume(0, 1, 100) == Replay(1, 100)  # the gap starts exactly at the oldest: all held
    assert resume_steps(Replay(91, 100), 1, 100) == ResumeSteps(None, (91, 100), 100)


def test_an_up_to_date_client_gets_an_empty_replay_and_nothing_is_sent():
    assert plan_resume(100, 1, 100) == Replay(101, 100)
    assert resume_steps(Replay(101, 100), 1, 100) == ResumeSteps(None, None, 100)


def test_a_gap_older_than_the_stream_is_a_resync_naming_what_is_lost_then_what_is_held():
    assert plan_resume(5, 50, 100) == Resync((6, 49), 50)
    assert resume_steps(Resync((6, 49), 50), 50, 100) == ResumeSteps(Resync((6, 49), 50), (50, 100), 100)


def test_a_number_never_given_out_means_the_numbering_restarted():
    assert plan_resume(5003, 240, 320) == Resync(None, 321)
    assert resume_steps(Resync(None, 321), 240, 320) == ResumeSteps(Resync(None, 321), None, 320)


def test_an_empty_stream():
    assert plan_resume(0, 1, 0) == Replay(1, 0)  # nothing published yet, nothing missed
    assert plan_resume(3, 1, 0) == Resync(None, 1)  # Redis restarted empty: the numbers start again at 1


def test_wrong_answers_are_carried_out_as_they_are_said():
    # Starts before the stream: the server sends what it holds; the client will see the hole.
    assert resume_steps(Replay(6, 100), 50, 100) == ResumeSteps(None, (6, 100), 100)
    # Ends early: the rest never comes (live broadcasts start after newest).
    assert resume_steps(Replay(91, 95), 1, 100) == ResumeSteps(None, (91, 95), 100)
    # Past newest: the stream holds nothing there.
    assert resume_steps(Replay(91, 10**9), 1, 100) == ResumeSteps(None, (91, 100), 100)
    # A resync that skips what the stream holds: live from next_seq on, nothing replayed.
    assert resume_steps(Resync((6, 49), 101), 50, 100) == ResumeSteps(Resync((6, 49), 101), None, 100)
    assert resume_steps(Resync(None, 500), 50, 100).live_after == 499
    assert resume_steps(Replay(-5, 3), 1, 100).replay == (0, 3)  # a stream id can't be negative


@pytest.mark.parametrize("answer", [
    "replay", 42, (91, 100), Replay("91", 100), Replay(True, 100), Resync((6,), 50), Resync(None, 1.5),
    Resync([6, "49"], 50),
])
def test_an_answer_of_another_type_is_a_one_line_type_error(answer):
    with pytest.raises(TypeError, match=r"return Replay\(first, last\), Resync\(missed, next_seq\) or None"):
        resume_steps(answer, 1, 100)


@given(last_seq=st.one_of(st.none(), st.integers(-5, 400)), oldest=st.integers(1, 300), extra=st.integers(-1, 200))
def test_the_plan_sends_every_number_after_last_seq_once_or_says_what_is_lost(last_seq, oldest, extra):
    """Whatever the window, the client ends up with a contiguous run of numbers, and every hole is named."""
    newest = oldest + extra  # extra == -1: an empty stream
    steps = resume_steps(plan_resume(last_seq, oldest, newest), oldest, newest)
    if last_seq is None:
        assert steps == ResumeSteps(None, None, None)
        return
    seen = last_seq
    if steps.resync is not None:
        if steps.resync.missed is not None:
            first, last = steps.resync.missed
            assert first == seen + 1 and last < oldest, "only what the stream lost is called lost"
            seen = last
        else:
            assert last_seq > newest
            seen = steps.resync.next_seq - 1
    if steps.replay is not None:
        assert steps.replay[0] == seen + 1 and oldest <= steps.replay[0] and steps.replay[1] == newest
        seen = steps.replay[1]
    assert seen == newest == steps.live_after, "then live broadcasts, from newest + 1"
