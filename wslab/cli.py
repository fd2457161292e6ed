"""The ``wslab`` command: lab servers and fault proxies in a terminal.

A terminal is not a notebook: here events are printed as they happen, one
line each, after a first line that is the URL to connect to::

    $ python -m wslab serve
    ws://127.0.0.1:40527
       0.001  naive  -   listening      ws://127.0.0.1:40527
       2.310  naive  c1  open           from port 51344

    $ python -m wslab proxy --upstream ws://127.0.0.1:40527
    ws://127.0.0.1:38161
    stall                  <- typed on stdin: every connection stalls

Each subcommand is a pair of functions: ``_add_NAME(subparsers)`` declares its
arguments and sets ``run=cmd_NAME``; ``cmd_NAME(args)`` runs it and returns
the exit code. To add one, write both and list ``_add_NAME`` in
:data:`SUBCOMMANDS`. A :class:`~wslab.lab.LabError` raised by a subcommand is
printed as one line on stderr, with exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import textwrap
import threading
import urllib.parse
from typing import Any, NoReturn

from .lab import Lab, LabError, check_url
from .proxy import FAULTS, FaultProxy
from .servers import SERVERS
from .timeline import Event, Timeline

__all__ = ["SERVERS", "SUBCOMMANDS", "main"]

# Server variants for ``wslab serve --server NAME`` live in wslab.servers (one registry for the
# CLI and notebook 02): a factory called as ``factory(timeline=..., name=...)``, and a one-line
# description for --help. The object it returns needs an async ``handler(ws)``; if it also has
# ``broadcast_forever(interval, payload)``, --broadcast-interval drives it.


PROXY_COMMANDS = """\
commands read from stdin while the proxy runs (one per line):
  pass                 relay normally; undoes stall, latency and refuse
  latency SECONDS      delay every chunk, e.g. "latency 0.2"
  stall                stop relaying, keep sockets open: the peer vanished (no FIN)
  reset                close both sides with an RST
  close                close both sides with a FIN
  refuse               stop listening: new connections are refused
  status               print the fault and the bytes relayed per connection
  help                 print this list
  quit                 stop the proxy (like Ctrl-C)
add a connection label to hit one connection only: "stall p3", "latency 0.2 p3"
(labels p1, p2, ... are printed when connections open; "status" lists them)
"""


# -- one-line errors -----------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _fail(command: str, message: str) -> int:
    print(f"wslab {command}: error: {message}", file=sys.stderr, flush=True)
    return 2


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range 0-65535 (0 picks a free port)")
    return port


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds >= 0")
    return value


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of bytes >= 0")
    return value


def _ws_url(text: str) -> str:
    """A ws:// URL with an explicit port, e.g. ws://127.0.0.1:8765."""
    try:
        check_url(text)
    except LabError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if urllib.parse.urlsplit(text).port is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no port: write it like ws://127.0.0.1:8765")
    return text


