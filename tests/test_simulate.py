"""Small deterministic checks of the herd simulation, of a real herd's analysis (no sockets), and one real herd."""

import asyncio
import math

import wslab
from wslab.clients.backoff import STRATEGIES
from wslab.runtime.timing import scaled
from wslab.studies.herd import Attempt, HerdLog, herd_result, run_herd
from wslab.studies.simulate import AcceptLimit, HerdResult, busiest, simulate

SCALED = {"min_delay": 0.05, "max_delay": 2.0, "factor": 2.0}


def policy(name: str) -> dict:
    return {**SCALED, **STRATEGIES[name]}


def run(name: str, n: int = 500, **kwargs):
    options = {"downtime": 1.0, "accept_rate": 500.0, "burst": 100.0, "seed": 7}
    options.update(kwargs)
    return simulate(n, policy(name), **options)


def test_every_client_reconnects_with_every_strategy():
    for name in STRATEGIES:
        result = run(name)
        assert result.all_back, name
        assert result.completion_time >= 1.0
        assert sum(result.attempt_ok) == result.n
        assert result.total_attempts > result.n  # some attempts hit the downtime


def test_the_same_seed_replays_exactly():
    a, b = run("full"), run("full")
    assert a.attempt_times == b.attempt_times and a.reconnected == b.reconnected
    assert run("full", seed=8).attempt_times != a.attempt_times


def test_no_jitter_gives_synchronized_spikes():
    result = run("exponential")
    counts = result.per_bin(0.1)
    busy = [c for c in counts if c]
    # every client attempts in the same 100 ms: bins hold all or nothing of the herd
    assert max(counts) == result.n
    assert len(busy) < 15


def test_busiest_counts_the_fullest_window_anywhere():
    assert busiest([], 0.1) == 0
    assert busiest([0.0, 0.05, 0.09, 0.1, 0.5], 0.1) == 3  # half-open: 0.1 is a window after 0.0
    assert busiest([0.95, 1.0, 1.04], 0.1) == 3  # straddles the fixed bins [0.9, 1.0) and [1.0, 1.1)
    assert busiest([0.5, 0.2, 0.25], 0.1) == 2  # in any order
    assert busiest([0.0, 0.01, 0.02, 1.0], 0.1, since=0.5) == 1  # only from `since` on


def test_float_sums_land_in_the_bin_they_mean():
    result = HerdResult(n=1, back_at=0.0)
    t = 0.0
    for _ in range(8):  # a fixed retry every 0.1 s: 0.1, 0.2, 0.30000000000000004, ..., 0.7999999999999999
        t += 0.1
        result.attempt_times.append(t)
    assert list(result.per_bin(0.1)) == [0] + [1] * 8  # one a bin, none piled up by rounding
    assert busiest(result.attempt_times, 0.1) == 1


def test_peaks_count_what_they_say():
    result = HerdResult(n=4, back_at=1.0)
    result.attempt_times.extend([0.1, 0.11, 0.12, 0.13, 1.0, 1.05, 1.5])  # a wave before the server was back
    result.accepted_at.extend([1.0, 1.05, 1.5, 2.2])
    assert result.peak_attempts() == 2  # the busiest 100 ms once back, not the wave at 0.1 s
    assert result.peak_accepts() == 3  # the busiest second: 1.0 to 2.0
    assert result.peak_accepts(window=2.0) == 4


def test_full_jitter_lowers_the_peak():
    none, full = run("exponential"), run("full")
    assert full.peak_attempts() <= none.peak_attempts() / 4
    assert full.completion_time < none.completion_time


def test_the_server_never_accepts_beyond_its_capacity():
    result = run("fixed", accept_rate=200.0, burst=20.0)
    # in any 100 ms: the burst plus 100 ms of the rate (a bin can straddle a refill)
    assert max(result.per_bin(0.1, ok=True)) <= 20 + 200 * 0.1 + 1
    assert result.completion_time >= 1.0 + (result.n - 20) / 200 - 0.05


def test_nobody_comes_back_if_the_server_never_accepts():
    result = simulate(50, policy("full"), downtime=1.0, accept_rate=0.0, burst=0.0, horizon=30.0)
    assert not result.all_back and math.isinf(result.completion_time)


def test_accept_limit_is_a_token_bucket():
    now = [0.0]
    limit = AcceptLimit(10.0, 2.0, clock=lambda: now[0])
    assert [limit.admit() for _ in range(3)] == [True, True, False]
    now[0] = 0.1  # one token back
    assert [limit.admit() for _ in range(2)] == [True, False]


def test_a_herd_log_becomes_times_since_the_outage():
    log = HerdLog(clock=lambda: 0.0)
    log.lost_at = {0: 100.1, 1: 100.2}  # the outage began at 100, the server was back at 101
    log.attempts = [  # client, due, started, ended, connected
        Attempt(1, 100.5, 100.5, 100.501, False),  # refused: the server was down
        Attempt(0, 101.2, 101.21, 101.25, True),  # the loop started it 10 ms late
        Attempt(1, 101.15, 101.3, 101.3, False),  # 503: the server was busy; due before client 0's
    ]
    log.accepted = [101.25]
    result = herd_result(log, 3, outage_at=100.0, back_at=101.0, label="x")
    assert result.back_at == 1.0 and result.label == "x"
    assert [round(t, 6) for t in result.lost[:2]] == [0.1, 0.2]
    assert math.isnan(result.lost[2])  # client 2 never reported
    assert [round(t, 6) for t in result.attempt_times] == [0.5, 1.15, 1.2]  # when due, in that order
    assert list(result.attempt_ok) == [0, 0, 1]
    assert [round(d, 6) for d in result.lags] == [0.0, 0.15, 0.01]
    assert [round(d, 6) for d in result.durations] == [0.001, 0.0, 0.04]
    assert round(result.reconnected[0], 6) == 1.25 and math.isnan(result.reconnected[1])
    assert not result.all_back and math.isinf(result.completion_time)
    assert [round(t, 6) for t in result.accepted_at] == [1.25]


def test_a_herd_log_stamps_reports_with_its_clock():
    now = [5.0]
    log = HerdLog(clock=lambda: now[0])
    log.lost(3)
    now[0] = 6.0
    log.attempt(3, 5.4, 5.5, connected=True)
    assert log.lost_at == {3: 5.0}
    assert log.attempts == [Attempt(3, 5.4, 5.5, 6.0, True)]


def test_a_small_real_herd_reconnects_and_the_model_follows_it():
    async def main():
        async with wslab.Lab() as lab:
            return await asyncio.wait_for(run_herd(
                lab, 30, policy("full"), downtime=0.3, accept_rate=300.0, seed=1, deadline=10.0), scaled(30))

    real = asyncio.run(main())
    assert real.all_back
    assert 0.3 <= real.back_at < 0.3 + scaled(1.0)  # the restart's downtime, and the time closing took
    assert all(0 <= t < real.back_at for t in real.lost)  # every client noticed during the outage
    assert real.completion_time < real.back_at + 2.0 + scaled(2.0)  # cap + 2 s, generous
    model = simulate(30, policy("full"), downtime=real.back_at, accept_rate=300.0, seed=1,
                     replay=True, lost_at=real.lost)
    assert model.all_back
    assert abs(model.completion_time - real.completion_time) < scaled(2.0)
