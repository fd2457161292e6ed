"""How well does the fix of notebook 02 hold up? Four figures, each printed next to its target.

1. A vanished peer (the fault proxy stalls) leaves FixedServer's map within
   ping_interval + ping_timeout + 0.2 s. Compared with websockets' own
   keepalive, measured at scaled settings and computed at its defaults
   (about 50 s), and never while a send to the peer is blocked.
2. A client whose send blocks is removed within send_deadline + 0.2 s.
3. 100 clients, 10 stalled: healthy clients' p99 latency at most 2x the
   no-fault p99 for FixedServer; naive (blocked) and broadcast() for comparison.
4. Bytes held per stalled client at most max_buffer (1 MiB) for FixedServer,
   against the growth under broadcast() over the same interval.

Everything runs on 127.0.0.1 in one event loop, as in a notebook's kernel.

Run: ``python3 tasks.py bench`` or ``.venv/bin/python benchmarks/bench_fix.py``.
Exit code 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import statistics

from websockets.asyncio.server import serve

from wslab import Lab
from wslab.faults.failures import connect_victim, inflict
from wslab.runtime.timeline import Timeline
from wslab.servers import BroadcastServer, FixedServer, NaiveServer, make_app
from wslab.studies.latency import blocked_send_removal, broadcast_latency
from wslab.studies.removal import detection_times, start_variant, time_to_removal

MAX_BUFFER = 1024 * 1024
SEND_DEADLINE = 0.5
SLACK = 0.2  # seconds allowed over each theoretical bound

failures: list[str] = []


def verdict(ok: bool, what: str) -> str:
    if not ok:
        failures.append(what)
    return "met" if ok else "NOT met"


async def websockets_keepalive_removal(interval: float, timeout: float, close_timeout: float) -> float | None:
    """Fault-to-removal of a vanished peer with websockets' own keepalive and a finally block."""
    async with Lab() as lab:
        app = make_app("broadcast", lab.timeline, ping_interval=interval, ping_timeout=timeout)
        server, proxy = await start_variant(lab, app, name="ws-keepalive", close_timeout=close_timeout)
        victim = await connect_victim(lab, server, "vanished", proxy=proxy, name="victim", deadline=10.0)
        await inflict(lab, victim)
        assert victim.fault_at is not None
        removed = await time_to_removal(app, victim.server_ws, victim.fault_at, lab.timeline,
                                        interval + timeout + close_timeout + 3.0)
        server.abort_connections()
        return removed


async def vanished(repeats: int) -> None:
    print("== 1. vanished peer: fault to removal")
    settings = [(0.25, 0.25), (0.5, 0.5), (1.0, 0.5), (0.5, 1.0)]
    rows = await detection_times(settings, repeats=repeats, seed=7)
    for pi, pt in settings:
        times = [t for i, o, t in rows if (i, o) == (pi, pt)]
        done = [t for t in times if t is not None]
        worst = max(done) if len(done) == len(times) else float("inf")
        target = pi + pt + SLACK
        print(f"FixedServer ping_interval={pi:<4} ping_timeout={pt:<4} n={len(times):<3} "
              f"min {min(done):.3f} s  median {statistics.median(done):.3f} s  max {worst:.3f} s   "
              f"target <= {target:.2f} s: {verdict(worst <= target, f'vanished {pi}/{pt}')}")

    names = ("ping_interval", "ping_timeout", "close_timeout")
    defaults = {k: inspect.signature(serve).parameters[k].default for k in names}
    pi, pt, ct = 0.25, 0.25, 1.0
    measured = await websockets_keepalive_removal(pi, pt, ct)
    shown = "still held" if measured is None else f"{measured:.3f} s"
    print(f"websockets' keepalive, scaled: ping_interval={pi} ping_timeout={pt} close_timeout={ct}: removed after "
          f"{shown} (computed: up to ping_interval + ping_timeout + close_timeout = {pi + pt + ct:.2f} s)")
    print(f"websockets' keepalive at its defaults {defaults}: up to "
          f"{defaults['ping_interval'] + defaults['ping_timeout']} s to notice, "
          f"{sum(defaults.values())} s until the handler's finally runs (computed, not waited for)")
    blocked = await blocked_send_removal(
        FixedServer(Timeline(), name="removal", keepalive=False, isolation=False), deadline=3.0,
        ping_interval=pi, ping_timeout=pt,
    )
    shown = ("still held after 3 s: the ping waits behind the blocked send" if blocked is None
             else f"removed after {blocked:.3f} s")
    print(f"websockets' keepalive, send blocked (serial loop, ping_interval={pi} ping_timeout={pt}): {shown}")


