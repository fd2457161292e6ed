"""wslab: a hands-on lab about how WebSocket connections die and how to survive it.

The package is grouped by role, and imports point one way (tests/test_layers.py
checks it): ``runtime`` <- ``faults`` <- ``servers`` <- ``clients`` <-
``studies`` <- ``checks`` <- ``cli``. The README's package map lists every
module. The names below are the ones a notebook needs first.
"""

import sys

if sys.version_info < (3, 11):  # before the imports below fail with a less helpful message
    raise ImportError(f"wslab needs Python 3.11 or later, and this is {sys.version.split()[0]}: install a newer Python")

from .faults.proxy import FAULTS, Fault, FaultProxy, start_proxy
from .runtime.display import show_source, table
from .runtime.errors import LabError
from .runtime.lab import Lab, check_url, current_lab, new_lab
from .runtime.server import LabServer
from .runtime.timeline import Event, EventKind, Timeline, describe_exception
from .runtime.timing import scaled, wait_until
from .servers.naive import NaiveServer

__all__ = [
    "FAULTS",
    "Event",
    "EventKind",
    "Fault",
    "FaultProxy",
    "Lab",
    "LabError",
    "LabServer",
    "NaiveServer",
    "Timeline",
    "check_url",
    "current_lab",
    "describe_exception",
    "new_lab",
    "scaled",
    "show_source",
    "start_proxy",
    "table",
    "wait_until",
]
__version__ = "0.1.0"

# The groups below the runtime, reachable as ``wslab.checks`` and so on after a plain ``import wslab``
# (an exercise's check cell says ``wslab.checks.check_...``), but imported only on first use.
_GROUPS = ("faults", "servers", "clients", "studies", "checks", "cli")


def __getattr__(name: str) -> object:
    if name in _GROUPS:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
