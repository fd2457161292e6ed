"""The exercises' checks: run the student's code against real faults, print PASS or FAIL with a hint.

One module per exercise; each check tests behaviour, never the source text.
"""

from __future__ import annotations

from .deaths import check_deaths
from .keepalive import check_ping_interval
from .onclose import check_onclose
from .reconnect import check_reconnect_policy
from .sessions import HINTS, CheckResult, ModeCheck, ModeRun, check_handler, verdict

__all__ = [
    "HINTS", "CheckResult", "ModeCheck", "ModeRun", "check_deaths", "check_handler", "check_onclose",
    "check_ping_interval", "check_reconnect_policy", "verdict",
]
