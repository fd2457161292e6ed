"""Deploys measured behind a real nginx: the analysis (pure, without sockets), then the three strategies for real.

The real runs need nginx: they skip on a laptop without it (with the install
command as the reason) and fail in CI, like every nginx test.
"""

from __future__ import annotations

import math

import pytest

from wslab import Lab
from wslab.runtime.nginx import NGINX
from wslab.studies.deploys import DeployRecord, attempts_per_bin, deploy_result, run_deploy, run_reloads

SKIP_REASON = NGINX.skip_reason()
needs_nginx = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


# -- the analysis, without sockets -------------------------------------------------------------------


def test_attempts_are_counted_per_100_ms_from_the_shutdown_on():
    assert attempts_per_bin([9.0, 10.05, 10.06, 10.31], since=10.0) == [2, 0, 0, 1]
    assert attempts_per_bin([], since=0.0) == []
    assert attempts_per_bin([1.0], since=2.0) == []  # before the shutdown: the first connections, not reconnects


def record(**changes) -> DeployRecord:
    base = DeployRecord("drain", 4, [True, False, True, False], shutdown_at=100.0, exited_at=102.5)
    base.closes = {0: (100.1, 1012, True), 1: (100.6, 1012, True), 2: (101.1, 1006, False), 3: (101.6, 1012, True)}
    base.back_at = {0: 100.3, 1: 100.8, 2: 101.2, 3: 101.9}
    base.attempts_at_new = [99.0, 100.25, 100.28, 100.75, 101.15, 101.85]
    base.from_seq = {0: 10, 1: 10, 2: 11, 3: 12}
    base.to_seq = 20
    base.received = {
        0: set(range(0, 21)),  # replay on: everything
        1: set(range(0, 21)) - {13, 14},  # replay off: lost 13 and 14
        2: set(range(0, 21)) - {5},  # 5 is before its shutdown position: not counted
        3: set(range(0, 21)) - {15, 16, 17},
    }
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_a_deploy_result_counts_codes_losses_peaks_and_times():
    result = deploy_result(record())
    assert result.close_codes == {1012: 3, 1006: 1} and result.clean == 3
    assert (result.lost_with_replay, result.lost_without_replay) == (0, 5)
    assert result.attempts == [0, 0, 2, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    assert result.peak_attempts == 2
    assert result.all_back_after == pytest.approx(1.9)
    assert result.shutdown_took == pytest.approx(2.5)
    row = result.row()
    assert row["close codes seen"] == "1006 x1, 1012 x3" and row["lost, replay off"] == 5


def test_a_client_that_never_came_back_leaves_all_back_after_undefined():
    result = deploy_result(record(back_at={0: 100.3, 1: 100.8, 2: 101.2}))
    assert math.isnan(result.all_back_after)


# -- the strategies, for real ----------------------------------------------------------------------


@needs_nginx
@pytest.mark.slow
async def test_a_drain_loses_nothing_with_replay_and_spreads_the_herd_to_a_third_of_1012_at_once():
    async with Lab() as lab:
        at_once = deploy_result(await run_deploy(lab, "1012 at once", n=200))
        drained = deploy_result(await run_deploy(lab, "drain", n=200, window=4.0))
    for result in (at_once, drained):
        assert result.close_codes == {1012: 200} and result.clean == 200, result
        assert not math.isnan(result.all_back_after), result
    assert drained.lost_with_replay == 0  # replay fills every gap
    assert drained.lost_without_replay > 0  # the control: without replay, the reconnection gap is lost
    assert drained.peak_attempts <= at_once.peak_attempts / 3, (drained.attempts, at_once.attempts)
    assert drained.shutdown_took >= 4.0 - 0.2  # it took its window


@needs_nginx
@pytest.mark.slow
async def test_kill_9_is_1006_for_every_client_and_replay_still_fills_the_gap():
    async with Lab() as lab:
        killed = deploy_result(await run_deploy(lab, "kill -9", n=50))
    assert killed.close_codes == {1006: 50} and killed.clean == 0
    assert killed.lost_with_replay == 0
    assert killed.shutdown_took < 1.0


@needs_nginx
async def test_a_reload_cuts_old_tunnels_only_at_worker_shutdown_timeout():
    async def hold(ws):
        await ws.wait_closed()

    async with Lab() as lab:
        server = await lab.serve(hold, name="hold")
        never, timed = await run_reloads(lab, server, [None, 1.0], tunnels=5, watch=2.0)
    assert never.cut_after == [] and never.old_workers_left == 1
    assert len(timed.cut_after) == 5 and all(0.9 <= t <= 1.6 for t in timed.cut_after), timed.cut_after
    assert set(timed.codes) == {1006} and timed.old_workers_left == 0
