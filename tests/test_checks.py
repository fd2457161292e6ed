"""The exercise check of notebook 02: rejects the seed's handler and every wrong answer found so far, accepts the fix.

The verdicts are tested first on hand-made records (no sockets), then the whole
check on real faults: the naive handler, the reference solution, and wrong
answers, each of which passed an earlier version of the check or got the wrong hint.
"""

from __future__ import annotations

import asyncio
import runpy
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from wslab import LabError, NaiveServer
from wslab.checks import check_handler
from wslab.checks.sessions_verdict import CONTROL, HINTS, NEVER_APPEARED, PONG_GAP, CaseRun, verdict
from wslab.faults.failures import FAILURE_MODES
from wslab.runtime.timing import scaled

SOLUTION = Path(__file__).resolve().parent.parent / "notebooks" / "solutions" / "02-sessions.py"


# -- the verdict, from a record alone ------------------------------------------------------------


def test_a_session_removed_and_closed_in_time_passes_with_its_removal_time():
    case = verdict(CaseRun("reset", appeared=True, removed_after=0.03, state="closed"), bound=1.0)
    assert case.passed and case.message == "session removed after 0.03 s, connection closed"
    assert case.measured["removed_after"] == 0.03
    assert str(case).startswith("PASS  reset")
    vanished = verdict(CaseRun("vanished", appeared=True, removed_after=0.9, state="closed"), bound=2.0)
    assert vanished.passed and "aborted" in vanished.message


def test_a_session_still_held_fails_with_the_hint_for_its_mode_and_bound():
    for mode in FAILURE_MODES:
        case = verdict(CaseRun(mode, appeared=True, state="closed" if mode != "vanished" else "open"), bound=2.5)
        assert not case.passed
        assert case.message == HINTS[mode].format(bound=2.5)
    assert "over 2.5 s" in verdict(CaseRun("vanished", appeared=True), bound=2.5).message


def test_a_removed_session_whose_connection_is_still_open_fails_and_says_abort():
    case = verdict(CaseRun("vanished", appeared=True, removed_after=0.9, state="open"), bound=2.0)
    assert not case.passed and case.message == HINTS["still-open"]
    assert "ws.transport.abort()" in case.message


def test_a_closing_connection_gets_the_close_hint_whether_or_not_the_session_went():
    for removed_after in (None, 0.9):
        case = verdict(CaseRun("vanished", appeared=True, removed_after=removed_after, state="closing"), bound=2.0)
        assert not case.passed and case.message == HINTS["close-not-abort"].format(bound=2.0)
        assert "close()" in case.message and "CLOSING" in case.message


def test_unanswered_pings_to_the_vanished_client_get_the_pong_hint_not_the_generic_one():
    case = verdict(CaseRun("vanished", appeared=True, state="open", pings=3), bound=2.0)
    assert not case.passed and case.message == HINTS["pong-not-awaited"].format(pings=3, bound=2.0)
    assert case.message != HINTS["vanished"].format(bound=2.0)


def test_an_aborted_connection_whose_session_stayed_fails_and_says_finally():
    case = verdict(CaseRun("vanished", appeared=True, state="closed"), bound=2.0)
    assert not case.passed and case.message == HINTS["closed-but-kept"]


def test_a_client_dropped_before_it_died_fails_and_points_at_the_control():
    case = verdict(CaseRun("killed", appeared=True, dropped_early=True, state="closed"), bound=1.0)
    assert not case.passed and case.message == HINTS["dropped-early"]


def test_a_session_that_never_appeared_fails_and_says_to_add_it():
    case = verdict(CaseRun("killed", appeared=False), bound=1.0)
    assert not case.passed and case.message == NEVER_APPEARED


def test_an_error_fails_the_case_even_when_the_session_went():
    error = "handler() raised KeyError: 3"
    run = CaseRun("vanished", appeared=True, removed_after=0.9, state="closed", errors=[error])
    assert verdict(run, 2.0) == verdict(run, 2.0)  # pure
    case = verdict(run, 2.0)
    assert not case.passed and case.message == error
    two = verdict(CaseRun("reset", appeared=False, errors=[error, "other"]), 1.0)
    assert two.message == error + " (and 1 more)"
    setup = verdict(CaseRun("reset", setup_error="could not connect", errors=[error]), 1.0)
    assert setup.message == error


def test_a_client_that_could_not_be_set_up_fails_with_the_reason():
    case = verdict(CaseRun("killed", setup_error="the client process could not connect"), bound=1.0)
    assert not case.passed and case.message == "the client process could not connect"


def test_the_control_passes_when_it_stayed_open_in_the_map():
    case = verdict(CaseRun(CONTROL, appeared=True, state="open", pings=4, watched=3.0), bound=2.0)
    assert case.passed
    assert case.message == "stayed in the map and open for the whole check, over 2 s (answering 4 pings)"
    assert case.measured["watched"] == 3.0
    never = verdict(CaseRun(CONTROL, appeared=True, state="open", watched=3.0), bound=2.0)
    assert never.passed and never.message.endswith("(never pinged)")


