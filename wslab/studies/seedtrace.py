"""The seed's two stack traces, and a frame-by-frame comparison with a trace Tomcat logged in this run.

The blog post that started this lab quotes a Tomcat log from 2018, on JDK 8:
a read that failed with ``Connection timed out``, then, while Tomcat closed the
session, a write that failed with ``Broken pipe``. :data:`SEED_LOG` is that
log, verbatim; :data:`SEED_READ` and :data:`SEED_CLOSE` are its two traces.

:func:`align` lines up a trace from this run (Debian's Tomcat 10.1, JDK 17) with one of
the seed's, frame by frame, and marks each row:

=========  ==================================================================
same       the same class and method; only the line number moved
changed    the same method, in another class (e.g. JDK 8's ``FileDispatcherImpl.read0``
           is JDK 17's ``SocketDispatcher.read0``)
new        a frame only this run's trace has
gone       a frame only the seed's trace has
=========  ==================================================================

It also says whether every Tomcat frame of the seed's trace (``org.apache.*``)
appears in this run's trace, in the seed's order: the test that this run is
the seed's failure, and not merely a similar one. Pure functions, no Tomcat.
"""

from __future__ import annotations

from dataclasses import dataclass
from difflib import SequenceMatcher
from enum import StrEnum

from ..runtime.display import Table, table
from ..runtime.javalog import Frame, Trace, parse_trace

__all__ = ["SEED_LOG", "SEED_READ", "SEED_CLOSE", "SEED_CLOSE_HEADER", "Mark", "FrameRow", "Alignment", "align"]

# The log in the seed's post ("Failed to close the ServletOutputStream connection cleanly, Broken pipe"),
# verbatim: Tomcat on JDK 8, in 2018, with a connector named https-jsse-nio-443. Its second record's
# header is one 186-character line, longer than the code's 120 columns; it stays whole, as Tomcat wrote
# it (ruff reads a noqa for a string's lines at its closing quotes).
SEED_LOG = """\
java.io.IOException: Connection timed out
  at sun.nio.ch.FileDispatcherImpl.read0(Native Method)
  at sun.nio.ch.SocketDispatcher.read(SocketDispatcher.java:39)
  at sun.nio.ch.IOUtil.readIntoNativeBuffer(IOUtil.java:223)
  at sun.nio.ch.IOUtil.read(IOUtil.java:197)
  at sun.nio.ch.SocketChannelImpl.read(SocketChannelImpl.java:380)
  at org.apache.tomcat.util.net.SecureNioChannel.read(SecureNioChannel.java:581)
  at org.apache.tomcat.util.net.NioEndpoint$NioSocketWrapper.fillReadBuffer(NioEndpoint.java:1248)
  at org.apache.tomcat.util.net.NioEndpoint$NioSocketWrapper.fillReadBuffer(NioEndpoint.java:1221)
  at org.apache.tomcat.util.net.NioEndpoint$NioSocketWrapper.read(NioEndpoint.java:1194)
  at org.apache.tomcat.websocket.server.WsFrameServer.onDataAvailable(WsFrameServer.java:72)
  at org.apache.tomcat.websocket.server.WsFrameServer.doOnDataAvailable(WsFrameServer.java:171)
  at org.apache.tomcat.websocket.server.WsFrameServer.notifyDataAvailable(WsFrameServer.java:151)
  at org.apache.tomcat.websocket.server.WsHttpUpgradeHandler.upgradeDispatch(WsHttpUpgradeHandler.java:148)
  at org.apache.coyote.http11.upgrade.UpgradeProcessorInternal.dispatch(UpgradeProcessorInternal.java:54)
  at org.apache.coyote.AbstractProcessorLight.process(AbstractProcessorLight.java:53)
  at org.apache.coyote.AbstractProtocol$ConnectionHandler.process(AbstractProtocol.java:790)
  at org.apache.tomcat.util.net.NioEndpoint$SocketProcessor.doRun(NioEndpoint.java:1459)
  at org.apache.tomcat.util.net.SocketProcessorBase.run(SocketProcessorBase.java:49)
  at java.util.concurrent.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:1149)
  at java.util.concurrent.ThreadPoolExecutor$Worker.run(ThreadPoolExecutor.java:624)
  at org.apache.tomcat.util.threads.TaskThread$WrappingRunnable.run(TaskThread.java:61)
  at java.lang.Thread.run(Thread.java:748)
05-Nov-2018 09:17:07.881 INFO [https-jsse-nio-443-exec-6] \
org.apache.tomcat.websocket.server.WsRemoteEndpointImplServer.doClose \
Failed to close the ServletOutputStream connection cleanly
 java.io.IOException: Broken pipe
  at sun.nio.ch.FileDispatcherImpl.write0(Native Method)
  at sun.nio.ch.SocketDispatcher.write(SocketDispatcher.java:47)
  at sun.nio.ch.IOUtil.writeFromNativeBuffer(IOUtil.java:93)
  at sun.nio.ch.IOUtil.write(IOUtil.java:65)
  at sun.nio.ch.SocketChannelImpl.write(SocketChannelImpl.java:471)
  at org.apache.tomcat.util.net.SecureNioChannel.flush(SecureNioChannel.java:144)
  at org.apache.tomcat.util.net.SecureNioChannel.close(SecureNioChannel.java:526)
  at org.apache.tomcat.util.net.NioEndpoint$NioSocketWrapper.close(NioEndpoint.java:1209)
  at org.apache.tomcat.websocket.server.WsRemoteEndpointImplServer.doClose(WsRemoteEndpointImplServer.java:167)
  at org.apache.tomcat.websocket.WsRemoteEndpointImplBase.close(WsRemoteEndpointImplBase.java:710)
  at org.apache.tomcat.websocket.WsSession.onClose(WsSession.java:518)
  at org.apache.tomcat.websocket.server.WsHttpUpgradeHandler.close(WsHttpUpgradeHandler.java:240)
  at org.apache.tomcat.websocket.server.WsHttpUpgradeHandler.upgradeDispatch(WsHttpUpgradeHandler.java:162)
  at org.apache.coyote.http11.upgrade.UpgradeProcessorInternal.dispatch(UpgradeProcessorInternal.java:54)
  at org.apache.coyote.AbstractProcessorLight.process(AbstractProcessorLight.java:53)
  at org.apache.coyote.AbstractProtocol$ConnectionHandler.process(AbstractProtocol.java:790)
  at org.apache.tomcat.util.net.NioEndpoint$SocketProcessor.doRun(NioEndpoint.java:1459)
  at org.apache.tomcat.util.net.SocketProcessorBase.run(SocketProcessorBase.java:49)
  at java.util.concurrent.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:1149)
  at java.util.concurrent.ThreadPoolExecutor$Worker.run(ThreadPoolExecutor.java:624)
  at org.apache.tomcat.util.threads.TaskThread$WrappingRunnable.run(TaskThread.java:61)
  at java.lang.Thread.run(Thread.java:748)
"""  # noqa: E501

