"""The exercises' checks: run the student's code against real faults, print PASS or FAIL with a hint.

One module per exercise; each check tests behaviour, never the source text, and each
returns a :class:`~wslab.checks.report.Report`.
"""

from __future__ import annotations

from .deaths import check_deaths
from .hardening import check_front_door
from .javaremoval import check_java_removal
from .jitter import check_full_jitter
from .keepalive import check_ping_interval
from .onclose import check_onclose
from .reconnect import check_reconnect_policy
from .resume import check_resume
from .sessions import check_handler

__all__ = [
    "check_deaths", "check_front_door", "check_full_jitter", "check_handler", "check_java_removal", "check_onclose",
    "check_ping_interval", "check_reconnect_policy", "check_resume",
]