def test_the_control_dropped_right_at_a_ping_gets_the_pong_hint():
    run = CaseRun(CONTROL, appeared=True, removed_after=0.5, state="closed", pings=1, ping_gap=0.004,
                  drop="removed from the map and connection closed")
    case = verdict(run, bound=2.0)
    assert not case.passed and case.message == HINTS["control-pong"].format(gap_ms=4)


def test_the_control_dropped_away_from_any_ping_gets_the_dropped_hint():
    for gap in (None, PONG_GAP * 2):
        run = CaseRun(CONTROL, appeared=True, removed_after=0.6, state="closed", pings=1 if gap else 0,
                      ping_gap=gap, drop="connection closed")
        case = verdict(run, bound=2.0)
        assert not case.passed
        assert case.message == HINTS["control-dropped"].format(how="connection closed", after=0.6)


# -- the whole check, on real faults -------------------------------------------------------------


async def test_rejects_the_naive_handler_with_a_hint_per_mode_and_keeps_the_control():
    result = await check_handler(NaiveServer())
    assert not result.passed
    assert result.failed == list(FAILURE_MODES)
    assert result.case(CONTROL).passed
    text = str(result)
    for mode in FAILURE_MODES:
        case = result.case(mode)
        assert case.message == HINTS[mode].format(bound=scaled(2.0 if mode == "vanished" else 1.0))
        assert f"FAIL  {mode}" in text
    # Each hint names how the client died.
    words = {"clean-close": "closed cleanly", "killed": "killed", "reset": "reset", "vanished": "vanished"}
    for mode, word in words.items():
        assert word in result.case(mode).message
    assert text.splitlines()[-1] == "failing: clean-close, killed, reset, vanished"


async def test_accepts_the_reference_solution():
    solution = runpy.run_path(str(SOLUTION))
    result = await check_handler(solution["handler"], solution["sessions"])
    assert result.passed, str(result)
    assert [case.name for case in result.cases] == [CONTROL, *FAILURE_MODES]
    assert result.case(CONTROL).measured["state"] == "open"
    assert solution["sessions"] == {}


async def test_a_finally_block_alone_fails_only_the_vanished_peer():
    sessions = set()

    async def handler(ws):
        sessions.add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            sessions.discard(ws)

    result = await check_handler(handler, sessions, vanished_within=1.0)
    assert result.failed == ["vanished"]
    assert result.case("vanished").message == HINTS["vanished"].format(bound=scaled(1.0))


async def test_a_handler_that_raises_is_reported_in_one_line():
    sessions = {}

    async def handler(ws):
        sessions[1] = ws
        raise ValueError("oops")

    result = await check_handler(handler, sessions)
    assert not result.passed
    for case in result.cases:
        assert "raised ValueError: oops" in case.message or case.message.startswith("not tried")
        assert "\n" not in case.message
    assert "handler() raised ValueError: oops" in result.case(CONTROL).message


async def test_the_check_restores_the_loops_task_factory_and_stops_the_tasks_it_watched():
    loop = asyncio.get_running_loop()
    made = []

    def factory(loop, coro, **kwargs):
        made.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    try:
        solution = runpy.run_path(str(SOLUTION))
        result = await check_handler(solution["handler"], solution["sessions"], modes=("reset",))
        assert loop.get_task_factory() is factory  # as it was before the check
    finally:
        loop.set_task_factory(None)
    assert result.passed, str(result)
    assert any("ping_or_abort" in repr(coro) for coro in made)  # the check's factory called the one it found
    assert not [t for t in asyncio.all_tasks() if "ping_or_abort" in repr(t.get_coro())]


async def test_needs_the_sessions_container():
    async def handler(ws):
        pass

    with pytest.raises(LabError, match="sessions"):
        await check_handler(handler)


# -- wrong answers: each passed the old check (or got the generic hint); each must now FAIL ----------------
#
# Each is a handler a student could write. The first assertion, `not result.passed`, works on any check
# result; the hint assertions read the printed report, as the student does.

PING_EVERY = 0.5  # the exercise's settings
PONG_DEADLINE = 0.5


def _fixed_but(*, on_silence, finally_remove=lambda sessions, ws: sessions.pop(id(ws), None)):
    """The reference handler, except for what it does when a pong is late (``on_silence``) and in finally."""
    sessions = {}

    async def pinger(ws):
        while True:
            await asyncio.sleep(PING_EVERY)
            try:
                async with asyncio.timeout(PONG_DEADLINE):
                    await (await ws.ping())
            except TimeoutError:
                await on_silence(sessions, ws)
                return
            except ConnectionClosed:
                return

    async def handler(ws):
        sessions[id(ws)] = ws
        task = asyncio.create_task(pinger(ws))
        try:
            async for _ in ws:
                pass
        finally:
            task.cancel()
            finally_remove(sessions, ws)

    return handler, sessions