# The second record's header line: the one line of the seed's log that Tomcat 10.1 no longer writes.
SEED_CLOSE_HEADER = next(line for line in SEED_LOG.splitlines() if line.startswith("05-Nov-2018"))
_read_part, _close_part = SEED_LOG.split(SEED_CLOSE_HEADER)


def _seed_trace(text: str) -> Trace:
    trace = parse_trace(text)
    if trace is None:  # only if SEED_LOG above lost an exception line
        raise ValueError(f"no exception line in the seed's log: {text[:80]!r}")
    return trace


SEED_READ = _seed_trace(_read_part)
SEED_CLOSE = _seed_trace(_close_part)

# Tomcat's own frames: the ones the seed's trace and this run's must share, in order.
TOMCAT_PACKAGE = "org.apache."


class Mark(StrEnum):
    """How a row of the comparison differs. A mark is also a plain string."""

    SAME = "same"  # the same class and method; only the line number moved
    CHANGED = "changed"  # the same method name in another class: the code moved
    NEW = "new"  # only in this run's trace
    GONE = "gone"  # only in the seed's trace


def _label(frame: Frame | None, full: bool) -> str:
    if frame is None:
        return ""
    return frame.where + (f":{frame.line}" if frame.line is not None else "") if full else frame.short


@dataclass(frozen=True)
class FrameRow:
    """One row: a frame of the seed's trace, of this run's, or of both."""

    mark: Mark
    seed: Frame | None
    run: Frame | None

    def row(self) -> dict[str, str]:
        """The two frames, short; in full when only their packages differ (e.g. ThreadPoolExecutor)."""
        full = self.seed is not None and self.run is not None and self.seed.short_class == self.run.short_class \
            and self.seed.class_name != self.run.class_name
        return {
            "the seed (2018, JDK 8)": _label(self.seed, full), "": self.mark.value, "this run": _label(self.run, full),
        }


