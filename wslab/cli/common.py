"""What every ``wslab`` subcommand shares: one-line errors, argument types, printing events, signals, stdin."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
import urllib.parse
from collections.abc import Coroutine
from typing import Any, NoReturn

from ..runtime.errors import LabError
from ..runtime.lab import check_url
from ..runtime.timeline import Event, Timeline

# -- one-line errors -----------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def fail(command: str, message: str) -> int:
    print(f"wslab {command}: error: {message}", file=sys.stderr, flush=True)
    return 2


def port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range 0-65535 (0 picks a free port)")
    return port


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds >= 0")
    return value


def size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of bytes >= 0")
    return value


def ws_url(text: str) -> str:
    """A ws:// URL with an explicit port, e.g. ws://127.0.0.1:8765."""
    try:
        check_url(text)
    except LabError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if urllib.parse.urlsplit(text).port is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no port: write it like ws://127.0.0.1:8765")
    return text


def host_port(text: str) -> tuple[str, int]:
    """HOST:PORT, e.g. 127.0.0.1:0 (port 0 picks a free port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT: write it like 127.0.0.1:0")
    return host.strip("[]"), port(port_text)


# -- printing events -------------------------------------------------------------


class PrintingTimeline(Timeline):
    """A timeline that also prints each event as one line, once :meth:`start_printing` is called.

    Until then events are only kept, so that the URL can be the first line of output.
    """

    printing = False

    def start_printing(self) -> None:
        self.printing = True
        for event in self.events:
            print_line(format_event(event))

    def record(self, source: str, kind: str, **kwargs: Any) -> Event:
        event = super().record(source, kind, **kwargs)
        if self.printing:
            print_line(format_event(event))
        return event


def format_event(e: Event) -> str:
    code = "" if e.code is None else str(e.code)
    return f"{e.t:8.3f}  {e.source:<9} {e.conn or '-':<4} {e.kind:<14} {code:<5} {e.detail}".rstrip()


def print_line(line: str, file: Any = None) -> None:
    try:
        print(line, file=file or sys.stdout, flush=True)
    except (BrokenPipeError, ValueError):
        # Whoever read our output has gone (e.g. `| head -1`): keep running silently.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), (file or sys.stdout).fileno())


# -- running until Ctrl-C / SIGTERM ----------------------------------------------


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):  # Windows
            loop.add_signal_handler(sig, stop.set)


def run_async(command: str, coro: Coroutine[Any, Any, int]) -> int:
    try:
        return asyncio.run(coro)
    except LabError as exc:
        return fail(command, str(exc))
    except KeyboardInterrupt:  # where signal handlers can't be installed (Windows)
        return 0


def stdin_lines() -> asyncio.Queue[str | None]:
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


def any_ws_url(text: str) -> str:
    try:
        return check_url(text)
    except LabError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