async def test_wrong_dropping_every_connection_after_a_while_fails_the_healthy_control():
    sessions = {}

    async def handler(ws):
        sessions[id(ws)] = ws
        asyncio.get_running_loop().call_later(0.6, ws.transport.abort)  # "they're probably dead by now"
        try:
            async for _ in ws:
                pass
        finally:
            sessions.pop(id(ws), None)

    result = await check_handler(handler, sessions)
    assert not result.passed, str(result)
    assert "FAIL  healthy" in str(result)
    assert "yet it was dropped" in str(result)


async def test_wrong_aborting_when_the_pong_is_not_there_right_after_the_ping_fails_with_its_own_hint():
    sessions = {}

    async def pinger(ws):
        while True:
            await asyncio.sleep(PING_EVERY)
            try:
                pong = await ws.ping()
            except ConnectionClosed:
                return
            if not pong.done():  # the pong can't be back yet: this aborts every client
                ws.transport.abort()
                return

    async def handler(ws):
        sessions[id(ws)] = ws
        task = asyncio.create_task(pinger(ws))
        try:
            async for _ in ws:
                pass
        finally:
            task.cancel()
            sessions.pop(id(ws), None)

    result = await check_handler(handler, sessions)
    assert not result.passed, str(result)
    assert "FAIL  healthy" in str(result)
    assert "before its pong" in str(result)


async def test_wrong_removing_the_vanished_session_without_aborting_fails():
    async def forget(sessions, ws):
        sessions.pop(id(ws), None)  # gone from the map, but the connection lives on

    handler, sessions = _fixed_but(on_silence=forget)
    result = await check_handler(handler, sessions)
    assert not result.passed, str(result)
    assert "FAIL  vanished" in str(result)
    assert "still open" in str(result) and "abort" in str(result)


async def test_wrong_close_instead_of_abort_after_removing_fails_with_the_close_hint():
    async def remove_then_close(sessions, ws):
        sessions.pop(id(ws), None)
        await ws.close()  # waits close_timeout for a handshake the vanished peer never sends

    handler, sessions = _fixed_but(on_silence=remove_then_close)
    result = await check_handler(handler, sessions)
    assert not result.passed, str(result)
    assert "FAIL  vanished" in str(result)
    assert "CLOSING" in str(result) and "close()" in str(result)


async def test_wrong_close_instead_of_abort_gets_the_close_hint_not_the_generic_one():
    async def close(sessions, ws):
        await ws.close()  # the handler's finally waits for this handshake: the session stays

    handler, sessions = _fixed_but(on_silence=close)
    result = await check_handler(handler, sessions)
    assert not result.passed, str(result)
    assert "FAIL  vanished" in str(result)
    assert "CLOSING" in str(result) and "close()" in str(result)


async def test_wrong_waiting_for_the_ping_to_be_sent_gets_its_own_hint():
    sessions = {}

    async def pinger(ws):
        while True:
            await asyncio.sleep(PING_EVERY)
            try:
                await asyncio.wait_for(ws.ping(), PONG_DEADLINE)  # returns once the ping is *sent*
            except TimeoutError:
                ws.transport.abort()
                return
            except ConnectionClosed:
                return

    async def handler(ws):
        sessions[id(ws)] = ws
        task = asyncio.create_task(pinger(ws))
        try:
            async for _ in ws:
                pass
        finally:
            task.cancel()
            sessions.pop(id(ws), None)

    result = await check_handler(handler, sessions)
    assert not result.passed, str(result)
    assert "FAIL  vanished" in str(result)
    assert "unanswered" in str(result) and "sent" in str(result)


async def test_wrong_removing_twice_reports_the_keyerror_in_one_line():
    async def abort_and_delete(sessions, ws):
        ws.transport.abort()
        del sessions[id(ws)]  # and the finally block deletes it again: KeyError

    def delete(sessions, ws):
        del sessions[id(ws)]

    handler, sessions = _fixed_but(on_silence=abort_and_delete, finally_remove=delete)
    result = await check_handler(handler, sessions)
    assert not result.passed, str(result)
    [line] = [line for line in str(result).splitlines() if line.startswith("FAIL  vanished")]
    assert "raised KeyError" in line


async def test_wrong_an_error_in_a_task_the_handler_started_is_reported():
    sessions = {}

    async def forget_later(ws):
        await ws.wait_closed()
        await asyncio.sleep(0.05)  # the finally block below has removed it by now
        del sessions[id(ws)]

    async def handler(ws):
        sessions[id(ws)] = ws
        asyncio.create_task(forget_later(ws))
        try:
            async for _ in ws:
                pass
        finally:
            sessions.pop(id(ws), None)

    result = await check_handler(handler, sessions, modes=("reset",))
    assert not result.passed, str(result)
    [line] = [line for line in str(result).splitlines() if line.startswith("FAIL  reset")]
    assert "forget_later() raised KeyError" in line
