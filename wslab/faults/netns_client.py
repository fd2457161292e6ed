"""One wss:// client for :mod:`wslab.faults.netns_driver`, in a process of its own, so that it can be killed.

Run by its file path (``python .../netns_client.py``), not with ``-m``:
then Python imports only this file and websockets, not the whole wslab package,
and a client starts in a fraction of the time. So: the standard library and
websockets only, no imports from wslab.

It starts before Tomcat does, and waits for one line on stdin,
``{"url": "wss://...", "ca": "/path/ca.pem"}``. Then it connects, prints
``{"port": P}`` (its local port), and reads every message until it is
killed. SIGTERM closes the connection cleanly (a close frame, 1000). With
``--report`` it prints ``{"received": N, "at": T}`` every 0.2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import sys
import time


async def client(args: argparse.Namespace) -> None:
    from websockets.asyncio.client import connect

    line = await asyncio.to_thread(sys.stdin.readline)  # where to connect: Tomcat was starting meanwhile
    if not line:
        return  # the driver gave up before telling us
    target = json.loads(line)
    context = ssl.create_default_context(cafile=target["ca"])
    received = 0

    async def report() -> None:
        while True:
            print(json.dumps({"received": received, "at": time.time()}), flush=True)
            await asyncio.sleep(0.2)

    # compression=None: with permessage-deflate, Tomcat would shrink "xxxx..." to almost nothing.
    async with connect(target["url"], ssl=context, ping_interval=args.ping, ping_timeout=None, max_size=None,
                       compression=None, open_timeout=args.open_timeout) as ws:
        print(json.dumps({"port": ws.transport.get_extra_info("sockname")[1]}), flush=True)
        closing: list[asyncio.Task[None]] = []  # keeps the close task referenced until it is done
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGTERM, lambda: closing.append(asyncio.create_task(ws.close())))
        reporter = asyncio.create_task(report()) if args.report else None
        async for _ in ws:
            received += 1
        if reporter is not None:
            reporter.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ping", type=float, default=None, help="send a ping every this many seconds")
    parser.add_argument("--report", action="store_true", help="print the messages received so far, every 0.2 s")
    parser.add_argument("--open-timeout", type=float, default=10.0, help="seconds for the opening handshake")
    asyncio.run(client(parser.parse_args()))


if __name__ == "__main__":
    main()
