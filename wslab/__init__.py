"""wslab: a hands-on lab about how WebSocket connections die and how to survive it.

The modules, each with one job, are listed in the README's package map.
The names below are the ones a notebook needs first.
"""

from .display import show_source
from .lab import Lab, LabError, LabServer, check_url, current_lab, new_lab
from .proxy import FAULTS, FaultProxy
from .servers import NaiveServer
from .timeline import Event, Timeline, describe_exception

__all__ = [
    "FAULTS",
    "Event",
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
    "show_source",
]
__version__ = "0.1.0"
