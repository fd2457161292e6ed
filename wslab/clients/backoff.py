"""How long to wait before the next reconnection attempt.

One class, :class:`Backoff`, four jitter strategies from the AWS Architecture
Blog post "Exponential Backoff And Jitter" (2015), generalised from a growth
factor of 2 to any ``factor``. With ``ceiling(n) = min(max_delay, min_delay * factor**n)``
for attempt ``n`` (0, 1, 2, ... since the last :meth:`~Backoff.reset`):

=================  ====================================================
``"none"``         ``ceiling(n)``: plain exponential backoff
``"full"``         ``uniform(0, ceiling(n))``
``"equal"``        ``ceiling(n) / 2 + uniform(0, ceiling(n) / 2)``
``"decorrelated"`` ``uniform(min_delay, min(max_delay, previous * 2 * factor))``,
                   starting from ``previous = min_delay``
=================  ====================================================

Jitter survives at the cap. Socket.IO adds +/-50 % to the delay and *then*
caps it, so once the delay reaches the cap every client waits exactly the cap
again, in step. Here the cap applies *before* the random draw: at the cap,
full jitter still spreads over ``[0, max_delay]`` and equal jitter over
``[max_delay / 2, max_delay]``. AWS's decorrelated jitter,
``min(cap, uniform(base, previous * 3))``, clips the *draw*, so two thirds of
its delays at the cap are exactly the cap; here the *upper bound* is clipped,
so its delays at the cap stay spread over ``[min_delay, max_delay]``.
Its upper bound ``2 * factor * previous`` makes the delay grow by ``factor``
on average, like the others, and is AWS's ``3 * previous`` at the default
factor 1.5. Below a factor of about 1.4 the decorrelated delay drifts back
towards ``min_delay`` instead of growing.

Pass ``seed=`` (or a shared ``rng=``) and the same calls give the same delays,
so every run can be replayed exactly.

:data:`STRATEGIES` names the five schedules notebook 05 compares. Each name
means one thing: ``"none"`` is only ever a jitter (no randomness), and no
backoff at all is the strategy ``"fixed"`` (the same delay every time).
Anything with ``next()`` and ``reset()`` (:class:`Delays`) can stand in for a
:class:`Backoff` where the lab's clients wait between attempts.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

__all__ = ["Backoff", "Delays", "JITTERS", "STRATEGIES"]

JITTERS = ("none", "full", "equal", "decorrelated")


class Delays(Protocol):
    """What a client needs from its backoff: the next delay, and starting over (:class:`Backoff` is one)."""

    def next(self) -> float:
        """The delay before the next attempt, in seconds."""
        ...

    def reset(self) -> None:
        """Start again from the first delay (after a connection that lasted)."""
        ...


class Backoff:
    """Delays before reconnection attempts: exponential growth, a cap, optional jitter.

    The defaults are ReconnectingWebSocket 1.0's, the seed's client:
    1 s x 1.5**n, at most 30 s, no jitter.

    Args:
        min_delay: The first delay, in seconds (and the base of the growth).
        max_delay: The cap, in seconds: no delay is longer.
        factor: Growth per attempt. ``1.0`` means a fixed retry interval.
        jitter: ``"none"``, ``"full"``, ``"equal"`` or ``"decorrelated"``.
        seed: Seed for a private random generator: same seed, same delays.
        rng: A random generator to draw from instead (e.g. one shared by a
            whole simulated herd). Takes precedence over ``seed``.

    Attributes:
        attempt: How many delays :meth:`next` returned since the last reset.
    """

    def __init__(
        self,
        *,
        min_delay: float = 1.0,
        max_delay: float = 30.0,
        factor: float = 1.5,
        jitter: str = "none",
        seed: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if jitter not in JITTERS:
            raise ValueError(f"jitter must be one of {', '.join(JITTERS)}, not {jitter!r}")
        if not 0 <= min_delay <= max_delay:
            raise ValueError(f"need 0 <= min_delay <= max_delay, got {min_delay} and {max_delay}")
        if factor < 1:
            raise ValueError(f"factor must be at least 1, got {factor}")
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.factor = factor
        self.jitter = jitter
        self.rng = rng if rng is not None else random.Random(seed)
        self.attempt = 0
        self._previous = min_delay  # decorrelated jitter's memory

    def ceiling(self, attempt: int) -> float:
        """The delay without jitter for ``attempt``: ``min(max_delay, min_delay * factor**attempt)``."""
        try:
            return min(self.max_delay, self.min_delay * self.factor**attempt)
        except OverflowError:  # factor**attempt beyond floats: long past the cap
            return self.max_delay

    def next(self) -> float:
        """The delay before the next attempt, in seconds. Counts one more attempt."""
        ceiling = self.ceiling(self.attempt)
        self.attempt += 1
        if self.jitter == "none":
            return ceiling
        if self.jitter == "full":
            return self.rng.uniform(0.0, ceiling)
        if self.jitter == "equal":
            return ceiling / 2 + self.rng.uniform(0.0, ceiling / 2)
        # decorrelated: clip the upper bound, not the draw, so the spread survives at the cap
        upper = min(self.max_delay, self._previous * 2 * self.factor)
        self._previous = self.rng.uniform(self.min_delay, max(upper, self.min_delay))
        return self._previous

    def reset(self) -> None:
        """Start again from ``min_delay``: call it after a connection that lasted long enough."""
        self.attempt = 0
        self._previous = self.min_delay

    def __repr__(self) -> str:
        return (f"Backoff(min_delay={self.min_delay}, max_delay={self.max_delay}, factor={self.factor}, "
                f"jitter={self.jitter!r}, attempt={self.attempt})")


# The strategies notebook 05 compares: keyword arguments for Backoff, on top of
# min_delay and max_delay. "fixed" is no backoff at all: the same delay, min_delay,
# before every attempt; "exponential" is backoff without jitter (jitter "none").
STRATEGIES: dict[str, dict[str, Any]] = {
    "fixed": {"factor": 1.0, "jitter": "none"},
    "exponential": {"jitter": "none"},
    "full": {"jitter": "full"},
    "equal": {"jitter": "equal"},
    "decorrelated": {"jitter": "decorrelated"},
}