def _host_port(text: str) -> tuple[str, int]:
    """HOST:PORT, e.g. 127.0.0.1:0 (port 0 picks a free port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT: write it like 127.0.0.1:0")
    return host.strip("[]"), _port(port)


# -- printing events -------------------------------------------------------------


class PrintingTimeline(Timeline):
    """A timeline that also prints each event as one line, once :meth:`start_printing` is called.

    Until then events are only kept, so that the URL can be the first line of output.
    """

    printing = False

    def start_printing(self) -> None:
        self.printing = True
        for event in self.events:
            _print(format_event(event))

    def record(self, source: str, kind: str, **kwargs: Any) -> Event:
        event = super().record(source, kind, **kwargs)
        if self.printing:
            _print(format_event(event))
        return event


def format_event(e: Event) -> str:
    code = "" if e.code is None else str(e.code)
    return f"{e.t:8.3f}  {e.source:<9} {e.conn or '-':<4} {e.kind:<14} {code:<5} {e.detail}".rstrip()


def _print(line: str, file: Any = None) -> None:
    try:
        print(line, file=file or sys.stdout, flush=True)
    except (BrokenPipeError, ValueError):
        # Whoever read our output has gone (e.g. `| head -1`): keep running silently.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), (file or sys.stdout).fileno())


# -- running until Ctrl-C / SIGTERM ----------------------------------------------


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):  # Windows
            loop.add_signal_handler(sig, stop.set)


def _run_async(command: str, coro: Any) -> int:
    try:
        return asyncio.run(coro)
    except LabError as exc:
        return _fail(command, str(exc))
    except KeyboardInterrupt:  # where signal handlers can't be installed (Windows)
        return 0


# -- serve --------------------------------------------------------------------------


def _add_serve(sub: argparse._SubParsersAction) -> None:
    variants = "\n".join(f"  {name:<8} {doc}" for name, (_, doc) in SERVERS.items())
    p = sub.add_parser(
        "serve",
        help="run a lab server and print its URL and events",
        description=textwrap.fill(
            "Run a lab server, print its URL on the first line, then one line per event "
            "(connections opening and closing, send errors) until Ctrl-C or SIGTERM."
        ),
        epilog=f"servers:\n{variants}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--server", choices=sorted(SERVERS), default="naive", help="which server variant (default: naive)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=_port, default=0, help="port to listen on (default: 0, a free port)")
    p.add_argument(
        "--ping-interval", type=_seconds, default=0, metavar="S",
        help="send a keepalive ping every S seconds; 0 turns keepalive off (default: 0)",
    )
    p.add_argument(
        "--broadcast-interval", type=_seconds, default=1.0, metavar="S",
        help="broadcast a numbered, timestamped message to every session every S seconds; 0: never (default: 1)",
    )
    p.add_argument(
        "--payload-size", type=_size, default=0, metavar="BYTES",
        help="add BYTES random bytes to each broadcast, to fill a stalled client's buffers (default: 0)",
    )
    p.set_defaults(run=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    return _run_async("serve", _serve(args))


async def _serve(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    factory, _ = SERVERS[args.server]
    async with Lab(PrintingTimeline()) as lab:
        app = factory(timeline=lab.timeline, name=args.server)
        server = await lab.serve(
            app.handler, name=args.server, host=args.host, port=args.port,
            ping_interval=args.ping_interval or None,
        )
        _print(server.url)
        lab.timeline.start_printing()
        if args.broadcast_interval and hasattr(app, "broadcast_forever"):
            payload = os.urandom(args.payload_size)
            # Named after the server, so it can't collide with a variant called "broadcast".
            lab.spawn(app.broadcast_forever(args.broadcast_interval, payload), name=f"{args.server}-broadcasts")
        _print(f"wslab serve: {args.server} server at {server.url}; Ctrl-C stops it", file=sys.stderr)
        await stop.wait()
    return 0


# -- proxy --------------------------------------------------------------------------


def _add_proxy(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--upstream", type=_ws_url, required=True, metavar="URL", help="the server, e.g. ws://127.0.0.1:8765")
    p.add_argument(
        "--listen", type=_host_port, default=("127.0.0.1", 0), metavar="HOST:PORT",
        help="where the proxy listens (default: 127.0.0.1:0, a free port)",
    )
    p.add_argument("--fault", choices=FAULTS, default="pass", help="fault to start with (default: pass)")
    p.add_argument("--delay", type=_seconds, default=0.2, metavar="S", help="delay for --fault latency (default: 0.2)")
    p.set_defaults(run=cmd_proxy)


def cmd_proxy(args: argparse.Namespace) -> int:
    return _run_async("proxy", _proxy(args))


async def _proxy(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    host, port = args.listen
    if args.fault == "latency" and not args.delay:
        raise LabError("--fault latency needs a --delay above 0 seconds, e.g. --delay 0.2")
    async with Lab(PrintingTimeline()) as lab:
        proxy = await lab.proxy(args.upstream, name="proxy", host=host, port=port)
        _print(proxy.url)
        lab.timeline.start_printing()
        if args.fault != "pass":
            await proxy.set_fault(args.fault, delay=args.delay if args.fault == "latency" else 0.0)
        _print(f"wslab proxy: {proxy.url} -> {args.upstream}; type 'help' for commands, Ctrl-C stops it",
               file=sys.stderr)
        commands = _stdin_lines()
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
        _print(PROXY_COMMANDS.rstrip())
        return None
    if name == "status":
        _print(proxy_status(proxy))
        return None
    if name not in FAULTS:
        _print(f"wslab proxy: unknown command {name!r}; faults: {', '.join(FAULTS)}; also status, help, quit",
               file=sys.stderr)
        return None
    delay = 0.0
    if name == "latency":
        if not rest:
            _print("wslab proxy: latency needs seconds, e.g. 'latency 0.2'", file=sys.stderr)
            return None
        try:
            delay = _seconds(rest.pop(0))
        except argparse.ArgumentTypeError as exc:
            _print(f"wslab proxy: latency: {exc}", file=sys.stderr)
            return None
    if len(rest) > 1:
        _print(f"wslab proxy: too many words in {line.strip()!r}: give at most one connection label",
               file=sys.stderr)
        return None
    try:
        await proxy.set_fault(name, delay=delay, conn=rest[0] if rest else None)
    except (KeyError, ValueError) as exc:
        _print(f"wslab proxy: {exc.args[0] if exc.args else exc}", file=sys.stderr)
    return None


def proxy_status(proxy: FaultProxy) -> str:
    """The proxy's fault and byte counts, one connection per line."""
    delay = f" {proxy.delay:g} s" if proxy.fault == "latency" else ""
    lines = [f"fault={proxy.fault}{delay} open={len(proxy.connections)} "
             f"bytes up={proxy.bytes_up} down={proxy.bytes_down} (up: client -> server)"]
    for c in proxy.connections:
        delay = f" {c.delay:g} s" if c.fault == "latency" else ""
        lines.append(f"  {c.label:<4} fault={c.fault}{delay} bytes up={c.bytes_up} down={c.bytes_down}")
    return "\n".join(lines)


