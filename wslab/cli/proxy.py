"""``wslab proxy``: a fault proxy in front of any server, with faults typed on stdin."""

from __future__ import annotations

import argparse
import asyncio
import sys
import textwrap

from ..faults.proxy import FAULTS, FaultProxy, start_proxy
from ..runtime.errors import LabError
from ..runtime.lab import Lab
from .common import (
    Parser,
    PrintingTimeline,
    host_port,
    print_line,
    run_async,
    seconds,
    stdin_lines,
    stop_on_signals,
    ws_url,
)

PROXY_COMMANDS = """\
commands read from stdin while the proxy runs (one per line):
  pass                 relay normally; undoes stall, latency and refuse
  latency SECONDS      delay every chunk, e.g. "latency 0.2"
  stall                stop relaying, keep sockets open: the peer vanished (no FIN)
  reset                close both sides with an RST
  close                close both sides with a FIN
  refuse               stop listening: new connections are refused
  idle-timeout SECONDS close a connection (FIN both sides) after SECONDS without a byte
                       either way, like nginx's proxy_read_timeout, e.g. "idle-timeout 2"
  status               print the fault and the bytes relayed per connection
  help                 print this list
  quit                 stop the proxy (like Ctrl-C)
add a connection label to hit one connection only: "stall p3", "latency 0.2 p3", "idle-timeout 2 p3"
(labels p1, p2, ... are printed when connections open; "status" lists them)
"""


def add_proxy(sub: argparse._SubParsersAction[Parser]) -> None:
    p = sub.add_parser(
        "proxy",
        help="run a fault proxy in front of a server; switch faults from stdin",
        description=textwrap.fill(
            "Relay TCP from --listen to --upstream, print the proxy's URL on the first line, "
            "then one line per event. Type fault commands on stdin to break the connections "
            "going through it by hand, whatever language the client is written in."
        ),
        epilog=PROXY_COMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--upstream", type=ws_url, required=True, metavar="URL", help="the server, e.g. ws://127.0.0.1:8765")
    p.add_argument(
        "--listen", type=host_port, default=("127.0.0.1", 0), metavar="HOST:PORT",
        help="where the proxy listens (default: 127.0.0.1:0, a free port)",
    )
    p.add_argument("--fault", choices=FAULTS, default="pass", help="fault to start with (default: pass)")
    p.add_argument("--delay", type=seconds, default=0.2, metavar="S", help="delay for --fault latency (default: 0.2)")
    p.add_argument("--timeout", type=seconds, default=60.0, metavar="S",
                   help="timeout for --fault idle-timeout (default: 60, nginx's proxy_read_timeout)")
    p.set_defaults(run=cmd_proxy)


def cmd_proxy(args: argparse.Namespace) -> int:
    return run_async("proxy", _proxy(args))


async def _proxy(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    stop_on_signals(stop)
    host, port = args.listen
    if args.fault == "latency" and not args.delay:
        raise LabError("--fault latency needs a --delay above 0 seconds, e.g. --delay 0.2")
    if args.fault == "idle-timeout" and not args.timeout:
        raise LabError("--fault idle-timeout needs a --timeout above 0 seconds, e.g. --timeout 2")
    timeline = PrintingTimeline()
    async with Lab(timeline) as lab:
        proxy = await start_proxy(lab, args.upstream, name="proxy", host=host, port=port)
        print_line(proxy.url)
        timeline.start_printing()
        if args.fault != "pass":
            await proxy.set_fault(args.fault, delay=args.delay if args.fault == "latency" else 0.0,
                                  timeout=args.timeout if args.fault == "idle-timeout" else 0.0)
        print_line(f"wslab proxy: {proxy.url} -> {args.upstream}; type 'help' for commands, Ctrl-C stops it",
               file=sys.stderr)
        commands = stdin_lines()
        while not stop.is_set():
            line_task = asyncio.ensure_future(commands.get())
            stop_task = asyncio.ensure_future(stop.wait())
            await asyncio.wait({line_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            stop_task.cancel()
            if not line_task.done():
                line_task.cancel()
                break
            line = line_task.result()
            if line is None:  # stdin closed: keep relaying until a signal
                await stop.wait()
                break
            if await proxy_command(proxy, line) == "quit":
                break
    return 0


async def proxy_command(proxy: FaultProxy, line: str) -> str | None:
    """Run one stdin command against ``proxy``; print errors as one line on stderr."""
    words = line.split()
    if not words:
        return None
    name, rest = words[0].lower(), words[1:]
    if name in ("quit", "exit"):
        return "quit"
    if name == "help":
        print_line(PROXY_COMMANDS.rstrip())
        return None
    if name == "status":
        print_line(proxy_status(proxy))
        return None
    if name not in FAULTS:
        print_line(f"wslab proxy: unknown command {name!r}; faults: {', '.join(FAULTS)}; also status, help, quit",
               file=sys.stderr)
        return None
    delay = timeout = 0.0
    if name in ("latency", "idle-timeout"):  # both take seconds first
        example = {"latency": "latency 0.2", "idle-timeout": "idle-timeout 2"}[name]
        if not rest:
            print_line(f"wslab proxy: {name} needs seconds, e.g. '{example}'", file=sys.stderr)
            return None
        try:
            value = seconds(rest.pop(0))
        except argparse.ArgumentTypeError as exc:
            print_line(f"wslab proxy: {name}: {exc}", file=sys.stderr)
            return None
        if name == "latency":
            delay = value
        else:
            timeout = value
    if len(rest) > 1:
        print_line(f"wslab proxy: too many words in {line.strip()!r}: give at most one connection label",
               file=sys.stderr)
        return None
    try:
        await proxy.set_fault(name, delay=delay, timeout=timeout, conn=rest[0] if rest else None)
    except (KeyError, ValueError) as exc:
        print_line(f"wslab proxy: {exc.args[0] if exc.args else exc}", file=sys.stderr)
    return None


def proxy_status(proxy: FaultProxy) -> str:
    """The proxy's fault and byte counts, one connection per line."""
    refusing = " refusing new connections" if proxy.refusing else ""
    lines = [f"fault={proxy.fault}{_seconds(proxy.fault, proxy.delay, proxy.idle_timeout)}{refusing} "
             f"open={len(proxy.connections)} bytes up={proxy.bytes_up} down={proxy.bytes_down} (up: client -> server)"]
    for c in proxy.connections:
        lines.append(f"  {c.label:<4} fault={c.fault}{_seconds(c.fault, c.delay, c.idle_timeout)} "
                     f"bytes up={c.bytes_up} down={c.bytes_down}")
    return "\n".join(lines)


def _seconds(fault: str, delay: float, timeout: float) -> str:
    """" 0.2 s" after latency, " 2 s" after idle-timeout: the seconds a state was given."""
    if fault == "latency":
        return f" {delay:g} s"
    if fault == "idle-timeout":
        return f" {timeout:g} s"
    return ""
