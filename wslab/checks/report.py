"""What every exercise check returns: one row per case, PASS or FAIL with a hint, and a verdict.

A check runs the student's code against real faults and reports, case by
case, what happened. Every check includes a healthy control (a client that
must stay, a connection that must not reconnect), so that code which simply
drops, refuses or ignores everything cannot pass. The report never raises
and never prints: a notebook cell displays it, as text (terminals, nbval) or
as an HTML table (JupyterLab)::

    PASS  healthy      the healthy client stayed in the map
    FAIL  vanished     the vanished client stayed for over 2 s: ping it, and abort when no pong comes
    failing: vanished
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Case", "Report", "describe_error"]


@dataclass(frozen=True)
class Case:
    """The verdict on one case.

    Attributes:
        name: Short, e.g. ``"vanished"`` or ``"healthy"``.
        passed: Whether the student's code did the right thing.
        message: What happened, and on a failure, a hint that names what still fails.
        measured: Numbers measured in this case (seconds, counts), for whoever wants them.
    """

    name: str
    passed: bool
    message: str
    measured: dict[str, Any] = field(default_factory=dict, compare=False)

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name:<12} {self.message}"


@dataclass(frozen=True)
class Report:
    """Every case of one check. ``passed`` only when every case passed."""

    cases: list[Case]

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(case.passed for case in self.cases)

    @property
    def failed(self) -> list[str]:
        """The names of the failing cases."""
        return [case.name for case in self.cases if not case.passed]

    def case(self, name: str) -> Case:
        """The case called ``name``."""
        for case in self.cases:
            if case.name == name:
                return case
        raise KeyError(f"no case {name!r}; cases: {[c.name for c in self.cases]}")

    def verdict(self) -> str:
        if self.passed:
            return f"all {len(self.cases)} cases pass"
        return f"failing: {', '.join(self.failed)}"

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return "\n".join([str(case) for case in self.cases] + [self.verdict()])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td style='color:{'green' if c.passed else 'red'}'><b>{'PASS' if c.passed else 'FAIL'}</b></td>"
            f"<td style='text-align:left'>{html.escape(c.name)}</td>"
            f"<td style='text-align:left'>{html.escape(c.message)}</td></tr>"
            for c in self.cases
        )
        return f"<table><tbody>{rows}</tbody></table><p><b>{html.escape(self.verdict())}</b></p>"


def describe_error(where: str, exc: BaseException) -> str:
    """One line for an exception raised by the student's code: ``"decide() raised KeyError: 1008"``."""
    text = str(exc)
    return f"{where} raised {type(exc).__name__}" + (f": {text}" if text else "")
