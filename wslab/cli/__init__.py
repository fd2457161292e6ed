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

Each subcommand is a module here with a pair of functions: ``add_NAME(subparsers)``
declares its arguments and sets ``run=cmd_NAME``; ``cmd_NAME(args)`` runs it and
returns the exit code. To add one, write both and list ``add_NAME`` in
:data:`SUBCOMMANDS`. A :class:`~wslab.runtime.errors.LabError` raised by a
subcommand is printed as one line on stderr, with exit code 2.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable

from .check import add_check
from .client import add_client
from .common import Parser
from .proxy import add_proxy
from .serve import add_serve

__all__ = ["SUBCOMMANDS", "build_parser", "main"]


SUBCOMMANDS = [add_serve, add_proxy, add_client, add_check]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="wslab",
        description=textwrap.fill(
            "Lab servers and fault proxies for WebSocket clients in any language. "
            "Everything listens on 127.0.0.1 unless told otherwise."
        ),
        epilog="examples:\n"
        "  wslab serve --broadcast-interval 0.5\n"
        "  wslab proxy --upstream ws://127.0.0.1:8765 --fault stall\n"
        "  wslab client ws://127.0.0.1:8765 --min-delay 0.5\n"
        "  wslab check      (is this machine ready for the notebooks?)\n"
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
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)
