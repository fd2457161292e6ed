"""The runtime: the lab that starts and closes everything, its timeline, deadlines, and the external programs it runs.

Nothing here knows about servers, faults or clients: they use the runtime.
"""

from __future__ import annotations

from .childprocess import ChildProcess, free_port
from .display import SourceCode, Table, show_source, table
from .errors import LabError, WaitTimeout
from .lab import Lab, check_url, current_lab, new_lab, running_tasks, tasks_left
from .programs import PROGRAMS, Program
from .server import LabServer, Restart
from .timeline import Event, EventKind, Timeline, describe_exception
from .timing import CLOSE_DEADLINE, TIMEOUT_FACTOR, abort_all, close_within, scaled, wait_until

__all__ = [
    "CLOSE_DEADLINE", "PROGRAMS", "TIMEOUT_FACTOR", "ChildProcess", "Event", "EventKind", "Lab", "LabError",
    "LabServer", "Program", "Restart", "SourceCode", "Table", "Timeline", "WaitTimeout", "abort_all", "check_url",
    "close_within", "current_lab", "describe_exception", "free_port", "new_lab", "running_tasks", "scaled",
    "show_source", "table", "tasks_left", "wait_until",
]
