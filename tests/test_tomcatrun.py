"""Notebook 09's experiments on a real Tomcat, and the analyses of its log.

The analyses are pure: the first tests feed them small logs written here in Tomcat's
OneLineFormatter. The last runs Tomcat for real (the deaths through the fault proxy, the idle
timeouts), and skips with one line where Tomcat is missing, as notebook 09 does. (The clients
run_vanish adds for the exercise's check are tested with the check, in test_checks_javaremoval.)
"""

from __future__ import annotations

import pytest

from wslab import Lab
from wslab.runtime.javalog import TomcatLog
from wslab.runtime.timing import scaled
from wslab.runtime.tomcat import compile_endpoints, launch_tomcat, tomcat_skip_reason
from wslab.servers.java import ENDPOINTS, map_changes
from wslab.studies.seedtrace import SEED_READ, align
from wslab.studies.tomcatrun import (
    after_fault,
    endpoint_records,
    failures_per_session,
    idle_run,
    log_rate,
    map_over_time,
    tomcat_deaths,
)

TOMCAT_SKIP = tomcat_skip_reason()
needs_tomcat = pytest.mark.skipif(TOMCAT_SKIP is not None, reason=TOMCAT_SKIP or "")


def _header(seconds: float, level: str, thread: str, source: str, message: str) -> str:
    millis = round(seconds * 1000)
    return f"25-Nov-2026 18:36:{40 + millis // 1000:02d}.{millis % 1000:03d} {level} [{thread}] {source} {message}"


def _failed(seconds: float, session: str) -> list[str]:
    """Broken's record of one failed broadcast: a header and a short trace (3 lines)."""
    return [_header(seconds, "SEVERE", "broken-broadcast", "lab.Broken.broadcast",
                    f"broadcast to session [{session}] failed"),
            f"\tjava.lang.IllegalStateException: The WebSocket session [{session}] has been closed",
            "\t\tat org.apache.tomcat.websocket.WsSession.checkState(WsSession.java:929)"]


LOG = TomcatLog("\n".join([
    _header(0.0, "INFO", "exec-1", "lab.Broken.onOpen", "session [0] opened, 1 in the map"),
    _header(0.1, "INFO", "exec-2", "lab.Fixed.onOpen", "session [1] opened, 1 in the map"),
    _header(0.2, "INFO", "exec-3", "lab.Fixed.onOpen", "session [2] opened, 2 in the map"),
    _header(1.5, "SEVERE", "exec-4", "org.apache.tomcat.websocket.pojo.PojoEndpointBase.onError",
            "No error handling configured for [lab.Broken] and the following error occurred"),
    "\tjava.io.IOException: Connection timed out",
    "\t\tat java.base/sun.nio.ch.SocketDispatcher.read0(Native Method)",
    # two removals on two threads: the second logs its size first
    _header(1.5, "INFO", "exec-5", "lab.Fixed.remove", "session [2] removed by onError java.io.IOException: "
                                                        "Connection timed out, 0 in the map"),
    _header(1.501, "INFO", "exec-6", "lab.Fixed.remove", "session [1] removed by onError java.io.IOException: "
                                                          "Connection timed out, 1 in the map"),
    *_failed(1.6, "0"), *_failed(1.7, "0"), *_failed(1.8, "0"), *_failed(2.1, "0"),
]))
T0 = LOG.records[0].at  # 25-Nov-2026 18:36:40.000 UTC, the first header's time


def test_an_endpoints_records_include_tomcats_own_for_its_sessions():
    broken = endpoint_records(LOG, "Broken")
    assert [r.source.rpartition(".")[2] for r in broken] == ["onOpen", "onError"] + ["broadcast"] * 4
    assert [r.source.rpartition(".")[2] for r in endpoint_records(LOG, "Fixed")] == ["onOpen"] * 2 + ["remove"] * 2


def test_log_rate_counts_every_line_of_a_record_per_window():
    rate = log_rate(LOG, "Broken", T0 + 1.5, T0 + 2.5, step=0.5)
    # [1.5, 2.0): onError (3 lines) and three failures (3 lines each); [2.0, 2.5): one failure
    assert rate == [(0.0, (3 + 9) / 0.5), (0.5, 3 / 0.5)]
    assert log_rate(LOG, "Fixed", T0 + 1.6, T0 + 2.6, step=0.5) == [(0.0, 0.0), (0.5, 0.0)]


