"""How much does the fault proxy slow a connection down, in pass mode?

A server streams 64 KiB messages (random bytes, ``compression=None``) to a
client, once directly and once through a :class:`wslab.FaultProxy`, in
alternating rounds in one run. Everything shares one event loop, as it does
in a notebook's kernel, so the proxy's CPU time counts against it.

Target: through the proxy, at least 50 % of direct throughput, so that the
proxy does not distort the timing experiments of later notebooks.

Run: ``python3 tasks.py bench`` or ``.venv/bin/python benchmarks/bench_proxy_overhead.py``.
Exit code 1 if the ratio is below target.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import wslab
from wslab.faults.proxy import start_proxy

MESSAGE_SIZE = 64 * 1024
TARGET = 0.50


async def stream(ws) -> None:
    """Server side: on "N", send N messages of MESSAGE_SIZE random bytes."""
    payload = os.urandom(MESSAGE_SIZE)
    async for request in ws:
        for _ in range(int(request)):
            await ws.send(payload)


async def measure(lab: wslab.Lab, url: str, name: str, messages: int) -> float:
    """Throughput in MB/s (10**6 bytes) of one round of ``messages`` messages from the server."""
    ws = await lab.connect(url, name=name, compression=None, max_size=2 * MESSAGE_SIZE)
    try:
        await ws.send(str(messages))
        started = time.perf_counter()
        received = 0
        for _ in range(messages):
            received += len(await asyncio.wait_for(ws.recv(), timeout=30))
        elapsed = time.perf_counter() - started
    finally:
        await lab.close(name)
    assert received == messages * MESSAGE_SIZE
    return received / elapsed / 1e6


async def main(rounds: int, messages: int) -> int:
    async with wslab.Lab() as lab:
        server = await lab.serve(stream, name="server", compression=None, max_size=2 * MESSAGE_SIZE)
        proxy = await start_proxy(lab, server, name="proxy")
        await measure(lab, server.url, "warm-up", 64)
        await measure(lab, proxy.url, "warm-up", 64)
        direct, proxied = [], []
        for _ in range(rounds):  # alternate, so both see the same machine load
            direct.append(await measure(lab, server.url, "direct", messages))
            proxied.append(await measure(lab, proxy.url, "proxied", messages))
        relayed = proxy.bytes_down
    d, p = statistics.median(direct), statistics.median(proxied)
    ratio = p / d
    mib = messages * MESSAGE_SIZE / 2**20
    print(f"{rounds} rounds of {messages} x 64 KiB messages ({mib:.0f} MiB) per path, compression=None, one event loop")
    print(f"direct        {d:8.1f} MB/s  (median; rounds: {', '.join(f'{x:.0f}' for x in direct)})")
    print(f"through proxy {p:8.1f} MB/s  (median; rounds: {', '.join(f'{x:.0f}' for x in proxied)})")
    print(f"ratio         {ratio:8.0%}      target >= {TARGET:.0%}: {'met' if ratio >= TARGET else 'NOT met'}")
    print(f"proxy relayed {relayed / 2**20:.0f} MiB server -> client")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds per path (default: 7)")
    parser.add_argument("--messages", type=int, default=1024, help="64 KiB messages per round (default: 1024)")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.rounds, args.messages)))
