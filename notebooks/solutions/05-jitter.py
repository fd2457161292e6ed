"""Reference solution for notebook 05's exercise: full jitter.

Load it into a cell with ``%load solutions/05-jitter.py``, run it, then the check again.
"""

import random


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before reconnection attempt `attempt` (0 for the first retry since the connection was lost).

    base: the first ceiling, in seconds; the ceiling doubles with each attempt, up to
    cap:  the longest delay, in seconds;
    rng:  this client's own random generator: draw from it, and only from it.
    """
    ceiling = min(cap, base * 2**attempt)  # cap the ceiling first ...
    return rng.uniform(0.0, ceiling)  # ... then draw: at the cap too, the delays spread over [0, cap]
