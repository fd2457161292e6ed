"""wslab: a hands-on lab about how WebSocket connections die and how to survive it.

The modules, each with one job:

- :mod:`wslab.lab`: start servers, proxies, clients and tasks; close them all.
- :mod:`wslab.proxy`: a TCP relay that stalls, resets, closes or refuses on command.
- :mod:`wslab.servers`: the seed's naive session-map server (and fixed ones).
- :mod:`wslab.timeline`: timestamped events instead of prints.
- :mod:`wslab.failures`: four ways a client dies, inflicted for real.
- :mod:`wslab.closecodes`: close codes, their meanings, and which ones a client retries after.
- :mod:`wslab.reconnect`: a reconnecting client: backoff, close-code table, send buffer, replay.
- :mod:`wslab.display`: show wslab's own source in a notebook.
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
