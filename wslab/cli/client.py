"""``wslab client``: the lab's reconnecting client in a terminal; lines typed on stdin are sent."""

from __future__ import annotations

import argparse
import asyncio
import sys
import textwrap

from ..clients.backoff import JITTERS
from ..clients.reconnect import BufferFull, ReconnectingClient
from ..runtime.errors import LabError
from ..runtime.lab import Lab
from .common import (
    Parser,
    PrintingTimeline,
    any_ws_url,
    count,
    print_line,
    run_async,
    seconds,
    stdin_lines,
    stop_on_signals,
)


def add_client(sub: argparse._SubParsersAction[Parser]) -> None:
    p = sub.add_parser(
        "client",
        help="run the lab's reconnecting client; print its events; send the lines typed on stdin",
        description=textwrap.fill("Connect to URL and stay connected: reconnect with backoff after every close the "
        "close-code table allows, print one line per event (connecting, open, message, close with "
        "code/reason/wasClean, error, retry with the delay chosen, give-up). Lines typed on stdin "
        "are sent, and kept in a bounded buffer while disconnected. Against 'wslab serve --server "
        "replay', missed messages are replayed on reconnect. Defaults are ReconnectingWebSocket's."),
        epilog="example:\n  wslab serve --server replay --broadcast-interval 0.5   # prints its URL\n"
        "  wslab client ws://127.0.0.1:PORT --ping-interval 1\n"
        "exit code: 0 after Ctrl-C or SIGTERM, 1 if the client gave up",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", type=any_ws_url, metavar="URL", help="the server, e.g. ws://127.0.0.1:8765")
    p.add_argument("--min-delay", type=seconds, default=1.0, metavar="S", help="first reconnect delay (default: 1)")
    p.add_argument("--max-delay", type=seconds, default=30.0, metavar="S", help="longest delay (default: 30)")
    p.add_argument("--factor", type=float, default=1.5, help="delay growth per failed attempt (default: 1.5)")
    p.add_argument("--jitter", choices=JITTERS, default="none",
                   help="random spread of the delays; none: the same delays on every client (default: none)")
    p.add_argument("--seed", type=int, default=None, help="seed for the jitter, to replay a run")
    p.add_argument("--open-timeout", type=seconds, default=2.0, metavar="S", help="time for one attempt (default: 2)")
    p.add_argument("--max-retries", type=count, default=None, metavar="N",
                   help="give up after N failed retries (default: never)")
    p.add_argument("--min-uptime", type=seconds, default=5.0, metavar="S",
                   help="a connection must last S seconds for the backoff to start over (default: 5)")
    p.add_argument("--ping-interval", type=seconds, default=20.0, metavar="S",
                   help="keepalive ping every S seconds; 0 turns keepalive off (default: 20)")
    p.add_argument("--ping-timeout", type=seconds, default=20.0, metavar="S", help="pong deadline (default: 20)")
    p.add_argument("--buffer-size", type=count, default=100, metavar="N",
                   help="messages kept while disconnected (default: 100)")
    p.add_argument("--no-recover", action="store_true", help="don't ask the server to replay missed messages")
    p.set_defaults(run=cmd_client)


def cmd_client(args: argparse.Namespace) -> int:
    return run_async("client", _client(args))


async def _client(args: argparse.Namespace) -> int:
    if args.min_delay > args.max_delay:
        raise LabError(f"--min-delay {args.min_delay} is above --max-delay {args.max_delay}")
    stop = asyncio.Event()
    stop_on_signals(stop)
    timeline = PrintingTimeline()
    timeline.start_printing()
    client = ReconnectingClient(
        args.url, name="client", timeline=timeline, min_delay=args.min_delay, max_delay=args.max_delay,
        factor=args.factor, jitter=args.jitter, seed=args.seed, open_timeout=args.open_timeout,
        max_retries=args.max_retries, min_uptime=args.min_uptime, buffer_size=args.buffer_size,
        recover=not args.no_recover, ping_interval=args.ping_interval or None, ping_timeout=args.ping_timeout or None,
    )
    async with Lab(timeline) as lab:
        running = lab.spawn(client.run(), name="client")
        print_line(f"wslab client: {args.url}; lines typed on stdin are sent; Ctrl-C stops it", file=sys.stderr)
        lines = stdin_lines()
        stdin_open = True
        while not stop.is_set() and not running.done():
            waiters = {asyncio.ensure_future(stop.wait()), running}
            line_task = asyncio.ensure_future(lines.get()) if stdin_open else None
            if line_task is not None:
                waiters.add(line_task)
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                if waiter is not running and not waiter.done():
                    waiter.cancel()
            if line_task is None or not line_task.done() or line_task.cancelled():
                continue
            line = line_task.result()
            if line is None:
                stdin_open = False  # stdin closed: keep the connection until a signal
                continue
            try:
                await client.send(line.rstrip("\r\n"))
            except BufferFull as exc:
                print_line(f"wslab client: {exc}", file=sys.stderr)
        gave_up = client.gave_up
        await client.close()
    return 1 if gave_up else 0


