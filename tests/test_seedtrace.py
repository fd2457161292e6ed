"""Reading Tomcat's log and comparing its traces with the seed's: pure functions, no Tomcat.

The logs under tests/data/tomcat/ were captured from Debian's Tomcat 10.1.60 on JDK 17 by
the lab's runs (a vanished client in a network namespace, and the fault proxy's FIN, RST and
stall), each trimmed to the records that matter.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from wslab.runtime.javalog import Frame, TomcatLog, parse_frame, parse_log, parse_trace
from wslab.servers.java import map_sizes
from wslab.studies.seedtrace import SEED_CLOSE, SEED_CLOSE_HEADER, SEED_LOG, SEED_READ, Mark, align

DATA = Path(__file__).resolve().parent / "data" / "tomcat"


def _log(name: str) -> TomcatLog:
    return TomcatLog((DATA / f"{name}.log").read_text())


def _trace(name: str):
    return _log(name).records[0].trace


# -- reading frames, traces and records ---------------------------------------------------------


def test_a_frame_is_read_with_its_module_class_method_and_line():
    frame = parse_frame("\t\tat java.base/sun.nio.ch.SocketDispatcher.read(SocketDispatcher.java:47)")
    assert frame == Frame("sun.nio.ch.SocketDispatcher.read", "SocketDispatcher.java:47", "java.base")
    assert (frame.class_name, frame.method, frame.line) == ("sun.nio.ch.SocketDispatcher", "read", 47)
    assert frame.short == "SocketDispatcher.read:47"
    native = parse_frame("  at sun.nio.ch.FileDispatcherImpl.read0(Native Method)")  # JDK 8: no module
    assert native.module is None and native.line is None and native.short == "FileDispatcherImpl.read0"
    nested = parse_frame("at org.apache.tomcat.util.net.NioEndpoint$NioSocketWrapper.read(NioEndpoint.java:1619)")
    assert nested.short_class == "NioEndpoint$NioSocketWrapper"
    loaded = parse_frame("at app//lab.Broken.broadcast(Broken.java:49)")  # a class loader's name, no module
    assert (loaded.where, loaded.module) == ("lab.Broken.broadcast", None)
    assert parse_frame("java.io.IOException: Connection timed out") is None


def test_a_log_record_has_tomcats_time_in_utc_its_thread_source_and_trace():
    (record,) = _log("read-timeout-connection-timed-out").records
    expected = datetime.datetime(2026, 11, 25, 20, 19, 55, 609000, tzinfo=datetime.timezone.utc).timestamp()
    assert record.at == pytest.approx(expected, abs=1e-6)
    assert record.level == "SEVERE"
    assert record.thread == "https-jsse-nio-127.0.0.1-37175-exec-1"
    assert record.source == "org.apache.tomcat.websocket.pojo.PojoEndpointBase.onError"
    assert record.message.startswith("No error handling configured for [lab.Broken]")
    trace = record.trace
    assert trace.exception == "java.io.IOException: Connection timed out"
    assert len(trace.frames) == 23 and len(record.lines) == 25
    assert trace.frames[0] == Frame("sun.nio.ch.SocketDispatcher.read0", "Native Method", "java.base")
    assert trace.frames[-1].where == "java.lang.Thread.run"


def test_caused_by_is_the_cause_and_more_lines_are_skipped():
    first, second = _log("relay-stall-write-timeout").records
    assert first.trace.exception == "java.io.IOException: java.net.SocketTimeoutException"
    assert first.trace.cause.exception == "java.net.SocketTimeoutException"
    assert [f.method for f in first.trace.cause.frames] == ["timeout", "run"]  # "... 1 more" is not a frame
    assert second.source == "lab.Broken.broadcast"
    assert second.trace.cause.exception == "java.net.SocketTimeoutException: Write timeout"
    assert second.trace.contains("Write timeout") and not first.trace.contains("Write timeout")


def test_lines_that_are_not_records_are_kept_without_a_time():
    text = ("NOTE: Picked up JDK_JAVA_OPTIONS: -Xmx1g\n"
            + (DATA / "relay-fin-eof.log").read_text())
    records = parse_log(text)
    assert [r.at is None for r in records] == [True, False]
    assert records[0].message.startswith("NOTE: Picked up") and records[0].trace is None
    assert records[1].trace.exception == "java.io.EOFException"


def test_the_log_finds_and_counts_records_by_text_frame_and_time():
    texts = [(DATA / f"{name}.log").read_text() for name in (
        "read-timeout-connection-timed-out", "close-path-broken-pipe-FINE", "illegal-state-flood")]
    log = TomcatLog("\n".join(texts))
    assert len(log) == 3
    timed_out, broken_pipe, illegal = log.records
    assert log.first("Connection timed out") is timed_out
    assert log.first("Broken pipe", where="WsSession.onClose") is broken_pipe
    assert log.first("Broken pipe", where="WsFrameServer.onDataAvailable") is None
    assert log.find("SEVERE") == [timed_out, broken_pipe, illegal]
    assert log.find("SEVERE", since=broken_pipe.at) == [broken_pipe, illegal]
    assert log.count("SEVERE", timed_out.at, broken_pipe.at) == 1  # [start, end)
    assert log.lines_between(timed_out.at, illegal.at + 0.001) == sum(len(t.splitlines()) for t in texts)
    assert log.lines_between(timed_out.at, illegal.at) == len(texts[0].splitlines()) + len(texts[1].splitlines())


# -- the seed's traces --------------------------------------------------------------------------


def test_the_seed_log_holds_the_two_traces_of_the_post():
    assert SEED_READ.exception == "java.io.IOException: Connection timed out"
    assert SEED_CLOSE.exception == "java.io.IOException: Broken pipe"
    assert len(SEED_READ.frames) == 22 and len(SEED_CLOSE.frames) == 22
    assert SEED_READ.frames[0].where == "sun.nio.ch.FileDispatcherImpl.read0"
    assert SEED_CLOSE.frames[0].where == "sun.nio.ch.FileDispatcherImpl.write0"
    assert "Failed to close the ServletOutputStream connection cleanly" in SEED_CLOSE_HEADER
    assert SEED_LOG.count("\n  at ") == 44


def test_the_read_timeout_matches_every_tomcat_frame_of_the_seed_in_order():
    alignment = align(SEED_READ, _trace("read-timeout-connection-timed-out"))
    assert alignment.in_order and alignment.found == 14 and alignment.missing == []
    assert alignment.seed_exception == alignment.run_exception
    # every frame of both traces is in exactly one row, in order
    assert [r.seed for r in alignment.rows if r.seed] == SEED_READ.frames
    assert [r.run for r in alignment.rows if r.run] == _trace("read-timeout-connection-timed-out").frames
    changed = [(r.seed.where, r.run.where) for r in alignment.rows if r.mark == Mark.CHANGED]
    assert changed == [
        ("sun.nio.ch.FileDispatcherImpl.read0", "sun.nio.ch.SocketDispatcher.read0"),  # JDK 8 -> JDK 17
        # Tomcat 10 runs its own copy of the JDK's thread pool:
        ("java.util.concurrent.ThreadPoolExecutor.runWorker",
         "org.apache.tomcat.util.threads.ThreadPoolExecutor.runWorker"),
        ("java.util.concurrent.ThreadPoolExecutor$Worker.run",
         "org.apache.tomcat.util.threads.ThreadPoolExecutor$Worker.run"),
    ]
    assert [r.run.short for r in alignment.rows if r.mark == Mark.NEW] == ["IOUtil.read:296"]
    assert (alignment.count(Mark.SAME), alignment.count(Mark.GONE)) == (19, 0)
    assert alignment.summary() == ("19 same, 3 changed, 1 new, 0 gone; "
                                   "Tomcat frames of the seed found: 14 of 14, all in the seed's order")


def test_the_close_path_lost_the_seeds_nio_socket_wrapper_close():
    run = _trace("close-path-broken-pipe-FINE")
    alignment = align(SEED_CLOSE, run)
    assert not alignment.in_order
    assert [f.where for f in alignment.missing] == ["org.apache.tomcat.util.net.NioEndpoint$NioSocketWrapper.close"]
    assert alignment.found == 13
    pairs = {r.seed.where: r.run.where for r in alignment.rows if r.mark == Mark.CHANGED}
    # The public close() moved to the base class; the most alike class name wins, not the first "close".
    assert pairs["org.apache.tomcat.util.net.NioEndpoint$NioSocketWrapper.close"] == \
        "org.apache.tomcat.util.net.SocketWrapperBase.close"
    new = [r.run.short for r in alignment.rows if r.mark == Mark.NEW]
    assert new == ["IOUtil.write:53", "SecureNioChannel.close:606", "NioEndpoint$NioSocketWrapper.doClose:1643",
                   "WsSession.closeConnection:677", "WsSession.sendCloseMessage:814"]


@pytest.mark.parametrize("name, missing_first", [
    ("relay-fin-eof", "org.apache.tomcat.util.net.SecureNioChannel.read"),  # EOF is raised in fillReadBuffer itself
    ("relay-rst-reset", None),  # a reset fails the very same read: all 14 Tomcat frames, in order
    ("write-path-connection-timed-out", "org.apache.tomcat.util.net.SecureNioChannel.read"),  # the broadcast's write
])
def test_the_in_order_verdict_tells_the_seeds_read_from_other_failures(name, missing_first):
    alignment = align(SEED_READ, _trace(name))
    assert alignment.in_order == (missing_first is None)
    assert (alignment.missing[0].where if alignment.missing else None) == missing_first


def test_frames_out_of_order_or_only_in_the_seed_are_caught():
    run = _trace("read-timeout-connection-timed-out")
    swapped = list(run.frames)
    i = next(k for k, f in enumerate(swapped) if f.method == "onDataAvailable")
    swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    alignment = align(SEED_READ, parse_trace([run.exception, *map(str, swapped)]))
    assert not alignment.in_order and alignment.found == 13

    without = [f for f in run.frames if f.method != "upgradeDispatch"]
    alignment = align(SEED_READ, parse_trace([run.exception, *map(str, without)]))
    gone = [r.seed.where for r in alignment.rows if r.mark == Mark.GONE]
    assert gone == ["org.apache.tomcat.websocket.server.WsHttpUpgradeHandler.upgradeDispatch"]
    assert [f.method for f in alignment.missing] == ["upgradeDispatch"]


def test_the_table_shows_packages_only_where_they_are_the_difference():
    rows = align(SEED_READ, _trace("read-timeout-connection-timed-out")).table().rows
    assert rows[0] == ["FileDispatcherImpl.read0", "changed", "SocketDispatcher.read0"]
    assert ["java.util.concurrent.ThreadPoolExecutor.runWorker:1149", "changed",
            "org.apache.tomcat.util.threads.ThreadPoolExecutor.runWorker:976"] in rows


# -- the endpoints' own log lines ---------------------------------------------------------------


def test_map_sizes_follow_the_endpoints_log_lines():
    log = _log("fixed-vanish-two-clients")
    sizes = map_sizes(log, "Fixed")
    assert [size for _, size in sizes] == [1, 2, 1, 0]
    assert [at for at, _ in sizes] == sorted(at for at, _ in sizes)
    assert map_sizes(log, "Broken") == []