async def blocked(repeats: int) -> None:
    print("\n== 2. blocked send: broadcast to removal")
    times = []
    for _ in range(repeats):
        app = FixedServer(Timeline(), keepalive=False, send_deadline=SEND_DEADLINE, max_buffer=64 * MAX_BUFFER)
        times.append(await blocked_send_removal(app))
    done = [t for t in times if t is not None]
    worst = max(done) if len(done) == len(times) else float("inf")
    target = SEND_DEADLINE + SLACK
    print(f"FixedServer send_deadline={SEND_DEADLINE} n={repeats}  min {min(done):.3f} s  max {worst:.3f} s   "
          f"target <= {target:.2f} s: {verdict(worst <= target, 'blocked send')}")


async def stalled(rounds: int, duration: float) -> None:
    print(f"\n== 3. and 4. 100 clients, 8 KiB every 20 ms for {duration:g} s, 0 or 10 stalled "
          f"({rounds} rounds, medians)")
    make = {
        "naive": lambda: NaiveServer(Timeline()),
        "broadcast()": lambda: BroadcastServer(Timeline(), ping_interval=20, ping_timeout=20),
        "fixed": lambda: FixedServer(Timeline(), ping_interval=0.5, ping_timeout=0.5,
                                     send_deadline=SEND_DEADLINE, max_buffer=MAX_BUFFER),
    }
    await broadcast_latency(make["fixed"](), stalled=0, duration=0.5)  # warm-up
    runs: dict[tuple[str, int], list] = {key: [] for key in ((v, s) for v in make for s in (0, 10))}
    for _ in range(rounds):  # interleaved, so every variant sees the same machine load
        for variant, new_app in make.items():
            for n in (0, 10):
                runs[variant, n].append(await broadcast_latency(
                    new_app(), variant=variant, stalled=n, duration=duration, payload_size=8192))

    def p99(variant: str, n: int) -> float:
        return statistics.median(r.p99 for r in runs[variant, n])

    print(f"{'variant':<12} {'p99, 0 stalled':>15} {'p99, 10 stalled':>16} {'ratio':>7} {'delivered':>9} "
          f"{'held/stalled peak':>18} {'held/stalled end':>17}")
    for variant in make:
        r10 = runs[variant, 10]
        print(f"{variant:<12} {p99(variant, 0) * 1000:>12.1f} ms {p99(variant, 10) * 1000:>13.1f} ms "
              f"{p99(variant, 10) / p99(variant, 0):>6.1f}x {statistics.median(r.delivered for r in r10):>9.0%} "
              f"{statistics.median(r.held_peak for r in r10) / 10 / 1024:>14.0f} KiB "
              f"{statistics.median(r.held_end for r in r10) / 10 / 1024:>13.0f} KiB")
    ratio = p99("fixed", 10) / p99("fixed", 0)
    print(f"fixed: healthy p99 with 10 stalled / without = {ratio:.2f}x   "
          f"target <= 2x: {verdict(ratio <= 2, 'p99 ratio')}")
    peak = max(r.held_peak for r in runs["fixed", 10]) / 10
    print(f"fixed: peak bytes held per stalled client {peak / 1024:.0f} KiB   target <= {MAX_BUFFER // 1024} KiB: "
          f"{verdict(peak <= MAX_BUFFER, 'held bytes')}")
    growth = statistics.median(r.held_end for r in runs["broadcast()", 10]) / 10
    print(f"broadcast(): {growth / 1024:.0f} KiB held per stalled client at the end ({duration:g} s of broadcasts), "
          f"{growth / duration / 1024:.0f} KiB/s, never dropped "
          f"(stalled sessions dropped: {max(r.removed_stalled for r in runs['broadcast()', 10])})")
    print(f"naive: healthy clients received {statistics.median(r.delivered for r in runs['naive', 10]):.0%} "
          f"of the messages: the serial loop blocks on the first stalled client")


async def main(args: argparse.Namespace) -> int:
    await vanished(args.repeats)
    await blocked(args.repeats)
    await stalled(args.rounds, args.duration)
    print(f"\n{'all targets met' if not failures else 'missed: ' + ', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="runs per vanished/blocked setting (default: 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the stalled-client runs (default: 3)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of broadcasting per run (default: 3)")
    raise SystemExit(asyncio.run(main(parser.parse_args())))
