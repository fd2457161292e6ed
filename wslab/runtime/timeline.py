"""A record of what happened, when, to which connection.

Servers, proxies and clients in the lab never print: output from a background
task lands in whichever notebook cell happens to be running. They append
:class:`Event` objects to a :class:`Timeline` instead, and a cell displays it.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Event", "EventKind", "Timeline", "describe_exception", "TimelineLogHandler", "timeline_logger"]


class EventKind(StrEnum):
    """Every kind of event the lab records, by who records it. A kind is also a plain string."""

    # servers (LabServer, and the server apps)
    LISTENING = "listening"
    OPEN = "open"  # a connection opened (server side, client side, proxy, page)
    CLOSED = "closed"  # a connection ended; code, rcvd/sent and the exception are attached
    HANDLER_EXIT = "handler-exit"
    HANDLER_ERROR = "handler-error"  # the handler raised: a bug, recorded, and the client gets 1011
    STOPPED = "stopped"
    STOPPED_ACCEPTING = "stopped-accepting"  # a drain began: the listening socket closed, connections go on
    DRAIN = "drain"  # a drain closed a batch of connections (or aborted those left at its deadline)
    SEND_ERROR = "send-error"  # a send to a dead session failed (the naive server keeps the session)
    SEND_TIMEOUT = "send-timeout"
    REFUSED = "refused"  # an opening handshake refused (HTTP status) or failed (garbage, too slow, too big)
    EXPIRED = "expired"  # a connection's credentials expired: the server closed it (4401)
    SLOW = "slow"  # a late pong, or an outbox that grows: a slow client, not a dead one
    ABORT = "abort"  # a server aborted a connection, with the reason
    REMOVED = "removed"  # a session left the session map, with the reason
    RESUME = "resume"  # a client came back with its last_seq
    RESYNC = "resync"  # a gap older than the history: the client must reload
    BACKPLANE_UP = "backplane-up"  # a server process is subscribed to Redis (again)
    BACKPLANE_DOWN = "backplane-down"  # it lost Redis: local sessions stay, broadcasts are lost until it is back
    CATCH_UP = "catch-up"  # back on Redis, it read what it missed from the stream
    LOG = "log"  # websockets logged something (instead of printing it)
    # the lab's tasks
    TASK_DONE = "task-done"
    TASK_CANCELLED = "task-cancelled"
    TASK_ERROR = "task-error"
    # the fault proxy and the failures
    FAULT = "fault"
    UPSTREAM_ERROR = "upstream-error"
    INFLICT = "inflict"
    IDLE_TIMEOUT = "idle-timeout"  # the proxy's idle-timeout fault cut a quiet connection
    # reconnecting clients (the browser's names, plus the decisions)
    CONNECTING = "connecting"
    MESSAGE = "message"
    CLOSE = "close"  # the client's CloseEvent: code, reason, wasClean
    ERROR = "error"
    RETRY = "retry"
    GIVE_UP = "give-up"
    GAP = "gap"
    DUPLICATE = "duplicate"
    BUFFER_FULL = "buffer-full"
    # the browser and its pages
    LAUNCHED = "launched"
    LOADED = "loaded"
    LOAD_ERROR = "load-error"
    CONSOLE = "console"
    ONCLOSE = "onclose"
    SCRIPT_ERROR = "script-error"
    # external programs (nginx, redis-server, Tomcat)
    STARTED = "started"
    EXITED = "exited"


@dataclass(frozen=True)
class Event:
    """One thing that happened.

    Attributes:
        t: Seconds since the timeline started, on the monotonic clock.
        source: Who recorded it: ``"naive"``, ``"proxy"``, ``"client-3"``...
        kind: What happened, one of :class:`EventKind` (``"open"``, ``"closed"``, ``"fault"``...).
        conn: Which connection, as a short label (``"c1"``), if any.
        code: A WebSocket close code, if the event has one.
        detail: Free text: an exception, a reason, a number.
        data: Anything else worth keeping (byte counts, delays), for analysis.
    """

    t: float
    source: str
    kind: str
    conn: str | None = None
    code: int | None = None
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict, compare=False)


def describe_exception(exc: BaseException | None) -> str:
    """``ConnectionClosedError(...) <- TimeoutError(110, 'Connection timed out')``.

    The ``__cause__`` chain is where the real reason hides: websockets reports
    every abnormal end as ConnectionClosedError and chains the OS error to it.
    """
    parts = []
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts.append(f"{type(exc).__name__}({_exc_args(exc)})")
        exc = exc.__cause__
    return " <- ".join(parts)


def _exc_args(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{exc.errno}, {exc.strerror!r}"
    text = str(exc)
    return repr(text) if text else ""


class Timeline:
    """An append-only list of events with a shared zero.

    Args:
        clock: Returns seconds; defaults to :func:`time.monotonic`. Inject a fake
            clock to replay a run exactly.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.start = clock()
        self.events: list[Event] = []

    def now(self) -> float:
        """Seconds since this timeline started."""
        return self.clock() - self.start

    def record(
        self,
        source: str,
        kind: EventKind | str,
        *,
        conn: str | None = None,
        code: int | None = None,
        detail: str = "",
        **data: Any,
    ) -> Event:
        # int(): websockets' CloseCode is an IntEnum; keep plain numbers in the record.
        event = Event(self.now(), source, str(kind), conn, None if code is None else int(code), detail, data)
        self.events.append(event)
        return event

    def clear(self) -> None:
        self.events.clear()
        self.start = self.clock()

    def select(
        self,
        *,
        source: str | None = None,
        kind: str | Iterable[str] | None = None,
        conn: str | None = None,
        since: float | None = None,
    ) -> list[Event]:
        """Events matching every filter given."""
        kinds = {kind} if isinstance(kind, str) else set(kind) if kind is not None else None
        return [
            e
            for e in self.events
            if (source is None or e.source == source)
            and (kinds is None or e.kind in kinds)
            and (conn is None or e.conn == conn)
            and (since is None or e.t >= since)
        ]

    def table(self, *, times: bool = True, **filters: Any) -> EventTable:
        """A displayable table of the selected events.

        Pass ``times=False`` for output that stays the same from run to run
        (the order of events is kept, their timestamps are left out).
        """
        return EventTable(self.select(**filters), times=times)

    def __len__(self) -> int:
        return len(self.events)

    def __repr__(self) -> str:
        return f"<Timeline {len(self.events)} events>"