@dataclass(frozen=True)
class Alignment:
    """The seed's trace and this run's, side by side.

    Attributes:
        rows: Every frame of both traces, in order, innermost first.
        seed_exception, run_exception: The two exception lines.
        in_order: True if every ``org.apache.*`` frame of the seed appears in this run's trace,
            in the seed's order (other frames may sit between them).
        found: How many of the seed's ``org.apache.*`` frames were found that way.
        missing: The ones that were not.
    """

    rows: list[FrameRow]
    seed_exception: str
    run_exception: str
    in_order: bool
    found: int
    missing: list[Frame]

    def count(self, mark: Mark | str) -> int:
        return sum(1 for row in self.rows if row.mark == mark)

    def table(self) -> Table:
        """The rows as a table, for a notebook."""
        return table([row.row() for row in self.rows])

    def summary(self) -> str:
        """One line: the counts of each mark, and the in-order verdict."""
        counts = ", ".join(f"{self.count(mark)} {mark.value}" for mark in Mark)
        seed_total = self.found + len(self.missing)
        verdict = "all in the seed's order" if self.in_order else f"missing {', '.join(f.short for f in self.missing)}"
        return f"{counts}; Tomcat frames of the seed found: {self.found} of {seed_total}, {verdict}"


def _likeness(a: Frame, b: Frame) -> float:
    """How alike two frames' class names are, 0 to 1 (nested classes by their own name)."""
    def own(frame: Frame) -> str:
        return frame.class_name.rpartition(".")[2].rpartition("$")[2]

    return SequenceMatcher(None, own(a), own(b), autojunk=False).ratio()


def _pair_by_method(seed: list[Frame], run: list[Frame]) -> list[FrameRow]:
    """Rows for a stretch where the classes differ.

    A seed frame pairs, as CHANGED, with a later run frame of the same method
    name, the one whose class name is most alike; unpaired frames are GONE or NEW.
    """
    rows: list[FrameRow] = []
    start = 0  # run frames before this one are placed: pairs never cross
    for frame in seed:
        candidates = [j for j in range(start, len(run)) if run[j].method == frame.method]
        if not candidates:
            rows.append(FrameRow(Mark.GONE, frame, None))
            continue
        best = max(candidates, key=lambda j: _likeness(frame, run[j]))  # the first of equals
        rows += [FrameRow(Mark.NEW, None, other) for other in run[start:best]]
        rows.append(FrameRow(Mark.CHANGED, frame, run[best]))
        start = best + 1
    return rows + [FrameRow(Mark.NEW, None, other) for other in run[start:]]


def _in_order(seed: list[Frame], run: list[Frame]) -> tuple[int, list[Frame]]:
    """How many of ``seed`` appear in ``run`` as a subsequence (same class and method), and which don't."""
    found, missing, position = 0, [], 0
    wheres = [f.where for f in run]
    for frame in seed:
        try:
            position = wheres.index(frame.where, position) + 1
            found += 1
        except ValueError:
            missing.append(frame)
    return found, missing


def align(seed: Trace, run: Trace, *, package: str = TOMCAT_PACKAGE) -> Alignment:
    """Line up ``run`` (a trace from this run) with ``seed`` (one of the seed's), frame by frame.

    Frames are compared by class and method, never by line number: the line
    numbers differ between any two versions. The longest common stretches are
    SAME; in between, frames with the same method name are CHANGED, the rest
    NEW or GONE. ``package`` picks the frames the in-order verdict is about.
    """
    rows: list[FrameRow] = []
    matcher = SequenceMatcher(None, [f.where for f in seed.frames], [f.where for f in run.frames], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":  # two stretches of the same length, frame for frame
            rows += [FrameRow(Mark.SAME, a, b) for a, b in zip(seed.frames[i1:i2], run.frames[j1:j2], strict=True)]
        else:
            rows += _pair_by_method(seed.frames[i1:i2], run.frames[j1:j2])
    ours = [f for f in seed.frames if f.where.startswith(package)]
    found, missing = _in_order(ours, run.frames)
    return Alignment(rows, seed.exception, run.exception, not missing, found, missing)
