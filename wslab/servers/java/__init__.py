"""The seed's server in Java: two JSR-356 endpoints for a real Tomcat (notebook 09).

``Broken.java`` (``/broken``) is the seed's bug: a static session map that
only grows, and a broadcast every 100 ms that logs each failure and carries
on. ``Fixed.java`` (``/fixed``) removes a session in ``@OnClose`` and
``@OnError``, skips sessions that are not open, and bounds every blocking send
(``BLOCKING_SEND_TIMEOUT``). Both ship with wslab as plain ``.java`` files;
:func:`wslab.runtime.tomcat.launch_tomcat` compiles and runs them.

Both log one line each time their map changes, e.g.
``session [0] removed by onError java.io.IOException: Connection timed out, 0 in the map``:
:func:`map_sizes` reads the map's size over time back from Tomcat's log.

Java system properties they read (``launch_tomcat(..., properties={...})``):
``lab.payloadBytes`` (message size, default 4), and for ``Fixed`` only
``lab.sendTimeoutMs`` (default 2000), ``lab.readIdleMs`` and ``lab.maxIdleMs``
(default 0: off). A ``Fixed`` client may choose its own settings in its URL
instead, ``payloadBytes`` included: ``/fixed?readIdleMs=2000&payloadBytes=65536``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ...runtime.display import SourceCode
from ...runtime.javalog import TomcatLog

__all__ = ["BROKEN", "FIXED", "ENDPOINTS", "OPENED", "MapChange", "map_changes", "map_sizes", "show_java"]

HERE = Path(__file__).resolve().parent
BROKEN = HERE / "Broken.java"
FIXED = HERE / "Fixed.java"
# Both endpoints: compiled together, they run side by side in one Tomcat.
ENDPOINTS = (BROKEN, FIXED)

# Part of the line both endpoints' @OnOpen logs: run_vanish(opened=OPENED) waits for it between
# groups of clients, so that their sessions open in the order the groups connect.
OPENED = "] opened, "
_MAP_SIZE = re.compile(r"^session \[(?P<id>[^\]]+)\] (?P<change>opened|removed by .*), (?P<size>\d+) in the map$")


@dataclass(frozen=True)
class MapChange:
    """One line an endpoint logged when its session map changed.

    Attributes:
        at: When, in seconds since the epoch, as Tomcat logged it.
        session: Tomcat's session id, e.g. ``"0"``.
        change: ``"opened"``, or ``"removed by ..."`` (by what, e.g. ``onError java.io.EOFException``).
        size: The map's size right after the change.
    """

    at: float
    session: str
    change: str
    size: int


def map_changes(log: TomcatLog, endpoint: str) -> list[MapChange]:
    """Every change of the session map of ``endpoint`` (``"Broken"`` or ``"Fixed"``), in the log's order."""
    changes = []
    for record in log.records:
        if record.source.startswith(f"lab.{endpoint}.") and record.at is not None:
            match = _MAP_SIZE.match(record.message)
            if match:
                changes.append(MapChange(record.at, match["id"], match["change"], int(match["size"])))
    return changes


def map_sizes(log: TomcatLog, endpoint: str) -> list[tuple[float, int]]:
    """``(time, size)`` each time the session map of ``endpoint`` (``"Broken"`` or ``"Fixed"``) changed.

    Times are seconds since the epoch, as Tomcat logged them. Sessions removed at the same moment
    on different threads may log their sizes out of order (each reads the size after its own removal).
    """
    return [(change.at, change.size) for change in map_changes(log, endpoint)]


def show_java(path: Path) -> SourceCode:
    """One of the lab's Java files (:data:`BROKEN`, :data:`FIXED`) as it is on disk now, for a notebook."""
    return SourceCode(path.read_text(encoding="utf-8"), f"wslab/servers/java/{path.name}", language="java")
