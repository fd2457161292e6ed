"""The exercise check of notebook 02: rejects the seed's handler, accepts the reference fix, names what failed.

The verdicts are tested first on hand-made records (no sockets), then the whole check on real faults.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from wslab import LabError, NaiveServer
from wslab.checks import HINTS, ModeRun, check_handler, verdict
from wslab.checks.sessions import NEVER_APPEARED
from wslab.faults.failures import FAILURE_MODES
from wslab.runtime.timing import scaled

SOLUTION = Path(__file__).resolve().parent.parent / "notebooks" / "solutions" / "02-fixed-handler.py"


# -- the verdict, from a record alone ------------------------------------------------------------


def test_a_session_removed_in_time_passes_with_its_removal_time():
    check = verdict(ModeRun("reset", appeared=True, removed_after=0.03), bound=1.0)
    assert check.passed and check.message == "session removed" and check.removed_after == 0.03
    assert str(check).startswith("PASS  reset")


def test_a_session_still_held_fails_with_the_hint_for_its_mode_and_bound():
    for mode in FAILURE_MODES:
        check = verdict(ModeRun(mode, appeared=True, removed_after=None), bound=2.5)
        assert not check.passed
        assert check.message == HINTS[mode].format(bound=2.5)
    assert "over 2.5 s" in verdict(ModeRun("vanished", appeared=True), bound=2.5).message


def test_a_session_that_never_appeared_fails_and_says_to_add_it():
    check = verdict(ModeRun("killed", appeared=False), bound=1.0)
    assert not check.passed and check.message == NEVER_APPEARED


def test_a_handler_error_replaces_the_hint():
    error = "handler raised KeyError: 3"
    assert verdict(ModeRun("reset", appeared=True, handler_error=error), 1.0).message == error
    assert verdict(ModeRun("reset", appeared=False, handler_error=error), 1.0).message == error
    assert verdict(ModeRun("reset", setup_error="could not connect", handler_error=error), 1.0).message == error


def test_a_client_that_could_not_be_set_up_fails_with_the_reason():
    check = verdict(ModeRun("killed", setup_error="the client process could not connect"), bound=1.0)
    assert not check.passed and check.message == "the client process could not connect"


# -- the whole check, on real faults -------------------------------------------------------------


async def test_rejects_the_naive_handler_with_a_hint_per_mode():
    result = await check_handler(NaiveServer())
    assert not result.passed
    assert result.failed_modes == list(FAILURE_MODES)
    text = str(result)
    for check in result.checks:
        assert check.message == HINTS[check.mode].format(bound=scaled(2.0 if check.mode == "vanished" else 1.0))
        assert f"FAIL  {check.mode}" in text
    # Each hint names how the client died.
    words = {"clean-close": "closed cleanly", "killed": "killed", "reset": "reset", "vanished": "vanished"}
    for check in result.checks:
        assert words[check.mode] in check.message


async def test_accepts_the_reference_solution():
    solution = runpy.run_path(str(SOLUTION))
    result = await check_handler(solution["handler"], solution["sessions"])
    assert result.passed, str(result)
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
    assert result.failed_modes == ["vanished"]
    assert "vanished" in str(result).splitlines()[-1]


async def test_a_handler_that_raises_is_reported_in_one_line():
    sessions = {}

    async def handler(ws):
        sessions[1] = ws
        raise ValueError("oops")

    result = await check_handler(handler, sessions)
    assert not result.passed
    for check in result.checks:
        assert "raised ValueError: oops" in check.message
        assert "\n" not in check.message


async def test_needs_the_sessions_container():
    async def handler(ws):
        pass

    with pytest.raises(LabError, match="sessions"):
        await check_handler(handler)
