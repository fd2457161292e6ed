"""Java stack traces, read from a log: Tomcat's one-line records, or a trace pasted from a blog post.

Tomcat's ``OneLineFormatter`` writes each log record as one header line, then
the exception (if any) indented by a tab and its frames by two tabs::

    25-Nov-2026 20:19:55.609 SEVERE [https-jsse-nio-127.0.0.1-37175-exec-1] org.apache...PojoEndpointBase.onError ...
    \tjava.io.IOException: Connection timed out
    \t\tat java.base/sun.nio.ch.SocketDispatcher.read0(Native Method)
    \t\tat java.base/sun.nio.ch.SocketDispatcher.read(SocketDispatcher.java:47)

:func:`parse_log` turns such a log into :class:`LogRecord` objects, each with
its time and its :class:`Trace`; :class:`TomcatLog` finds and counts records.
:func:`parse_trace` reads a bare trace in any indentation, such as the seed's.
Everything here is pure: text in, objects out, no Tomcat needed.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Frame", "Trace", "LogRecord", "TomcatLog", "parse_frame", "parse_trace", "parse_log"]

# "at java.base/sun.nio.ch.SocketDispatcher.read0(Native Method)": package.Class.method, maybe after a
# module ("java.base/", Java 9+) or a class loader ("app//"), then the source in brackets.
_FRAME = re.compile(r"^at (?P<qualified>[^\s(]+)\((?P<source>[^)]*)\)$")
# The header of a OneLineFormatter record: "25-Nov-2026 20:19:55.609 SEVERE [thread] source message".
_HEADER = re.compile(
    r"^(?P<at>\d{2}-[A-Z][a-z]{2}-\d{4} \d{2}:\d{2}:\d{2}\.\d{3}) "
    r"(?P<level>SEVERE|WARNING|INFO|CONFIG|FINE|FINER|FINEST) \[(?P<thread>[^\]]*)\] (?P<source>\S+) ?(?P<message>.*)$"
)
# Tomcat's own time format; the lab starts the JVM with -Duser.timezone=UTC, so times are UTC.
_TIME_FORMAT = "%d-%b-%Y %H:%M:%S.%f"


@dataclass(frozen=True)
class Frame:
    """One ``at ...`` line of a stack trace.

    Attributes:
        where: ``package.Class.method``, e.g. ``sun.nio.ch.SocketDispatcher.read0``.
        source: What the brackets say: ``SocketDispatcher.java:47`` or ``Native Method``.
        module: The Java module before the slash (``java.base``), or None (Java 8 has none).
    """

    where: str
    source: str
    module: str | None = None

    @property
    def class_name(self) -> str:
        """``sun.nio.ch.SocketDispatcher``; nested classes keep their ``$``."""
        return self.where.rpartition(".")[0]

    @property
    def method(self) -> str:
        return self.where.rpartition(".")[2]

    @property
    def line(self) -> int | None:
        """The line number, or None for ``Native Method`` and unknown sources."""
        _, _, number = self.source.rpartition(":")
        return int(number) if number.isdigit() else None

    @property
    def short_class(self) -> str:
        """The class name without its package: ``SocketDispatcher``, ``NioEndpoint$NioSocketWrapper``."""
        return self.class_name.rpartition(".")[2]

    @property
    def short(self) -> str:
        """``SocketDispatcher.read0:47``: the class without its package, the method, the line if any."""
        return f"{self.short_class}.{self.method}" + (f":{self.line}" if self.line is not None else "")

    def __str__(self) -> str:
        module = f"{self.module}/" if self.module else ""
        return f"at {module}{self.where}({self.source})"


def parse_frame(line: str) -> Frame | None:
    """The :class:`Frame` of one ``at ...`` line (any indentation), or None if it is not one."""
    match = _FRAME.match(line.strip())
    if match is None:
        return None
    *prefix, where = match["qualified"].split("/")
    return Frame(where, match["source"], prefix[-1] if prefix and prefix[-1] else None)


@dataclass
class Trace:
    """An exception and the frames it was thrown through, innermost first.

    Attributes:
        exception: The exception line, e.g. ``java.io.IOException: Connection timed out``.
        frames: Its own frames, innermost (where it was thrown) first.
        cause: The ``Caused by:`` trace, if there is one.
    """

    exception: str
    frames: list[Frame] = field(default_factory=list)
    cause: Trace | None = None

    def contains(self, text: str) -> bool:
        """True if ``text`` is in the exception line, a frame, or the cause chain."""
        if text in self.exception or any(text in str(frame) for frame in self.frames):
            return True
        return self.cause is not None and self.cause.contains(text)

    def __str__(self) -> str:
        lines = [self.exception, *(f"  {frame}" for frame in self.frames)]
        if self.cause is not None:
            lines.append(f"Caused by: {self.cause}")
        return "\n".join(lines)


def parse_trace(text: str | Iterable[str]) -> Trace | None:
    """Read a stack trace: an exception line, ``at`` lines, optionally ``Caused by:`` and its own.

    Indentation does not matter (tabs in Tomcat's log, two spaces in the seed's
    post). ``... 11 more`` lines are skipped. None if there is no exception line.
    """
    lines = text.splitlines() if isinstance(text, str) else list(text)
    top: Trace | None = None
    current: Trace | None = None
    for raw in lines:
        line = raw.strip()
        if not line or (line.startswith("...") and line.endswith("more")):
            continue
        frame = parse_frame(line)
        if frame is not None and current is not None:
            current.frames.append(frame)
        elif line.startswith("Caused by: ") and current is not None:
            current.cause = Trace(line.removeprefix("Caused by: "))
            current = current.cause
        elif current is None and frame is None:
            top = current = Trace(line)
    return top


@dataclass
class LogRecord:
    """One record of Tomcat's log: the header line and the exception printed under it.

    Attributes:
        at: When Tomcat logged it, in seconds since the epoch (millisecond precision), or None
            for a line that is not a record (e.g. the JVM's own warnings).
        level: ``SEVERE``, ``WARNING``, ``INFO``, ``FINE``...
        thread: The thread that logged it, e.g. ``https-jsse-nio-127.0.0.1-37175-exec-1``.
        source: The logging class and method, e.g. ``org.apache.tomcat.websocket.pojo.PojoEndpointBase.onError``.
        message: The rest of the header line.
        lines: Every line of the record, as logged.
    """

    at: float | None
    level: str
    thread: str
    source: str
    message: str
    lines: list[str] = field(default_factory=list)

    @property
    def trace(self) -> Trace | None:
        """The exception printed under the header, if any."""
        return parse_trace(self.lines[1:]) if len(self.lines) > 1 else None

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def contains(self, text: str) -> bool:
        return any(text in line for line in self.lines)


def _epoch(stamp: str) -> float:
    moment = datetime.datetime.strptime(stamp, _TIME_FORMAT).replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def parse_log(text: str) -> list[LogRecord]:
    """Split Tomcat's console log (OneLineFormatter) into records, in order."""
    records: list[LogRecord] = []
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header is not None:
            records.append(LogRecord(_epoch(header["at"]), header["level"], header["thread"],
                                     header["source"], header["message"], [line]))
        elif line.startswith("\t") and records:
            records[-1].lines.append(line)  # the exception and its frames, under their header
        elif line.strip():
            records.append(LogRecord(None, "", "", "", line, [line]))
    return records


class TomcatLog:
    """A Tomcat log, parsed: find records and count them, by what they contain and when."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.records = parse_log(text)

    def find(self, text: str, *, where: str | None = None, since: float | None = None) -> list[LogRecord]:
        """Records that contain ``text`` (anywhere) and ``where`` (in a frame), logged at or after ``since``."""
        found = []
        for record in self.records:
            if since is not None and (record.at is None or record.at < since):
                continue
            if not record.contains(text):
                continue
            if where is not None and not any(where in line for line in record.lines if parse_frame(line)):
                continue
            found.append(record)
        return found

    def first(self, text: str, *, where: str | None = None, since: float | None = None) -> LogRecord | None:
        """The first record :meth:`find` finds, or None."""
        found = self.find(text, where=where, since=since)
        return found[0] if found else None

    def count(self, text: str, start: float, end: float) -> int:
        """How many records containing ``text`` were logged in ``[start, end)`` (epoch seconds)."""
        return sum(1 for r in self.find(text, since=start) if r.at is not None and r.at < end)

    def lines_between(self, start: float, end: float) -> int:
        """How many log lines (headers and frames) the records logged in ``[start, end)`` fill."""
        return sum(len(r.lines) for r in self.records if r.at is not None and start <= r.at < end)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"<TomcatLog {len(self.records)} records>"
