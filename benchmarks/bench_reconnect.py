"""How long after the server is back is the reconnecting client open again?

A :class:`wslab.clients.reconnect.ReconnectingClient` is connected to a lab server.
The server stops (1012) and stays down long enough for a few failed
attempts, then listens again at a random moment of the client's wait. We
measure, on the lab's timeline:

- **back -> open**: from the server listening again to the client's ``open``
  event (opening handshake done);
- **delay**: the backoff delay the client was waiting out when the server
  came back (its last ``retry`` event before that moment).

The client cannot be back before its next attempt, which is up to one delay
away, so the target is: back -> open <= delay + 50 ms, in every trial. The
part beyond the scheduled attempt ("late by") is the reconnection's own
overhead: the timer's lateness plus TCP and the opening handshake (its worst
case can be larger when an attempt races the server's restart and fails: the
client then waits one more delay, which the target still covers).

Run: ``python3 tasks.py bench`` or ``.venv/bin/python benchmarks/bench_reconnect.py``.
Exit code 1 if any trial misses the target.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics

from websockets.frames import CloseCode

import wslab
from wslab.clients.reconnect import ReconnectingClient
from wslab.runtime.timing import wait_until

MARGIN = 0.050  # seconds allowed beyond the delay chosen


async def hold(ws) -> None:
    await ws.wait_closed()


async def trial(lab: wslab.Lab, server: wslab.LabServer, client: ReconnectingClient, rng: random.Random,
                downtime: float) -> tuple[float, float, float]:
    """One outage. Returns (back -> open, delay being waited out at that moment, late by)."""
    opens = client.opens
    await server.stop(code=CloseCode.SERVICE_RESTART, reason="service restart")
    await asyncio.sleep(downtime * rng.uniform(1.0, 1.5))  # a random phase of the client's wait
    await server.start()
    back = lab.timeline.now()
    # Polled every millisecond, but the times measured are the timeline's events, not the poll's.
    await wait_until(lambda: client.opens > opens, 30, f"{client.name} open again", poll=0.001)
    opened = lab.timeline.select(source=client.name, kind="open")[-1].t
    retry = [e for e in lab.timeline.select(source=client.name, kind="retry") if e.t <= back][-1]
    scheduled = retry.t + retry.data["delay"]  # when the attempt after the server's return was due
    return opened - back, retry.data["delay"], opened - max(scheduled, back)


async def series(rng: random.Random, trials: int, label: str, downtime: float, **backoff) -> dict:
    async with wslab.Lab() as lab:
        server = await lab.serve(hold, name="server")
        client = ReconnectingClient(server.url, name="client", timeline=lab.timeline, open_timeout=1.0,
                                    min_uptime=0.0, record_messages=False, **backoff)
        lab.spawn(client.run(), name="client")
        await client.wait_open(5)
        results = [await trial(lab, server, client, rng, downtime) for _ in range(trials)]
    back_open = [r[0] for r in results]
    ok = [r[0] <= r[1] + MARGIN for r in results]
    return {
        "label": label, "trials": trials,
        "delay": max(r[1] for r in results),
        "median": statistics.median(back_open), "worst": max(back_open),
        "late_median": statistics.median(r[2] for r in results), "late_worst": max(r[2] for r in results),
        "met": all(ok), "misses": ok.count(False),
    }


async def main(trials: int, seed: int) -> int:
    rng = random.Random(seed)
    rows = []
    for delay in (0.05, 0.1, 0.25, 0.5, 1.0):
        rows.append(await series(rng, trials, f"fixed {delay:g} s", downtime=2 * delay,
                                 min_delay=delay, max_delay=delay, factor=1.0))
    rows.append(await series(rng, trials, "0.05 x 1.5^n, cap 0.5", downtime=1.5,
                             min_delay=0.05, max_delay=0.5, factor=1.5))
    print(f"server down then back at a random moment of the client's wait; {trials} trials per row; "
          "loopback, one event loop")
    print(f"{'backoff':<22} {'delay (s)':>9} {'back->open median':>18} {'worst':>8} {'target':>8} "
          f"{'late by median':>15} {'worst':>8}  met")
    for r in rows:
        target = r["delay"] + MARGIN
        print(f"{r['label']:<22} {r['delay']:>9.3f} {1000 * r['median']:>15.1f} ms {1000 * r['worst']:>5.1f} ms "
              f"{1000 * target:>5.0f} ms {1000 * r['late_median']:>12.1f} ms {1000 * r['late_worst']:>5.1f} ms  "
              + ("met" if r["met"] else f"NOT met ({r['misses']} misses)"))
    print(f"target: back -> open <= delay being waited out + {1000 * MARGIN:.0f} ms, in every trial "
          f"('late by': open minus the scheduled attempt, the reconnection's own overhead)")
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5, help="outages per row (default: 5)")
    parser.add_argument("--seed", type=int, default=1, help="seed for the moments the server comes back (default: 1)")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.trials, args.seed)))
