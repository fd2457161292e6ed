"""Notebook 08's studies: their pure analysis without sockets, and each one run small, for real."""

from __future__ import annotations

import asyncio
import math
import time
from array import array

import numpy as np
import pytest

from wslab import Lab
from wslab.clients.worker import MessageWorker
from wslab.runtime.timeline import Event
from wslab.runtime.timing import scaled
from wslab.studies.busy import Cell, CellResult, grid, grid_table, run_grid, summary
from wslab.studies.simulate import HerdResult
from wslab.studies.storm import StormResult, cpu_per_bin, run_storm
from wslab.studies.tokens import STRATEGIES, measure_tokens, summarize

# -- MessageWorker ---------------------------------------------------------------------------------------


async def test_the_worker_handles_in_order_and_put_never_waits():
    done = []

    async def handle(m):
        await asyncio.sleep(0.001)
        done.append(m)

    worker = MessageWorker(handle)
    task = asyncio.create_task(worker.run())
    started = time.monotonic()
    for i in range(50):
        worker.put(i)
    assert time.monotonic() - started < 0.05 and worker.peak == 50  # put() only appends
    while worker.handled < 50:
        await asyncio.sleep(0.01)
    task.cancel()
    assert done == list(range(50)) and len(worker) == 0


async def test_a_full_backlog_drops_the_oldest_and_counts_them():
    worker = MessageWorker(lambda m: None, maxsize=3)
    for i in range(5):
        worker.put(i)
    assert list(worker.backlog) == [2, 3, 4] and worker.dropped == 2
    with pytest.raises(ValueError):
        MessageWorker(lambda m: None, maxsize=0)


async def test_blocking_work_in_a_thread_leaves_the_loop_free():
    worker = MessageWorker(lambda m: time.sleep(0.2), in_thread=True)
    task = asyncio.create_task(worker.run())
    worker.put("slow")
    await asyncio.sleep(0.01)
    started = time.monotonic()
    await asyncio.sleep(0.01)  # the loop runs while the handler sleeps in its thread
    assert time.monotonic() - started < 0.15
    task.cancel()


# -- the busy client -------------------------------------------------------------------------------------


def test_grid_table_and_summary_from_results():
    cells = grid([0.02, 0.1], [0.5], [16, None])
    assert [(c.handler, c.max_queue) for c in cells] == [(0.02, 16), (0.02, None), (0.1, 16), (0.1, None)]
    results = [CellResult(cells[0], 1.9, "no pong within 0.5 s", 150, 0), CellResult(cells[1], None, "", 230, 0),
               CellResult(cells[2], 0.8, "no pong within 0.5 s", 49, 0), CellResult(cells[3], None, "", 49, 0)]
    rows = grid_table(results)
    assert rows[0]["dropped after (s)"] == 1.9 and rows[1]["dropped after (s)"] == "never"
    assert rows[1]["max_queue"] == "None" and rows[0]["server"] == "before"
    line = summary(results)
    assert (line["cells"], line["dropped"], line["soonest drop (s)"]) == (4, 2, 0.8)
    fixed = summary([CellResult(Cell(0.1, 0.5, 16, "worker thread"), None, "", 48, 380)])
    assert (fixed["dropped"], fixed["soonest drop (s)"], fixed["largest backlog (messages)"]) == (0, "-", 380)


@pytest.mark.deadline(90)
async def test_a_busy_client_is_dropped_as_dead_until_it_reads_on_or_the_server_waits_for_late_pongs():
    cells = [Cell(0.1, 0.5, 16, "await in the loop"), Cell(0.1, 0.5, 16, "time.sleep in the loop"),
             Cell(0.1, 0.5, 16, "worker thread"), Cell(0.1, 0.5, 16, "await in the loop", dead_after=10.0)]
    async with Lab() as lab:
        before, blocking, thread, server_fix = await run_grid(lab, cells, duration=3.0, parallel=4)
    for r in (before, blocking):
        assert r.dropped_at is not None and r.dropped_at < 3.0 and "no pong within 0.5 s" in r.why
    assert thread.dropped_at is None and thread.backlog > 100  # read on: alive, and behind by its backlog
    assert server_fix.dropped_at is None and server_fix.late_pongs and max(server_fix.late_pongs) > 0.5