class EventTable:
    """Renders events as a text table (terminals, nbval) and HTML (JupyterLab)."""

    def __init__(self, events: list[Event], *, times: bool = True) -> None:
        self.events = events
        self.times = times

    def rows(self) -> list[list[str]]:
        rows = []
        for e in self.events:
            row = [f"{e.t:8.3f}"] if self.times else []
            row += [e.source, e.conn or "", e.kind, "" if e.code is None else str(e.code), e.detail]
            rows.append(row)
        return rows

    def header(self) -> list[str]:
        return (["t (s)"] if self.times else []) + ["source", "conn", "event", "code", "detail"]

    def __str__(self) -> str:
        rows = [self.header()] + self.rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header())
        body = "".join(
            "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in r) + "</tr>"
            for r in self.rows()
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class TimelineLogHandler(logging.Handler):
    """Turns log records (websockets logs handler crashes) into timeline events instead of stderr."""

    def __init__(self, timeline: Timeline, source: str) -> None:
        super().__init__(level=logging.INFO)
        self.timeline = timeline
        self.source = source

    def emit(self, record: logging.LogRecord) -> None:
        detail = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            detail += ": " + describe_exception(record.exc_info[1])
        self.timeline.record(self.source, EventKind.LOG, detail=detail, level=record.levelname)


def timeline_logger(timeline: Timeline, source: str, role: str) -> logging.Logger:
    """A logger to hand websockets (``logger=``): its warnings and errors go on ``timeline``, never to stderr.

    It is not registered with ``logging.getLogger()``, so it goes away with its server or
    client, and no later one can inherit this one's timeline; and it has no parent, so
    nothing reaches the root logger's handlers.
    """
    logger = logging.Logger(f"wslab.{role}.{source}", level=logging.WARNING)
    logger.addHandler(TimelineLogHandler(timeline, source))
    return logger
