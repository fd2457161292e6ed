"""A reconnecting client's decisions, without I/O: when to retry, how long to wait, what was missed.

In the style of websockets' Sans-I/O ``protocol.py``: these objects never
touch a socket or a clock. They are fed what happened and return what to do,
so every decision can be tested, and shown, without a network:

- :class:`ReconnectPolicy` decides after every close and every failed attempt:
  :class:`Retry` after a delay, or :class:`GiveUp` with a reason. It reads the
  close-code table, counts retries, resets the backoff after a connection that
  lasted ``min_uptime``, and stops after ``max_retries``;
- :class:`SequenceTracker` follows the numbers of the messages received: gaps,
  duplicates, and the ``last_seq`` to resume from; :func:`resume_url` asks the
  server for what came after it.

With them, the plain data the client reports: its :class:`ClientState`, each
:class:`Message` received, and the :class:`CloseEvent` of every close
(:func:`close_event` reads it off a closed connection, as a browser does).

:class:`~wslab.clients.reconnect.ReconnectingClient` is these two objects plus
the I/O: connecting, reading, sleeping.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from websockets.client import process_exception  # websockets' own sans-I/O rule: retry this error or not

from .backoff import Backoff
from .closecodes import RETRY, retry_reason, should_retry

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

__all__ = [
    "ClientState", "CloseEvent", "Decision", "GiveUp", "Message", "Policy", "ReconnectPolicy", "Retry", "Seen",
    "SequenceTracker", "close_event", "resume_url",
]


class ClientState(StrEnum):
    """Where a :class:`~wslab.clients.reconnect.ReconnectingClient` is. A state is also a plain string."""

    NEW = "new"  # run() not called yet
    CONNECTING = "connecting"  # an attempt (TCP + opening handshake) is under way
    OPEN = "open"  # connected, buffer flushed
    DISCONNECTED = "disconnected"  # the connection just closed; deciding what next
    WAITING = "waiting"  # the backoff delay before the next attempt
    CLOSED = "closed"  # stopped for good: closed by the user, cancelled, or gave up


@dataclass(frozen=True)
class Message:
    """A received message, and its number ``seq`` if the server numbers them (:mod:`wslab.servers.replay`)."""

    data: str | bytes
    seq: int | None = None


@dataclass(frozen=True)
class CloseEvent:
    """What a browser passes to ``onclose``.

    Attributes:
        code: The close code received, 1006 if no close frame arrived.
        reason: The reason received, ``""`` if none.
        was_clean: True only if the closing handshake completed (a close
            frame went each way) before TCP closed.
    """

    code: int
    reason: str
    was_clean: bool


def close_event(ws: ClientConnection) -> CloseEvent:
    """The :class:`CloseEvent` a browser would report for the closed connection ``ws``."""
    exc = ws.close_exc if ws.close_code is not None else None
    clean = exc is not None and exc.rcvd is not None and exc.sent is not None
    code = int(ws.close_code) if ws.close_code is not None else 1006  # int, not websockets' CloseCode enum
    return CloseEvent(code, ws.close_reason or "", clean)


@dataclass(frozen=True)
class Retry:
    """Reconnect after ``delay`` seconds; this will be retry number ``retry`` since the last good connection."""

    delay: float
    retry: int


@dataclass(frozen=True)
class GiveUp:
    """Stop reconnecting, for ``reason``."""

    reason: str


Decision = Retry | GiveUp


class Policy(Protocol):
    """What :class:`~wslab.clients.reconnect.ReconnectingClient` asks of its decision-maker.

    :class:`ReconnectPolicy` is the lab's; an exercise check plugs in one
    that asks the student's function instead.
    """

    retries: int

    def decide(self, outcome: CloseEvent | BaseException, uptime: float = 0.0) -> Decision: ...


class ReconnectPolicy:
    """Every decision a reconnecting client makes, fed with what happened.

    Args:
        backoff: The delays between attempts.
        retry_table: Close code -> reconnect or not (:data:`wslab.clients.closecodes.RETRY`).
        max_retries: Give up after this many retries in a row without a
            connection that lasted ``min_uptime``. None: never give up.
        min_uptime: A connection must stay open this long, in seconds, for the
            backoff (and the retry count) to start again from the beginning,
            so that a server that accepts then drops at once is not hammered.

    Attributes:
        retries: Retries since the last connection that lasted ``min_uptime``.
    """

    def __init__(
        self,
        backoff: Backoff,
        *,
        retry_table: dict[int | range, bool] = RETRY,
        max_retries: int | None = None,
        min_uptime: float = 5.0,
    ) -> None:
        self.backoff = backoff
        self.retry_table = retry_table
        self.max_retries = max_retries
        self.min_uptime = min_uptime
        self.retries = 0

    def decide(self, outcome: CloseEvent | BaseException, uptime: float = 0.0) -> Decision:
        """What to do after a connection closed (``outcome`` is its :class:`CloseEvent`, ``uptime``
        how long it was open) or after an attempt failed (``outcome`` is the exception)."""
        if isinstance(outcome, CloseEvent):
            if uptime >= self.min_uptime:
                # It stayed up long enough: this outage starts the backoff from the beginning.
                self.backoff.reset()
                self.retries = 0
            if not should_retry(outcome.code, self.retry_table):
                return GiveUp(retry_reason(outcome.code, self.retry_table))
        elif isinstance(outcome, Exception) and process_exception(outcome) is not None:
            # websockets' own rule: network errors, timeouts and HTTP 500/502/503/504 are worth a retry.
            return GiveUp(f"not retrying {type(outcome).__name__}: {outcome}")
        if self.max_retries is not None and self.retries >= self.max_retries:
            return GiveUp(f"{self.retries} reconnection attempts failed (max_retries={self.max_retries})")
        self.retries += 1
        return Retry(self.backoff.next(), self.retries)


@dataclass(frozen=True)
class Seen:
    """What one sequence number meant: ``"next"``, ``"first"``, ``"gap"`` (with the missed range) or ``"duplicate"``."""

    kind: str
    missed: tuple[int, int] | None = None


@dataclass
class SequenceTracker:
    """The numbers of the messages received, and what they say about the ones that were not.

    Attributes:
        last_seq: The highest number received; what to resume from (None before the first).
        gaps: Every missed range, ``(first, last)``, in order.
        duplicates: How many numbers arrived more than once.
    """

    last_seq: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)
    duplicates: int = 0

    def see(self, seq: int) -> Seen:
        """Record message number ``seq``."""
        last = self.last_seq
        if last is None:
            self.last_seq = seq
            return Seen("first")
        if seq <= last:
            self.duplicates += 1
            return Seen("duplicate")
        self.last_seq = seq
        if seq > last + 1:
            missed = (last + 1, seq - 1)
            self.gaps.append(missed)
            return Seen("gap", missed)
        return Seen("next")

    def resync(self, missed: tuple[int, int] | None, next_seq: int) -> None:
        """The server could not replay ``missed``: count it as a gap, go on from ``next_seq``."""
        if missed is not None:
            self.gaps.append(missed)
        self.last_seq = next_seq - 1

    @property
    def missed(self) -> int:
        """How many numbers were missed in all."""
        return sum(last - first + 1 for first, last in self.gaps)


def resume_url(url: str, last_seq: int | None) -> str:
    """``url`` with ``last_seq`` in its query, so the server replays what came after it; ``url`` before any number.

    Any ``last_seq`` already in ``url`` is replaced; the rest of the query is kept.
    """
    if last_seq is None:
        return url
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "last_seq"]
    query.append(("last_seq", str(last_seq)))
    return urllib.parse.urlunsplit(parts._replace(path=parts.path or "/", query=urllib.parse.urlencode(query)))
