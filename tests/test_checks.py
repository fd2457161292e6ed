"""The exercise check of notebook 02: rejects the seed's handler, accepts the reference fix, names what failed."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from wslab import LabError, NaiveServer
from wslab.checks import HINTS, check_handler
from wslab.faults.failures import FAILURE_MODES

SOLUTION = Path(__file__).resolve().parent.parent / "notebooks" / "solutions" / "02-fixed-handler.py"


async def test_rejects_the_naive_handler_with_a_hint_per_mode():
    result = await check_handler(NaiveServer())
    assert not result.passed
    assert result.failed_modes == list(FAILURE_MODES)
    text = str(result)
    for check in result.checks:
        assert check.message == HINTS[check.mode].format(bound=2.0)
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
