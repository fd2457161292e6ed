"""``wslab serve``: a lab server variant, its URL on the first line, then one line per event."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import textwrap
from typing import Any

from ..runtime.lab import Lab
from ..runtime.redis import start_redis
from ..servers import (
    SERVERS,
    AdmissionControl,
    BackplaneServer,
    ConnectionLimits,
    Gate,
    ReplayServer,
    SessionServer,
    make_app,
    start_app,
    start_backplane,
)
from ..servers.drain import drain
from .common import Parser, PrintingTimeline, count, fail, port, print_line, run_async, seconds, size, stop_on_signals

# The variants that ping their clients themselves (FixedServer's keepalive), and take --keepalive.
PINGING = ("keepalive", "fixed", "backplane")


def add_serve(sub: argparse._SubParsersAction[Parser]) -> None:
    variants = "\n".join(f"  {name:<8} {doc}" for name, (_, doc) in SERVERS.items())
    p = sub.add_parser(
        "serve",
        help="run a lab server and print its URL and events",
        description=textwrap.fill(
            "Run a lab server, print its URL on the first line, then one line per event "
            "(connections opening and closing, send errors) until Ctrl-C or SIGTERM. "
            "Either signal starts a drain (see --drain-window); a second one aborts every connection at once."
        ),
        epilog=f"servers:\n{variants}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--server", choices=sorted(SERVERS), default="naive", help="which server variant (default: naive)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=port, default=0, help="port to listen on (default: 0, a free port)")
    p.add_argument(
        "--ping-interval", type=seconds, default=None, metavar="S",
        help="websockets' own keepalive: a ping every S seconds; 0 turns it off "
        "(default: the variant's own: 0.5 s for broadcast, off for the others; "
        "keepalive and fixed ping by themselves)",
    )
    p.add_argument(
        "--broadcast-interval", type=seconds, default=1.0, metavar="S",
        help="broadcast a numbered, timestamped message to every session every S seconds; 0: never (default: 1)",
    )
    p.add_argument(
        "--payload-size", type=size, default=0, metavar="BYTES",
        help="add BYTES random bytes to each broadcast, to fill a stalled client's buffers (default: 0)",
    )
    p.add_argument(
        "--keepalive", type=seconds, default=None, metavar="S",
        help="for the variants that ping by themselves (keepalive, fixed, backplane): a ping every S seconds, "
        "and a client whose pong takes longer than S is dropped (default: 0.5)",
    )
    p.add_argument(
        "--drain-window", type=seconds, default=2.0, metavar="S",
        help="on SIGTERM or Ctrl-C, drain: stop accepting, flush each client's outbox, close with 1012 "
        "(service restart) in batches spread over S seconds, and abort whoever is left 1 s after the last "
        "batch; 0 closes everyone with 1012 at once (default: 2)",
    )
    p.add_argument(
        "--epoch", type=float, default=None, metavar="UNIX_TIME",
        help="with --server replay: publish 'tick N', numbered N, at UNIX_TIME + N x --broadcast-interval, "
        "so that several server processes publish the same numbered stream and any of them can replay "
        "a client's gap (default: number from 0 at start)",
    )
    p.add_argument(
        "--backplane", metavar="URL",
        help="with --server backplane: the Redis the server processes share, e.g. redis://127.0.0.1:6379 "
        "(default: start a redis-server of its own, print its URL on stderr, and stop it on exit; "
        "a kill -9 leaves it running)",
    )
    hardening = p.add_argument_group("hardening (notebook 08)")
    hardening.add_argument(
        "--origin", action="append", metavar="URL",
        help="allow WebSocket handshakes from a page on this origin, e.g. http://127.0.0.1:8000; repeat for "
        "more; any other Origin gets 403. Clients that send no Origin (not browsers) still get in "
        "(default: any origin)",
    )
    hardening.add_argument("--max-connections", type=count, default=None, metavar="N",
                           help="refuse handshakes with 503 while N connections are open (default: no cap)")
    hardening.add_argument("--max-per-client", type=count, default=None, metavar="N",
                           help="refuse handshakes with 503 while one source address holds N connections "
                           "(default: no cap)")
    hardening.add_argument("--accept-rate", type=per_second, default=None, metavar="R",
                           help="admit at most R handshakes per second; answer the others 503 with "
                           "Retry-After (default: no limit)")
    p.set_defaults(run=cmd_serve)


def per_second(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of handshakes per second") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of handshakes per second > 0")
    return value


def gate_of(args: argparse.Namespace) -> Gate | None:
    """The :class:`~wslab.servers.gate.Gate` the hardening options ask for; None if none was given."""
    if not (args.origin or args.max_connections or args.max_per_client or args.accept_rate):
        return None
    # A browser always sends Origin; other clients can claim any, so refusing them adds nothing.
    origins: list[str | None] | None = [*args.origin, None] if args.origin else None
    limits = None
    if args.max_connections or args.max_per_client:
        limits = ConnectionLimits(max_total=args.max_connections or None, max_per_client=args.max_per_client or None)
    admission = AdmissionControl(args.accept_rate) if args.accept_rate else None
    return Gate(origins=origins, limits=limits, admission=admission)


def cmd_serve(args: argparse.Namespace) -> int:
    return run_async("serve", _serve(args))


async def _serve(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    stop_on_signals(stop)
    # Only what the user asked for overrides the variant's own serve_options (its keepalive).
    overrides: dict[str, Any] = {} if args.ping_interval is None else {"ping_interval": args.ping_interval or None}
    if args.backplane and args.server != "backplane":
        return fail("serve", f"--backplane is for --server backplane, not --server {args.server}")
    if args.epoch is not None and (args.server != "replay" or not args.broadcast_interval):
        return fail("serve", "--epoch is for --server replay, with a --broadcast-interval above 0")
    options: dict[str, Any] = {}
    if args.keepalive is not None:
        if args.server not in PINGING:
            return fail("serve", f"--keepalive is for --server {', '.join(PINGING)}, not --server {args.server}")
        if args.keepalive <= 0:
            return fail("serve", "--keepalive must be more than 0 seconds")
        options = {"ping_interval": args.keepalive, "ping_timeout": args.keepalive}
    timeline = PrintingTimeline()
    async with Lab(timeline) as lab:
        if args.server == "backplane":
            url = args.backplane or (await start_redis(lab)).url
            app = make_app(args.server, timeline, backplane=url, **options)
            assert isinstance(app, BackplaneServer)
            app.gate = gate_of(args)
            server = await start_backplane(lab, app, host=args.host, port=args.port, **overrides)
        else:
            app = make_app(args.server, timeline, **options)
            if isinstance(app, SessionServer):  # every variant is
                app.gate = gate_of(args)
            server = await start_app(lab, app, host=args.host, port=args.port, **overrides)
        print_line(server.url)
        timeline.start_printing()
        if args.broadcast_interval:
            payload = os.urandom(args.payload_size)
            # Named after the server, so it can't collide with a variant called "broadcast".
            if args.epoch is not None and isinstance(app, ReplayServer):
                broadcasts = app.publish_ticks(args.broadcast_interval, args.epoch)
            else:
                broadcasts = app.broadcast_forever(args.broadcast_interval, payload)
            lab.spawn(broadcasts, name=f"{args.server}-broadcasts")
        via = f", broadcasts through Redis at {app.backplane}" if isinstance(app, BackplaneServer) else ""
        print_line(f"wslab serve: {args.server} server at {server.url}{via}; Ctrl-C (or SIGTERM) drains it "
                   f"over {args.drain_window:g} s", file=sys.stderr)
        await stop.wait()
        # The drain. Broadcasts go on meanwhile, to whoever is still connected.
        again = asyncio.Event()
        stop_on_signals(again)
        draining = asyncio.ensure_future(drain(server, app, window=args.drain_window))
        interrupted = asyncio.ensure_future(again.wait())
        await asyncio.wait({draining, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        interrupted.cancel()
        if not draining.done():  # a second signal: nobody waits any longer
            draining.cancel()
            aborted = server.abort_connections()
            print_line(f"wslab serve: drain interrupted: aborted {aborted} connections", file=sys.stderr)
        else:
            result = draining.result()
            print_line(f"wslab serve: drained {result.connections} connections in {result.took:.2f} s: "
                       f"{result.closed} closed with 1012, {result.aborted} aborted", file=sys.stderr)
    return 0