# -- the storm -----------------------------------------------------------------------------------------------


def test_cpu_per_bin_is_cpu_seconds_per_wall_second():
    samples = [(100.0, 5.0), (100.05, 5.05), (100.1, 5.1), (100.2, 5.12), (100.3, 5.14)]
    cpu = cpu_per_bin(samples, start=100.0, bin=0.1)
    assert np.allclose(cpu[:3], [1.0, 0.2, 0.2])
    assert cpu_per_bin(samples[:1], start=100.0).size == 0


def test_storm_figures_from_a_result():
    herd = HerdResult(n=3, back_at=1.0, reconnected=[1.2, 1.5, 2.5], lost=[0, 0, 0],
                      attempt_times=array("d", [0.5, 1.1, 1.2, 1.4, 2.4]),
                      attempt_ok=bytearray([0, 0, 1, 1, 1]), accepted_at=array("d", [1.25, 1.28, 2.45]),
                      durations=array("d", [0.001, 0.2, 0.05, 0.1, 0.3]))
    result = StormResult(herd, np.array([0.0] * 10 + [0.9, 0.4]), refused=1, server_handshakes=[0.01, 0.02],
                         label="x")
    assert result.peak_cpu == 0.9 and result.peak_accepts() == 2 and result.all_back_after == 1.5
    assert math.isclose(result.handshake_latency(100), 0.3) and math.isclose(result.handshake_latency(0), 0.05)
    assert result.row()["handshake p99, server (ms)"] == 20


@pytest.mark.deadline(120)
async def test_a_small_storm_comes_back_with_and_without_admission_control():
    policy = {"min_delay": 0.05, "max_delay": 0.5, "factor": 2.0, "jitter": "full"}
    async with Lab() as lab:
        free = await run_storm(lab, 60, policy, workers=2, downtime=0.3, deadline=20, label="none")
        paced = await run_storm(lab, 60, policy, rate=20, burst=5, workers=2, downtime=0.3, deadline=30,
                                label="admission")
    assert free.herd.all_back and paced.herd.all_back
    assert free.refused == 0 and paced.refused > 0
    assert paced.peak_accepts() <= 5 + 2  # the burst, plus what 100 ms of rate adds
    assert paced.all_back_after >= (60 - 5) / 20 - 0.5  # 20 a second: the herd takes about 3 s to get in
    assert len(free.server_handshakes) == 60 and free.cpu.size > 0


# -- tokens --------------------------------------------------------------------------------------------------


def test_summarize_reads_expiries_rejections_and_recoveries_from_events():
    events = [Event(1.0, "c", "open"), Event(3.0, "c", "close", code=4401), Event(3.4, "c", "open"),
              Event(5.4, "c", "close", code=4401), Event(5.5, "c", "error", detail="InvalidStatus('HTTP 401')")]
    run = summarize("fixed URL", events, published=range(10, 30), seen=set(range(10, 20)), gave_up="stop: HTTP 401")
    assert (run.expiries, run.rejected, run.missed, run.received) == (2, 1, 10, 10)
    assert run.recoveries[0] == pytest.approx(0.4) and run.recoveries[1] == math.inf
    assert run.row()["time to recover, max (s)"] == "never"


@pytest.mark.deadline(60)
async def test_three_token_strategies_for_real_and_again_in_the_same_lab():
    # Twice, as a notebook cell run twice: the second run must count its own events only.
    async with Lab() as lab:
        both = [{r.strategy: r for r in await measure_tokens(lab, lifetime=0.6, duration=2.5, min_delay=0.1)}
                for _ in range(2)]
    for runs in both:
        assert list(runs) == list(STRATEGIES)
        fixed, per_attempt, refresh = runs["fixed URL"], runs["token per attempt"], runs["refresh on 4401"]
        assert fixed.rejected == 1 and fixed.gave_up is not None and "401" in fixed.gave_up and fixed.missed > 0
        for run in (per_attempt, refresh):
            assert run.expiries >= 2 and run.rejected == 0 and run.missed == 0 and run.gave_up is None
            assert all(math.isfinite(r) and r < scaled(2.0) for r in run.recoveries)
    assert {r.client for r in both[0].values()}.isdisjoint(r.client for r in both[1].values())
