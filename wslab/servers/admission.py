"""Admission control: at most so many opening handshakes per second; "come back later" to the rest.

When a server restarts, every client comes back at once: a thundering herd.
Each handshake costs the server work (TCP accept, HTTP parsing, TLS, the
application's own welcome). Admission control caps that work: a token bucket
(:class:`AcceptLimit`) admits ``rate`` handshakes per second, in bursts of
``burst``, and :class:`AdmissionControl` answers the others, cheaply, with a
time to come back:

- ``mode="503"``: HTTP ``503 Service Unavailable`` with ``Retry-After: N``
  (whole seconds, as HTTP requires), before any WebSocket exists;
- ``mode="1013"``: the handshake completes, then the server closes at once
  with ``1013 try again later``, and ``retry after N s`` in the reason (this
  lab's convention: a close frame has no header). A browser's ``onclose``
  sees a code and a reason; of a 503 it sees only 1006.

Each refused client gets an appointment: the first one "in 1 s", and later
ones further out as the queue of appointments grows at ``rate`` per second,
so the herd comes back spread over the time the server needs for it.
:class:`~wslab.clients.reconnect.ReconnectingClient` waits at least that long,
plus its own jitter.

Both classes are pure: they never touch a socket, and take the time as an
argument (or read ``clock``), so they are tested without a network.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["AcceptLimit", "AdmissionControl", "AdmissionMode", "Refusal"]


class AcceptLimit:
    """A server's accept capacity: at most ``rate`` connections per second, in bursts of ``burst``.

    A token bucket: it holds up to ``burst`` tokens, gains ``rate`` tokens per
    second, and each admitted connection takes one.

    Args:
        rate: Sustained accepts per second.
        burst: Bucket size; defaults to 100 ms worth of ``rate`` (at least 1).
        clock: Seconds, for :meth:`admit` calls without ``now``.
    """

    def __init__(self, rate: float, burst: float | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate * 0.1)
        self.clock = clock
        self.refill()

    def refill(self, now: float | None = None) -> None:
        """Fill the bucket: the server just started and has been idle."""
        self.tokens = self.burst
        self.last = self.clock() if now is None else now

    def admit(self, now: float | None = None) -> bool:
        """Take a token if there is one: True means accept the connection, False means "busy"."""
        now = self.clock() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class AdmissionMode(StrEnum):
    """How :class:`AdmissionControl` turns a client away."""

    HTTP_503 = "503"  # refuse the handshake: HTTP 503 with Retry-After
    CLOSE_1013 = "1013"  # accept it, then close at once with 1013 "try again later"


@dataclass(frozen=True)
class Refusal:
    """Turn this client away and tell it to come back in ``retry_after`` whole seconds."""

    retry_after: int

    @property
    def reason(self) -> str:
        """The text of the 503 body, or the 1013 close reason (short: a close reason has 123 bytes at most)."""
        return f"try again later: retry after {self.retry_after} s"


class AdmissionControl:
    """Admit handshakes at ``rate`` per second (bursts of ``burst``); give the others an appointment.

    Args:
        rate: Handshakes admitted per second, sustained.
        burst: How many may come at once after a quiet spell (default: 100 ms worth).
        mode: ``"503"`` or ``"1013"`` (:class:`AdmissionMode`).
        clock: Seconds, for calls without ``now``.

    Attributes:
        admitted: Handshakes admitted so far.
        refused: Handshakes turned away so far.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        mode: AdmissionMode | str = AdmissionMode.HTTP_503,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be a positive number of handshakes per second, not {rate!r}")
        self.limit = AcceptLimit(rate, burst, clock=clock)
        self.mode = AdmissionMode(mode)
        self.clock = clock
        self.admitted = 0
        self.refused = 0
        self._next_slot = 0.0  # when the last appointment handed out falls due

    def decide(self, now: float | None = None) -> Refusal | None:
        """None: admit this handshake now. A :class:`Refusal`: turn it away, with when to come back."""
        now = self.clock() if now is None else now
        if self.limit.admit(now):
            self.admitted += 1
            return None
        self.refused += 1
        # One more appointment, 1/rate after the last one still to come: the herd is spread over
        # the time the server needs for it. HTTP's Retry-After is whole seconds, at least 1.
        self._next_slot = max(self._next_slot, now) + 1 / self.limit.rate
        return Refusal(max(1, math.ceil(round(self._next_slot - now, 6))))  # round: 20 x 0.1 is 2.0000000000000004

    def __repr__(self) -> str:
        return (f"AdmissionControl(rate={self.limit.rate}, burst={self.limit.burst}, mode={self.mode.value!r}; "
                f"{self.admitted} admitted, {self.refused} refused)")
