"""The exercises' checks: run the student's code against real faults, print PASS or FAIL with a hint.

One module per exercise; each check tests behaviour, never the source text.
"""

from __future__ import annotations

from .sessions import check_handler

__all__ = ["check_handler"]
