"""The exercises' checks: run the student's code against real faults, print PASS or FAIL with a hint.

One module per exercise; each check tests behaviour, never the source text.
"""

from __future__ import annotations

from .deaths import check_deaths
from .sessions import HINTS, CheckResult, ModeCheck, ModeRun, check_handler, verdict

__all__ = ["check_deaths", "HINTS", "CheckResult", "ModeCheck", "ModeRun", "check_handler", "verdict"]
