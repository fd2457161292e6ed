"""The exercise check of notebook 01: the student's deaths and report, judged; distinct mistakes, distinct hints.

The verdicts are tested first on hand-made records (no sockets), then the whole check on real faults:
the reference solution passes, the unmodified exercise fails, and common mistakes get their own hint.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from wslab import LabError
from wslab.checks import check_deaths
from wslab.checks.deaths import EXPECTED, KEEPALIVE, VERDICTS, LinkRun, ReportRun, judge_link, judge_report

SOLUTION = Path(__file__).resolve().parent.parent / "notebooks" / "solutions" / "01-deaths.py"
SESSIONS = {death: i for i, death in enumerate(EXPECTED)}  # death -> session id
RIGHT = {SESSIONS[death]: verdict for death, verdict in EXPECTED.items()}


# -- round 1's verdicts, from a record alone -------------------------------------------------------


def test_a_reset_passes_only_with_an_rst():
    assert judge_link(LinkRun("reset", closed=True, cause="ConnectionResetError")).passed
    fin = judge_link(LinkRun("reset", closed=True, cause="EOFError"))
    stall = judge_link(LinkRun("reset", closed=False, delivered=False))
    untouched = judge_link(LinkRun("reset", closed=False, delivered=True))
    delayed = judge_link(LinkRun("reset", closed=False, delivered=False, relayed=True))
    assert not delayed.passed and "'latency'" in delayed.message
    assert not fin.passed and "FIN" in fin.message and "'close'" in fin.message
    assert not stall.passed and "stall" in stall.message
    assert not untouched.passed and "nothing happened" in untouched.message
    assert len({fin.message, stall.message, untouched.message, delayed.message}) == 4


def test_a_vanished_client_passes_only_when_silent_and_unnoticed():
    assert judge_link(LinkRun("vanished", closed=False, delivered=False)).passed
    noticed = judge_link(LinkRun("vanished", closed=True, cause="ConnectionResetError"))
    still_flows = judge_link(LinkRun("vanished", closed=False, delivered=True))
    assert not noticed.passed and "ConnectionResetError" in noticed.message and "no FIN, no RST" in noticed.message
    assert not still_flows.passed and "still receives" in still_flows.message
    delayed = judge_link(LinkRun("vanished", closed=False, delivered=False, relayed=True))
    assert not delayed.passed and "'latency'" in delayed.message


def test_the_healthy_control_fails_when_the_fault_hit_every_connection():
    assert judge_link(LinkRun("healthy", closed=False, delivered=True)).passed
    died = judge_link(LinkRun("healthy", closed=True, cause="ConnectionResetError"))
    starved = judge_link(LinkRun("healthy", closed=False, delivered=False))
    assert not died.passed and "conn=link" in died.message and "died" in died.message
    assert not starved.passed and "conn=link" in starved.message and "stopped receiving" in starved.message


def test_an_error_in_break_link_is_the_message():
    case = judge_link(LinkRun("reset", error="break_link(proxy, 'p1', 'reset') raised KeyError: 'x'"))
    assert not case.passed and case.message == "break_link(proxy, 'p1', 'reset') raised KeyError: 'x'"


# -- round 2's verdicts, from a record alone -------------------------------------------------------


def test_the_right_report_passes_and_the_vanished_case_teaches_keepalive():
    cases = judge_report(ReportRun(SESSIONS, RIGHT))
    assert all(case.passed for case in cases) and len(cases) == len(EXPECTED)
    vanished = cases[list(EXPECTED).index("vanished")]
    assert KEEPALIVE in vanished.message


def test_a_vanished_client_reported_as_closed_fails_and_points_to_keepalive():
    report = {**RIGHT, SESSIONS["vanished"]: "closed: FIN"}
    vanished = judge_report(ReportRun(SESSIONS, report))[list(EXPECTED).index("vanished")]
    assert not vanished.passed and "OPEN" in vanished.message and KEEPALIVE in vanished.message


def test_each_wrong_verdict_gets_a_hint_for_that_client():
    messages = set()
    for death, expected in EXPECTED.items():
        for wrong in VERDICTS:
            if wrong == expected:
                continue
            case = judge_report(ReportRun(SESSIONS, {**RIGHT, SESSIONS[death]: wrong}))[list(EXPECTED).index(death)]
            assert not case.passed, (death, wrong)
            messages.add(case.message)
    # A FIN mistaken for an RST and an RST mistaken for a FIN are told apart.
    killed_as_rst = judge_report(ReportRun(SESSIONS, {**RIGHT, SESSIONS["killed"]: "closed: RST"}))[2]
    reset_as_fin = judge_report(ReportRun(SESSIONS, {**RIGHT, SESSIONS["reset"]: "closed: FIN"}))[3]
    assert "EOFError" in killed_as_rst.message and "ConnectionResetError" in reset_as_fin.message
    assert killed_as_rst.message != reset_as_fin.message
    assert len(messages) >= 8


def test_missing_sessions_unknown_verdicts_and_wrong_types_are_named():
    missing = judge_report(ReportRun(SESSIONS, {}))
    assert not any(c.passed for c in missing) and all("missing" in c.message for c in missing)
    unknown = judge_report(ReportRun(SESSIONS, {**RIGHT, SESSIONS["reset"]: "dead"}))[3]
    assert not unknown.passed and "'dead' is not a verdict" in unknown.message
    as_list = judge_report(ReportRun(SESSIONS, list(RIGHT.items())))
    assert all("returned a list" in c.message for c in as_list)


def test_reading_close_exc_on_an_open_connection_gets_its_own_hint():
    error = "stale_sessions(server) raised AssertionError: connection isn't closed yet"
    cases = judge_report(ReportRun(SESSIONS, error=error))
    assert all(not c.passed and c.message.startswith(error) and "State.CLOSED" in c.message for c in cases)
    other = judge_report(ReportRun(SESSIONS, error="stale_sessions(server) raised KeyError: 3"))
    assert all(c.message == "stale_sessions(server) raised KeyError: 3" for c in other)


def test_a_setup_failure_is_not_blamed_on_the_student():
    cases = judge_report(ReportRun(setup_error="the client process could not connect"))
    assert all(not c.passed and c.message.startswith("the check could not set up") for c in cases)


# -- the whole check, on real faults -------------------------------------------------------------


async def test_accepts_the_reference_solution():
    solution = runpy.run_path(str(SOLUTION))
    result = await check_deaths(solution["break_link"], solution["stale_sessions"])
    assert result.passed, str(result)
    assert len(result.cases) == 8


async def test_rejects_the_unmodified_exercise_but_the_healthy_control_passes():
    async def break_link(proxy, link, how):
        pass

    def stale_sessions(server):
        return {}

    result = await check_deaths(break_link, stale_sessions)
    assert not result.passed
    assert result.failed == ["link:reset", "link:vanish", "map:healthy", "map:clean", "map:killed", "map:reset",
                             "map:vanished"]
    assert result.case("link:healthy").passed


async def test_a_fault_on_every_connection_and_a_report_without_the_state_check_fail_with_their_hints():
    async def break_link(proxy, link, how):
        await proxy.set_fault({"reset": "reset", "vanished": "stall"}[how])  # forgot conn=link

    def stale_sessions(server):  # forgot to check the state: close_exc on an OPEN connection
        return {sid: type(ws.close_exc.__cause__).__name__ for sid, ws in server.sessions.items()}

    result = await check_deaths(break_link, stale_sessions)
    assert result.case("link:reset").passed
    assert not result.case("link:healthy").passed and "conn=link" in result.case("link:healthy").message
    assert not result.case("link:vanish").passed
    assert "connection isn't closed yet" in result.case("map:healthy").message


async def test_a_fin_instead_of_an_rst_and_a_report_that_sees_everything_open():
    async def break_link(proxy, link, how):
        await proxy.set_fault("close", conn=link)

    def stale_sessions(server):
        return {sid: "looks open" for sid in server.sessions}

    result = await check_deaths(break_link, stale_sessions)
    assert "FIN" in result.case("link:reset").message and not result.case("link:reset").passed
    assert "the server noticed" in result.case("link:vanish").message
    assert result.case("link:healthy").passed
    # Everything "looks open": right for the healthy and the vanished client, wrong for the three closed ones.
    assert [c.name for c in result.cases if c.passed] == ["link:healthy", "map:healthy", "map:vanished"]
    assert "CLOSED" in result.case("map:clean").message


async def test_a_long_delay_is_not_a_vanished_client():
    async def break_link(proxy, link, how):
        await proxy.set_fault("latency", delay=5.0, conn=link)

    result = await check_deaths(break_link, lambda server: {})
    vanish = result.case("link:vanish")
    assert not vanish.passed and "'latency'" in vanish.message, vanish.message
    assert "'latency'" in result.case("link:reset").message
    assert result.case("link:healthy").passed


async def test_bad_arguments_are_one_line():
    with pytest.raises(LabError, match="your two functions"):
        await check_deaths("break_link", "stale_sessions")
