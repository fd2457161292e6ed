"""One server process against two with the Redis backplane, at the same load; and a kill -9 with replay.

Prints each figure next to its target (issue 10); exit code 1 if a target is missed.

1. ``CLIENTS`` clients, half on each server process, against
   - one process running ``FixedServer`` that broadcasts to every client
     ``RATE`` times a second;
   - two processes running ``BackplaneServer`` and sharing a real redis-server,
     and a publisher broadcasting ``RATE`` times a second through Redis: every
     client still gets every broadcast.
   Both broadcast on an absolute schedule, so the load is the same, and both
   keep ``KEEPALIVE``. (``wslab serve --server backplane`` runs the same
   server; tests/test_backplane.py runs it.)
   a. At ``RATE``, repeated ``ROUNDS`` times: delivered messages per second,
      latency p50/p99 (from the sender's ``time.monotonic()`` in the frame to the
      client's: one clock on Linux), their ratios, and messages lost. Target:
      the median p99 with the backplane at most 2x the single process's, 0 lost.
   b. Throughput: the highest rate of ``RAMP`` each setup sustains (95 % of it
      reaches the clients, nothing lost, no client dropped, p99 under 1 s), and
      the messages per second it delivers then.
2. kill -9 of one of the two processes while a publisher broadcasts 1,000
   messages: clients reconnect through nginx (round robin; it passes them to
   the survivor once the killed process's port refuses) with ``?last_seq``. Target: 0 lost, 0 duplicated with
   replay; without replay, the loss is printed for comparison. Also how long
   until every client of the killed process was back.
3. The fan-out path the backplane uses (pub/sub) against a loop on XREAD BLOCK,
   one reader process each, the same publisher: the numbers behind the choice
   explained in ``wslab/servers/backplane.py``.

Servers, Redis and client workers are separate processes on 127.0.0.1, all on
this machine's cores: the clients' work competes with the servers'. Run it with
``python3 tasks.py bench benchmarks/bench_backplane.py`` (about five minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect

import wslab
from wslab.clients.reconnect import ReconnectingClient
from wslab.runtime.nginx import NGINX, start_nginx
from wslab.runtime.programs import ChildProcess
from wslab.runtime.redis import REDIS, start_redis
from wslab.servers.backplane import BackplaneServer, start_backplane
from wslab.servers.base import start_app
from wslab.servers.fixed import FixedServer
from wslab.servers.process import start_server_process
from wslab.servers.redisbus import PUBLISH
from wslab.servers.wire import Numbered, decode, stamp
from wslab.studies.herd import raise_fd_limit

CLIENTS = 1_000
RATE = 5.0  # broadcasts per second, in all, for the latency comparison: well below what 1 process can do
RAMP = (2.5, 5.0, 10.0, 20.0, 40.0, 80.0)  # broadcasts per second tried for the throughput, until one is not sustained
# Both setups' servers ping every 2 s and give a pong 2 s: FixedServer's 0.5 s drops healthy clients
# whenever a loaded 2-core machine stalls a process that long, and that would be measured instead.
KEEPALIVE = {"ping_interval": 2.0, "ping_timeout": 2.0}
ROUNDS = 5  # the same-load comparison is repeated, alternating, and compared on medians: the cores are shared
DURATION = 4.0
WARMUP = 1.0
WORKERS = 4  # client processes
KILL_CLIENTS = 40
KILL_MESSAGES = 1_000
KILL_RATE = 100.0  # messages per second: 4,000 deliveries/s for the survivor, within what one process sustains

failures: list[str] = []


def row(what: str, measured: str, target: str = "", met: bool | None = None) -> None:
    verdict = "" if met is None else ("met" if met else "NOT met")
    if met is False:
        failures.append(what)
    print(f"{what:52s} {measured:>22s}  {target:>14s}  {verdict}", flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# -- a client worker: run as ``bench_backplane.py --worker COUNT URL...`` ---------------------------


async def worker(count: int, urls: list[str]) -> None:
    """Connect ``count`` clients over ``urls``; print ready; read START END; report what arrived in between."""
    raise_fd_limit(count + 100)
    latencies: list[float] = []
    seqs: list[list[int]] = [[] for _ in range(count)]
    closed = 0
    window = [float("inf"), float("inf")]

    async def client(i: int) -> None:
        nonlocal closed
        async with connect(urls[i % len(urls)], open_timeout=30, ping_interval=None, compression=None) as ws:
            ready.append(i)
            try:
                async for raw in ws:
                    now, frame = time.monotonic(), decode(raw)
                    # The window is on arrival: frames arrive in number order, so a client's numbers in
                    # it are a contiguous range unless something was lost. (Two publishers' send times
                    # are not in number order: each stamps its frame before Redis numbers it.)
                    if isinstance(frame, Numbered) and window[0] <= now < window[1]:
                        latencies.append(now - frame.sent_at)
                        seqs[i].append(frame.seq)
            finally:
                closed += ws.close_code not in (None, 1000)

    ready: list[int] = []
    tasks = [asyncio.create_task(client(i)) for i in range(count)]
    while len(ready) < count:
        await asyncio.sleep(0.05)
        if any(t.done() for t in tasks):
            raise SystemExit(f"a client failed: {next(t for t in tasks if t.done()).exception()}")
    print("ready", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    window[:] = [float(x) for x in line.split()]
    await asyncio.sleep(max(0.0, window[1] - time.monotonic()) + 0.1)
    expected = sum(max(s) - min(s) + 1 for s in seqs if s)
    print(json.dumps({"latencies": latencies, "received": sum(map(len, seqs)), "expected": expected,
                      "silent": sum(1 for s in seqs if not s), "closed": closed}), flush=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def load(urls: list[str]) -> dict:
    """Run the client workers against ``urls`` for WARMUP + DURATION s; return what they measured together."""
    per = CLIENTS // WORKERS
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--worker", str(per), *urls,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 26) for _ in range(WORKERS)]
    try:
        for proc in procs:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line.strip() == b"ready", line
        start = time.monotonic() + WARMUP
        for proc in procs:
            proc.stdin.write(f"{start} {start + DURATION}\n".encode())
            await proc.stdin.drain()
        results = [json.loads(await asyncio.wait_for(proc.stdout.readline(), DURATION + 60)) for proc in procs]
    finally:  # interrupted or not, no worker outlives the run
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    return {
        "latencies": [x for r in results for x in r["latencies"]],
        "received": sum(r["received"] for r in results),
        "expected": sum(r["expected"] for r in results),
        "silent": sum(r["silent"] for r in results),
        "closed": sum(r["closed"] for r in results),
    }


async def paced(rate: float, send) -> None:
    """Call ``send(n)`` ``rate`` times a second, on an absolute schedule (late calls catch up), until cancelled."""
    start, n = time.monotonic(), 0
    while True:
        await send(n)
        n += 1
        await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))


async def server(kind: str, rate: float, backplane: str) -> None:
    """Run as ``bench_backplane.py --server fixed RATE -`` (FixedServer broadcasting RATE/s to its clients)
    or ``--server backplane 0 REDIS_URL`` (a BackplaneServer that only delivers). Prints its URL."""
    async with wslab.Lab() as lab:
        if kind == "fixed":
            app = FixedServer(lab.timeline, "single", **KEEPALIVE)
            url = (await start_app(lab, app)).url
        else:
            app = BackplaneServer(lab.timeline, "backplane", backplane=backplane, **KEEPALIVE)
            url = (await start_backplane(lab, app)).url
        print(url, flush=True)
        if rate:
            await paced(rate, lambda n: app.broadcast(stamp(n)))
        else:
            await asyncio.Event().wait()  # until lab.close() stops this process


async def start_server(lab: wslab.Lab, name: str, *args: str) -> str:
    async def ready(directory: Path) -> bool:
        return (directory / "out.log").read_text().startswith("ws://")

    argv = [sys.executable, "-u", os.path.abspath(__file__), "--server", *args]
    process = await ChildProcess.start(lab, name, lambda _: argv, ready=ready, log_name="out.log")
    return (process.directory / "out.log").read_text().split()[0]


async def run_single(rate: float) -> dict:
    async with wslab.Lab() as lab:
        return await load([await start_server(lab, "single", "fixed", str(rate), "-")])


async def run_pair(rate: float) -> dict:
    async with wslab.Lab() as lab:
        redis = await start_redis(lab)
        urls = [await start_server(lab, f"p{i}", "backplane", "0", redis.url) for i in range(2)]
        publisher = BackplaneServer(lab.timeline, "publisher", backplane=redis.url)
        await start_backplane(lab, publisher)
        lab.spawn(paced(rate, lambda n: publisher.publish(f"message {n}")), name="publishing")
        return await load(urls)


async def one_and_two(rate: float) -> tuple[dict, dict]:
    """The same clients against 1 fixed process, then 2 backplane processes, ``rate`` broadcasts/s in all."""
    return await run_single(rate), await run_pair(rate)


def reached(run: dict) -> float:
    """Broadcasts per second that reached the clients."""
    return run["expected"] / max(1, CLIENTS - run["silent"]) / DURATION


def sustained(run: dict, rate: float) -> bool:
    """Kept up: 95 % of the rate reached every client, none lost, none dropped, p99 under a second."""
    return (reached(run) >= 0.95 * rate and run["expected"] == run["received"] and run["silent"] == 0
            and run["closed"] == 0 and percentile(run["latencies"], 0.99) < 1.0)


def ms(run: dict, q: float) -> float:
    return percentile(run["latencies"], q) * 1e3


async def steady() -> None:
    print(f"\n== 1a. the same load: {CLIENTS} clients, {RATE:g} broadcasts/s in all ({CLIENTS * RATE:,.0f} "
          f"deliveries/s), {DURATION:g} s measured after {WARMUP:g} s; {ROUNDS} rounds, 1 process then 2")
    runs: dict[str, list[dict]] = {"1 process (fixed)": [], "2 processes + Redis": []}
    for n in range(ROUNDS):
        one, two = await one_and_two(RATE)
        runs["1 process (fixed)"].append(one)
        runs["2 processes + Redis"].append(two)
        row(f"round {n + 1}: p50 / p99, 1 process | 2 processes",
            f"{ms(one, 0.5):.0f} / {ms(one, 0.99):.0f} | {ms(two, 0.5):.0f} / {ms(two, 0.99):.0f} ms")
    medians = {}
    for label, done in runs.items():
        medians[label] = [statistics.median(ms(run, q) for run in done) for q in (0.5, 0.99)]
        row(f"{label}: broadcasts/s that reached the clients", f"{statistics.median(map(reached, done)):.1f}")
        row(f"{label}: delivered (median)", f"{statistics.median(r['received'] for r in done) / DURATION:,.0f} msg/s")
        row(f"{label}: latency p50 / p99 (medians)", f"{medians[label][0]:.1f} / {medians[label][1]:.1f} ms")
        lost = sum(r["expected"] - r["received"] for r in done)
        silent, dropped = sum(r["silent"] for r in done), sum(r["closed"] for r in done)
        row(f"{label}: lost / silent / dropped, all rounds", f"{lost} / {silent} / {dropped}", "0 / 0 / 0",
            lost == silent == dropped == 0)
    (one_p50, one_p99), (two_p50, two_p99) = medians.values()
    row("ratio p50 (2 processes / 1)", f"{two_p50 / one_p50:.2f}x")
    row("ratio p99 (2 processes / 1)", f"{two_p99 / one_p99:.2f}x", "<= 2.00x", two_p99 <= 2 * one_p99)

    print(f"\n== 1b. throughput: the highest of {', '.join(f'{r:g}' for r in RAMP)} broadcasts/s each setup "
          f"sustains (95 % reached, 0 lost, 0 dropped, p99 < 1 s), {CLIENTS} clients")
    best = {}
    for label, run_at in (("1 process (fixed)", run_single), ("2 processes + Redis", run_pair)):
        for rate in RAMP:
            run = await run_at(rate)
            row(f"{label} at {rate:g}/s: reached, delivered, p99",
                f"{reached(run):.1f}/s, {run['received'] / DURATION:,.0f}/s, {ms(run, 0.99):.0f} ms")
            if not sustained(run, rate):
                row(f"{label} at {rate:g}/s: not sustained", f"lost {run['expected'] - run['received']}, "
                    f"silent {run['silent']}, dropped {run['closed']}")
                break
            best[label] = run["received"] / DURATION
    one, two = best.get("1 process (fixed)", 0.0), best.get("2 processes + Redis", 0.0)
    row("throughput, 1 process: delivered msg/s sustained", f"{one:,.0f}" if one else f"< {RAMP[0]:g} broadcasts/s")
    row("throughput, 2 processes + Redis: delivered msg/s", f"{two:,.0f}" if two else f"< {RAMP[0]:g} broadcasts/s")
    row("ratio (2 processes / 1)", f"{two / one:.2f}x" if one else "-")


# -- 2. kill -9 -----------------------------------------------------------------------------------------


async def kill_run(recover: bool) -> dict:
    async with wslab.Lab() as lab:
        redis = await start_redis(lab)
        procs = [await start_server_process(lab, f"p{i}", "--server", "backplane", "--backplane", redis.url,
                                            "--broadcast-interval", "0") for i in range(2)]
        publisher = BackplaneServer(lab.timeline, "publisher", backplane=redis.url)
        await start_backplane(lab, publisher)
        # nginx in front, round robin: after the kill it finds p0's port refused and passes clients to p1.
        lb = await start_nginx(lab, [p.url for p in procs], name="lb")
        clients, seqs = [], {}
        for i in range(KILL_CLIENTS):
            client = ReconnectingClient(lb.url, name=f"c{i}", timeline=lab.timeline, min_delay=0.05,
                                        max_delay=0.5, open_timeout=2.0, recover=recover, record_messages=False)
            seqs[client.name] = []
            client.on_message = lambda m, s=seqs[client.name]: m.seq is not None and s.append(m.seq)
            lab.spawn(client.run(), name=client.name)
            clients.append(client)
        for client in clients:
            await client.wait_open(30)
        published, killed_at = [], 0.0
        for n in range(KILL_MESSAGES):
            if n == KILL_MESSAGES * 3 // 10:
                await procs[0].kill()
                killed_at = lab.timeline.now()
            published.append(await publisher.publish(f"m{n}"))
            await asyncio.sleep(1 / KILL_RATE)
        last = published[-1]

        async def everyone_past_the_ledger() -> bool:
            # Keep broadcasting after the ledger until every client is live past its end: whatever
            # of the ledger a client does not have by then, it will never get.
            await publisher.publish("after the ledger")
            return all(s and s[-1] > last for s in seqs.values())

        await wslab.wait_until(everyone_past_the_ledger, 30, "every client past the ledger", poll=0.02)
        seqs = {name: [seq for seq in s if seq <= last] for name, s in seqs.items()}
        # The killed process's clients lost their connection; how long each took to be back, on the survivor.
        victims = [c for c in clients if lab.timeline.select(source=c.name, kind="close", since=killed_at)]
        reopened = {c.name: lab.timeline.select(source=c.name, kind="open", since=killed_at) for c in victims}
        back = [events[0].t - killed_at for events in reopened.values() if events]
        ledger = set(published)
        return {
            "lost": sum(len(ledger - set(s)) for s in seqs.values()),
            "duplicated": sum(len(s) - len(set(s)) for s in seqs.values()),
            "unpublished": published.count(None), "moved": len(back), "victims": len(victims),
            "back": max(back, default=float("nan")),
            "dropped": sum(1 for line in procs[1].lines() if " abort " in line),
        }


async def kill() -> None:
    print(f"\n== 2. kill -9 of 1 of 2 processes at message {KILL_MESSAGES * 3 // 10} of {KILL_MESSAGES} "
          f"({KILL_RATE:g}/s), {KILL_CLIENTS} clients (half on each)")
    for recover in (True, False):
        run = await kill_run(recover)
        label = "with replay" if recover else "without replay"
        ok = run["lost"] == 0 and run["duplicated"] == 0 and run["unpublished"] == 0
        row(f"{label}: messages lost / duplicated (all clients)", f"{run['lost']} / {run['duplicated']}",
            "0 / 0" if recover else "", ok if recover else None)
        row(f"{label}: clients moved to the survivor; last one back after",
            f"{run['moved']}; {run['back'] * 1e3:.0f} ms", f"{run['victims']}", run["moved"] == run["victims"] > 0)
        row(f"{label}: connections the survivor dropped (late pongs)", f"{run['dropped']}")


# -- 3. pub/sub against XREAD BLOCK ------------------------------------------------------------------------


async def reader(url: str, mode: str, total: int) -> None:
    """One reader process: print ready, receive ``total`` frames, print their latencies as JSON."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    latencies: list[float] = []
    if mode == "pubsub":
        pubsub = client.pubsub()
        await pubsub.subscribe("bench:channel")
        print("ready", flush=True)
        while len(latencies) < total:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
            if message is not None:
                latencies.append(time.monotonic() - float(message["data"][1:].split(b" ", 2)[1]))
    else:
        last = "0-0"
        print("ready", flush=True)
        while len(latencies) < total:  # the loop a stream reader runs: XREAD, handle the batch, XREAD again
            for _, entries in await client.xread({"bench:stream": last}, block=5000, count=1000):
                now = time.monotonic()
                for entry_id, fields in entries:
                    last = entry_id
                    latencies.append(now - float(fields[b"f"][1:].split(b" ", 2)[1]))
    print(json.dumps(latencies), flush=True)
    await client.aclose()


