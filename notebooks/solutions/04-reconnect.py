"""Reference solution for notebook 04's exercise: when to reconnect, and when to stop.

Load it into a cell with ``%load solutions/04-reconnect.py``, run it, then the check again.
"""

import random

FIRST_DELAY = 0.1  # seconds; ReconnectingWebSocket's 1 s, scaled down like every timing in this notebook
MAX_DELAY = 1.0  # seconds: the cap, so that a client is back soon after a long outage ends
STOP = {1002, 1003, 1007, 1008, 1009, 1010}  # the peer will say the same again on every connection


def decide(close_code: int | None, attempt: int) -> float | None:
    """Seconds to wait before reconnecting, or None to stop.

    close_code: the code the connection closed with (1006 if no close frame came),
                or None when the attempt failed to connect (refused, timed out).
    attempt:    1 for the first retry after a connection that stayed up, then 2, 3, ...
    """
    if close_code in STOP or (close_code is not None and 3000 <= close_code <= 4999):
        return None  # a policy or protocol decision, or the application's own code: coming back won't change it
    # Everything else (1006, 1011, 1012, 1013, a refused connect) is worth another try, later each time.
    ceiling = min(MAX_DELAY, FIRST_DELAY * 2 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # "equal jitter": never less than half the ceiling