def _stdin_lines() -> asyncio.Queue[str | None]:
    """Lines typed on stdin, then None at end of input.

    A thread reads stdin, because that works for terminals, pipes and files on
    every platform; it hands each line to the event loop.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def put(item: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: we are exiting
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def read() -> None:
        try:
            for line in sys.stdin:
                put(line)
        except (OSError, ValueError):
            pass
        put(None)

    if sys.stdin is None:
        queue.put_nowait(None)
    else:
        threading.Thread(target=read, name="wslab-stdin", daemon=True).start()
    return queue


# -- main ---------------------------------------------------------------------------

# -- client -------------------------------------------------------------------------


def _any_ws_url(text: str) -> str:
    try:
        return check_url(text)
    except LabError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _add_client(sub: argparse._SubParsersAction) -> None:
    from .backoff import JITTERS

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
    p.add_argument("url", type=_any_ws_url, metavar="URL", help="the server, e.g. ws://127.0.0.1:8765")
    p.add_argument("--min-delay", type=_seconds, default=1.0, metavar="S", help="first reconnect delay (default: 1)")
    p.add_argument("--max-delay", type=_seconds, default=30.0, metavar="S", help="longest delay (default: 30)")
    p.add_argument("--factor", type=float, default=1.5, help="delay growth per failed attempt (default: 1.5)")
    p.add_argument("--jitter", choices=JITTERS, default="none", help="random spread of the delays (default: none)")
    p.add_argument("--seed", type=int, default=None, help="seed for the jitter, to replay a run")
    p.add_argument("--open-timeout", type=_seconds, default=2.0, metavar="S", help="time for one attempt (default: 2)")
    p.add_argument("--max-retries", type=_count, default=None, metavar="N", help="give up after N failed retries (default: never)")
    p.add_argument("--min-uptime", type=_seconds, default=5.0, metavar="S",
                   help="a connection must last S seconds for the backoff to start over (default: 5)")
    p.add_argument("--ping-interval", type=_seconds, default=20.0, metavar="S",
                   help="keepalive ping every S seconds; 0 turns keepalive off (default: 20)")
    p.add_argument("--ping-timeout", type=_seconds, default=20.0, metavar="S", help="pong deadline (default: 20)")
    p.add_argument("--buffer-size", type=_count, default=100, metavar="N", help="messages kept while disconnected (default: 100)")
    p.add_argument("--no-recover", action="store_true", help="don't ask the server to replay missed messages")
    p.set_defaults(run=cmd_client)


def cmd_client(args: argparse.Namespace) -> int:
    return _run_async("client", _client(args))


async def _client(args: argparse.Namespace) -> int:
    from .reconnect import BufferFull, ReconnectingClient

    if args.min_delay > args.max_delay:
        raise LabError(f"--min-delay {args.min_delay} is above --max-delay {args.max_delay}")
    stop = asyncio.Event()
    _stop_on_signals(stop)
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
        _print(f"wslab client: {args.url}; lines typed on stdin are sent; Ctrl-C stops it", file=sys.stderr)
        lines = _stdin_lines()
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
                _print(f"wslab client: {exc}", file=sys.stderr)
        gave_up = client.gave_up
        await client.close()
    return 1 if gave_up else 0


SUBCOMMANDS = [_add_serve, _add_proxy, _add_client]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wslab",
        description=textwrap.fill(
            "Lab servers and fault proxies for WebSocket clients in any language. "
            "Everything listens on 127.0.0.1 unless told otherwise."
        ),
        epilog="examples:\n"
        "  wslab serve --broadcast-interval 0.5\n"
        "  wslab proxy --upstream ws://127.0.0.1:8765 --fault stall\n"
        "  wslab client ws://127.0.0.1:8765 --min-delay 0.5\n"
        "run 'wslab COMMAND --help' for each command's options",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``wslab`` and ``python -m wslab``; returns the exit code."""
    args = build_parser().parse_args(argv)
    return args.run(args)
