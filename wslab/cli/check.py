"""``wslab check``: is this machine ready for the lab? One line per item, and what to do about each."""

from __future__ import annotations

import argparse
import textwrap

from ..runtime.check import run_checks
from ..runtime.programs import LAST_CORE_NOTEBOOK
from .common import Parser, print_line, run_async


def add_check(sub: argparse._SubParsersAction[Parser]) -> None:
    p = sub.add_parser(
        "check",
        help="check that this machine has what the notebooks need",
        description=textwrap.fill(
            "Check Python, the packages, a real WebSocket round trip on 127.0.0.1, and every external "
            "program a notebook starts. Each line says what was found, or what to do. Exit code 1 when "
            f"something notebooks 00 to {LAST_CORE_NOTEBOOK:02d} need is missing; what only a later "
            "notebook needs is reported as optional, and that notebook skips without it."
        ),
    )
    p.set_defaults(run=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    return run_async("check", _check())


async def _check() -> int:
    report = await run_checks()
    print_line(str(report))
    return 0 if report.ok else 1