async def fanout_paths(rate: float, seconds: float = 2.0) -> None:
    total = int(rate * seconds)
    async with wslab.Lab() as lab:
        redis = await start_redis(lab)
        client = redis.client()
        script = client.register_script(PUBLISH)
        for mode in ("pubsub", "xread"):
            await client.delete("bench:seq", "bench:stream")
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--reader", mode, redis.url, str(total),
                stdout=asyncio.subprocess.PIPE, limit=1 << 26)
            assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"ready"
            start = time.monotonic()
            for n in range(total):
                tail = f"{time.monotonic():.6f} {'x' * 48}"
                await script(keys=["bench:seq", "bench:stream", "bench:channel"], args=[10_000, "t", tail])
                await asyncio.sleep(max(0.0, start + (n + 1) / rate - time.monotonic()))
            latencies = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
            await proc.wait()
            row(f"{rate:g} frames/s, {mode}: latency p50 / p99",
                f"{statistics.median(latencies) * 1e3:.2f} / {percentile(latencies, 0.99) * 1e3:.2f} ms")


async def main() -> int:
    reason = REDIS.skip_reason() or NGINX.skip_reason()
    if reason:
        print(f"bench_backplane: skipped: {reason}")
        return 0
    raise_fd_limit(CLIENTS * 3 + 200)
    print(f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}, {WORKERS} client processes")
    await steady()
    await kill()
    print("\n== 3. fan-out path: one reader process, 2 s at each rate, 48-byte frames from the PUBLISH script")
    for rate in (100.0, 500.0, 2000.0):
        await fanout_paths(rate)
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        print(f"\nnote: load average {load:.2f} on {os.cpu_count()} CPUs: other processes took CPU time during "
              f"the run, and every latency above includes waiting for it; compare runs on a quiet machine")
    print(f"\n{'all targets met' if not failures else 'targets NOT met: ' + ', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs="+", metavar=("COUNT", "URL"), help=argparse.SUPPRESS)
    parser.add_argument("--server", nargs=3, metavar=("KIND", "RATE", "REDIS"), help=argparse.SUPPRESS)
    parser.add_argument("--reader", nargs=3, metavar=("MODE", "URL", "TOTAL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(int(args.worker[0]), args.worker[1:]))
    elif args.server:
        asyncio.run(server(args.server[0], float(args.server[1]), args.server[2]))
    elif args.reader:
        asyncio.run(reader(args.reader[1], args.reader[0], int(args.reader[2])))
    else:
        raise SystemExit(asyncio.run(main()))
