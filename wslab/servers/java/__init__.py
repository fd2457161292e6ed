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
``lab.sendTimeoutMs`` (default 2000) and ``lab.readIdleMs`` (default 0: off).
"""

from __future__ import annotations

import re
from pathlib import Path

from ...runtime.javalog import TomcatLog

__all__ = ["BROKEN", "FIXED", "ENDPOINTS", "map_sizes"]

HERE = Path(__file__).resolve().parent
BROKEN = HERE / "Broken.java"
FIXED = HERE / "Fixed.java"
# Both endpoints: compiled together, they run side by side in one Tomcat.
ENDPOINTS = (BROKEN, FIXED)

_MAP_SIZE = re.compile(r"^session \[(?P<id>[^\]]+)\] (?P<change>opened|removed by .*), (?P<size>\d+) in the map$")


def map_sizes(log: TomcatLog, endpoint: str) -> list[tuple[float, int]]:
    """``(time, size)`` each time the session map of ``endpoint`` (``"Broken"`` or ``"Fixed"``) changed.

    Times are seconds since the epoch, as Tomcat logged them. Sessions removed at the same moment
    on different threads may log their sizes out of order (each reads the size after its own removal).
    """
    sizes = []
    for record in log.records:
        if record.source.startswith(f"lab.{endpoint}.") and record.at is not None:
            match = _MAP_SIZE.match(record.message)
            if match:
                sizes.append((record.at, int(match["size"])))
    return sizes
