"""Notebook 08's three tables, measured on this machine (issue 11's closing note).

1. Three clients against tokens that live 2 s (the server closes with 4401 at expiry; replay on):
   rejected handshakes, time to recover, messages missed.
2. A busy client: time until the server's keepalive drops it, over handler time x ping_timeout
   x max_queue, for each way of handling messages, before and after the fixes.
3. A reconnect storm of 1,000 clients (in worker processes) with and without admission control:
   the server's peak CPU and accepts per 100 ms, handshake latency p99, time until all are back.

Prints what it measured, and the few figures that have a target next to it; never fails on timing.
The machine's load average is printed too: other programs share its cores, and every figure here
moves with them. Run it with ``python3 tasks.py bench benchmarks/bench_hardening.py`` (a few minutes);
``--only tokens``, ``--only busy`` or ``--only storm`` runs one table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time

import wslab
from wslab.clients.backoff import STRATEGIES
from wslab.runtime.display import table
from wslab.studies.busy import MODES, grid, grid_table, run_grid, summary
from wslab.studies.storm import run_storm
from wslab.studies.tokens import measure_tokens

HANDLERS, PING_TIMEOUTS, MAX_QUEUES = (0.02, 0.05, 0.1), (0.5, 2.0), (16, 64, None)
DEAD_AFTER = 5.0
STORM_POLICY = {"min_delay": 0.1, "max_delay": 2.0, "factor": 2.0, **STRATEGIES["full"]}  # notebook 05's schedule
STORM_N, STORM_WORKERS, STORM_RATE, STORM_SNAPSHOT = 1_000, 4, 100.0, 1_500


def heading(text: str) -> None:
    print(f"\n== {text} (load average {os.getloadavg()[0]:.1f})")


async def tokens(lab: wslab.Lab) -> None:
    heading("three token strategies, tokens live 2 s, replay on")
    runs = await measure_tokens(lab, lifetime=2.0, duration=9.0)
    print(table([r.row() for r in runs]))


async def busy(lab: wslab.Lab) -> None:
    heading("a busy client: when does keepalive drop it? (server publishes every 10 ms, pings every 0.25 s)")
    summaries, details = [], []
    for mode in MODES:
        results = await run_grid(lab, grid(HANDLERS, PING_TIMEOUTS, MAX_QUEUES, mode=mode), duration=6.0)
        summaries.append(summary(results))
        details += grid_table(results)
    results = await run_grid(lab, grid(HANDLERS, PING_TIMEOUTS, MAX_QUEUES, dead_after=DEAD_AFTER), duration=6.0)
    summaries.append(summary(results))
    details += grid_table(results)
    print(table(summaries))
    print()
    print(table(details))


async def storm(lab: wslab.Lab) -> None:
    heading(f"a storm of {STORM_N} clients ({STORM_WORKERS} worker processes), each sent a {STORM_SNAPSHOT}-item "
            "snapshot")
    results = []
    for rate in (None, STORM_RATE):
        label = "no admission control" if rate is None else f"admission {rate:.0f}/s, 503 + Retry-After"
        results.append(await run_storm(lab, STORM_N, STORM_POLICY, rate=rate, workers=STORM_WORKERS,
                                       snapshot=STORM_SNAPSHOT, seed=1, deadline=40.0, label=label))
    print(table([r.row() for r in results]))
    burst = max(1.0, STORM_RATE * 0.1)
    paced = results[1].peak_accepts()
    print(f"\nwith admission: peak accepts / 100 ms {paced}, target <= {burst + STORM_RATE * 0.1:.0f} "
          f"(burst + 100 ms of rate): {'met' if paced <= burst + STORM_RATE * 0.1 else 'NOT met'}")


async def main(only: str | None) -> None:
    print(f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs")
    started = time.perf_counter()
    async with wslab.Lab() as lab:
        for name, step in (("tokens", tokens), ("busy", busy), ("storm", storm)):
            if only in (None, name):
                await step(lab)
    print(f"\n({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("tokens", "busy", "storm"), help="run one table only")
    asyncio.run(main(parser.parse_args().only))