def test_failures_are_counted_per_session_and_removals_timed_from_the_fault():
    assert failures_per_session(LOG, T0 + 1.65, T0 + 3.0) == {"0": 3}
    assert after_fault(LOG, "removed by", T0 + 1.0, endpoint="Fixed") == pytest.approx([0.5, 0.501], abs=1e-3)
    assert after_fault(LOG, "Connection timed out", T0 + 1.0) == pytest.approx([0.5, 0.5, 0.501], abs=1e-3)


def test_the_map_is_counted_from_the_events_not_from_the_sizes_the_lines_print():
    # The lines print 0 then 1 (two threads); counting opens and removals gives 1 then 0.
    assert [size for _, size in map_over_time(LOG, "Fixed")] == [1, 2, 1, 0]
    assert [change.size for change in map_changes(LOG, "Fixed")] == [1, 2, 0, 1]
    assert [size for _, size in map_over_time(LOG, "Broken")] == [1]


# -- for real --------------------------------------------------------------------------------------


@needs_tomcat
async def test_the_deaths_and_the_idle_timeouts_as_tomcat_sees_them():
    async with Lab() as lab:
        classes = await compile_endpoints(lab, ENDPOINTS)
        tomcat = await launch_tomcat(lab, classes=classes.path,
                                     properties={"org.apache.tomcat.websocket.DEFAULT_PROCESS_PERIOD": 1})
        deaths = {death.name.split()[0]: death for death in await tomcat_deaths(lab, tomcat)}
        idle = await idle_run(lab, tomcat, ["/fixed?readIdleMs=1000", "/fixed?maxIdleMs=1000"],
                              "/fixed?readIdleMs=1000", expect=1, name="idle")
    seen = {name: (d.exception, d.removal, d.removed_after) for name, d in deaths.items()}
    assert deaths["clean"].exception is None and "code [1000]" in deaths["clean"].removal, seen
    # a FIN, or the RST the proxy's kernel sends when a broadcast beats Tomcat's read to it
    assert deaths["killed"].exception in ("java.io.EOFException", "java.net.SocketException: Connection reset"), seen
    if deaths["killed"].exception == "java.io.EOFException":  # the read returned end-of-stream
        assert deaths["killed"].thrown_at == "NioEndpoint$NioSocketWrapper.fillReadBuffer", seen
    # RST: the seed's very read fails, at once, with another error; or a broadcast's write meets the
    # RST first, as "Connection reset by peer" (a real race): then the record is the broadcast's.
    reset = deaths["reset"].record
    assert reset is not None and reset.trace is not None and "Connection reset" in deaths["reset"].exception, seen
    if reset.trace.contains("WsFrameServer.onDataAvailable"):
        assert reset.trace.exception == "java.net.SocketException: Connection reset"
        assert align(SEED_READ, reset.trace).in_order
    else:
        assert reset.trace.contains("Connection reset by peer") and reset.trace.contains("Broken.broadcast")
    assert all(d.logged_after is not None and d.logged_after < scaled(2.0)
               for name, d in deaths.items() if name in ("killed", "reset")), seen
    # Stall: sends fill the buffers, then block; Fixed's BLOCKING_SEND_TIMEOUT (2 s) ends the wait.
    stall = deaths["vanished"].record
    assert stall is not None and stall.source == "lab.Fixed.broadcast" and stall.level == "WARNING", seen
    assert deaths["vanished"].exception == "java.io.IOException: java.net.SocketTimeoutException: Write timeout", seen
    assert all(d.removed_after < scaled(2.0) for name, d in deaths.items() if name != "vanished"), seen
    assert 2.0 < deaths["vanished"].removed_after < scaled(15.0), seen  # never before the 2 s send deadline
    # The read idle timeout (1 s, checked every second) closes the stalled session; the max idle
    # timeout never does while the broadcast writes to it; the pinging healthy client stays.
    (read_idle,) = idle.removed_after["/fixed?readIdleMs=1000"]
    assert 1.0 - 0.5 - 0.1 < read_idle < 2.0 + scaled(1.5), idle  # from the last ping read: up to 0.5 s before
    assert idle.removed_after["/fixed?maxIdleMs=1000"] == [] and idle.watched > read_idle + 0.9, idle
    assert idle.healthy_received > 5 * idle.watched, idle  # a broadcast every 100 ms
