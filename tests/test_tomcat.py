"""A real Tomcat 10 runs the seed's endpoints: the seed's trace, the fix, and the four deaths.

Needs Debian's ``tomcat10-common`` and ``default-jdk-headless``; the vanished client also
needs iptables and network namespaces (root, or unprivileged user namespaces), and Linux.
On a laptop without them these tests skip with one line saying what is missing; in CI
(``CI=true``) they run, and a missing piece is a failure.

The expensive runs happen once per module: the endpoints are compiled once, and each
vanished-client scenario (Broken, Fixed) runs once in its namespaces, then several tests
read its log.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

from wslab import Lab, LabError
from wslab.faults import netns
from wslab.faults.netns import TIMED_OUT, host_network, run_vanish, vanish_skip_reason
from wslab.runtime import programs
from wslab.runtime.programs import Program
from wslab.runtime.timing import scaled, wait_until
from wslab.runtime.tomcat import INSTALL, compile_java, launch_tomcat, tomcat_skip_reason, tomcat_version
from wslab.servers.java import BROKEN, ENDPOINTS, map_sizes
from wslab.studies.seedtrace import SEED_CLOSE, SEED_READ, align
from wslab.studies.tomcatrun import map_over_time

TOMCAT_SKIP = tomcat_skip_reason()
NETNS_SKIP = vanish_skip_reason()
needs_tomcat = pytest.mark.skipif(TOMCAT_SKIP is not None, reason=TOMCAT_SKIP or "")
needs_netns = pytest.mark.skipif(NETNS_SKIP is not None, reason=NETNS_SKIP or "")

ILLEGAL_STATE = "java.lang.IllegalStateException"
# Three clients vanish at once: "several vanished clients", and three chances for the race below.
CLIENTS = 3
WATCH = 2.0  # seconds of log kept after the last session failed


ROOT = Path(__file__).resolve().parent.parent


def test_the_java_and_tomcat_files_ship_with_wslab():
    # A regular (not editable) install copies only the files pyproject.toml's package-data names.
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    files = [p for p in (ROOT / "wslab").rglob("*")
             if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert {"Broken.java", "Fixed.java", "server.xml", "logging.properties"} <= {p.name for p in files}
    for path in files:
        owner = next(d for d in path.parents if (d / "__init__.py").exists())
        package = ".".join(owner.relative_to(ROOT).parts)
        inside = path.relative_to(owner).as_posix()
        assert any(fnmatch.fnmatch(inside, glob) for glob in package_data.get(package, [])), f"{package}: {inside}"


# -- where it can run -------------------------------------------------------------------------


def test_ci_never_skips_the_tomcat_tests(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert tomcat_skip_reason() is None and vanish_skip_reason() is None


def test_a_missing_jdk_or_tomcat_says_how_to_install_both(monkeypatch):
    monkeypatch.setattr(Program, "find", lambda self: None)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    reason = tomcat_skip_reason()
    assert reason.startswith("javac is not installed: ") and INSTALL in reason
    assert "\n" not in reason and vanish_skip_reason() == reason

    async def launch():
        async with Lab() as lab:
            await launch_tomcat(lab, ENDPOINTS)

    with pytest.raises(LabError, match="tomcat10-common default-jdk-headless iptables"):
        asyncio.run(launch())


@pytest.mark.parametrize("platform, system", [("darwin", "macOS"), ("win32", "Windows")])
def test_macos_and_windows_are_told_it_is_not_supported(monkeypatch, platform, system):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys, "platform", platform)
    assert tomcat_skip_reason().endswith(f"not supported on {system}")
    assert vanish_skip_reason() == tomcat_skip_reason()


def test_no_namespaces_says_so_in_one_line(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(Program, "find", lambda self: "/usr/bin/unshare")
    # What unshare says where namespaces are forbidden; programs.py asks it once (functools.cache).
    refused = subprocess.CompletedProcess([], 1, "", "unshare: unshare failed: Operation not permitted\n")
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: refused)
    programs._namespaces_work.cache_clear()
    try:
        reason = netns.UNSHARE.skip_reason()
    finally:
        programs._namespaces_work.cache_clear()  # the tests after this one ask the real unshare
    assert "cannot create a network namespace here (unshare: unshare failed: Operation not permitted)" in reason
    assert "run as root, or allow unprivileged user namespaces" in reason


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the driver is Linux only")
@pytest.mark.parametrize("inode", ["ours", "another"])
def test_the_driver_refuses_to_touch_the_hosts_network(inode):
    # Run on the host by mistake, it must change nothing: neither with the host's namespace
    # named (it is in it), nor with another one (then it is not PID 1 of its own PID namespace).
    host_netns = os.stat("/proc/self/ns/net").st_ino if inode == "ours" else 1
    before = host_network()
    done = subprocess.run(
        [sys.executable, "-m", "wslab.faults.netns_driver", "run", "--host-netns", str(host_netns),
         "--source", str(BROKEN), "--retries2", "1"],
        capture_output=True, text=True, timeout=scaled(30),
    )
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"] == (
        "netns_driver runs only inside the namespaces wslab.faults.netns.run_vanish makes")
    assert host_network() == before


# -- shared expensive runs --------------------------------------------------------------------


@pytest.fixture(scope="module")
def classes(tmp_path_factory) -> Path:
    """Broken and Fixed, compiled once for the whole module."""
    if TOMCAT_SKIP is not None:
        pytest.skip(TOMCAT_SKIP)
    directory = tmp_path_factory.mktemp("classes")
    directory.chmod(0o755)  # readable from a user namespace too
    asyncio.run(compile_java(ENDPOINTS, directory))
    return directory


def _vanish(classes: Path, path: str, until: str, **options) -> netns.VanishRun:
    async def run():
        async with Lab() as lab:
            return await run_vanish(lab, classes=classes, path=path, until=until, clients=CLIENTS,
                                    watch=WATCH, **options)

    if NETNS_SKIP is not None:
        pytest.skip(NETNS_SKIP)
    return asyncio.run(run())


@pytest.fixture(scope="module")
def broken_run(classes) -> netns.VanishRun:
    # fine=True: NioEndpoint at FINE, for the close path's Broken pipe
    return _vanish(classes, "/broken", TIMED_OUT, fine=True)


@pytest.fixture(scope="module")
def fixed_run(classes) -> netns.VanishRun:
    return _vanish(classes, "/fixed", "removed by")


def _after_last_failure(run: netns.VanishRun) -> tuple[float, float]:
    """The watch window: from 0.5 s after the last session failed to WATCH s after it."""
    last = run.until_at[-1]
    return last + 0.5, last + WATCH


# -- the vanished client, in a namespace ------------------------------------------------------


@needs_netns
def test_a_vanished_client_makes_tomcat_log_the_seeds_read_timeout(broken_run):
    # The kernel gives up on the silent client after its retransmissions (tcp_retries2=1: about
    # 1.4 s) and hands ETIMEDOUT to the next system call on that socket. Usually that is the
    # poller's read: the seed's trace. If the broadcast's write comes first it takes the error
    # instead (a real race, a few percent of sessions here): then that session logs the write's
    # trace. With three clients, at least one read must be there.
    failures = broken_run.log.find(TIMED_OUT, since=broken_run.fault_at)
    reads = [r for r in failures if r.trace.contains("WsFrameServer.onDataAvailable")]
    writes = [r for r in failures if r.trace.contains("WsRemoteEndpointBasic.sendText")
              or r.trace.contains("sendMessageBlockInternal")]
    seen = [(r.source, r.trace.exception, round(r.at - broken_run.fault_at, 3)) for r in failures]
    assert reads and len(reads) + len(writes) == len(failures), seen
    first = reads[0]
    assert first.source == "org.apache.tomcat.websocket.pojo.PojoEndpointBase.onError"
    assert first.trace.exception == TIMED_OUT
    alignment = align(SEED_READ, first.trace)
    assert alignment.in_order and alignment.found == 14, alignment.summary()
    # Not instant (that would be a FIN or an RST), and not minutes (the default tcp_retries2).
    assert 1.0 < first.at - broken_run.fault_at < scaled(3.0), seen
    # The kernel hands ETIMEDOUT to one system call per socket, then clears it: one such error per
    # session, which Tomcat logs "without error handling" (Broken has no @OnError). Later writes to
    # the dead socket get EPIPE: sometimes a broadcast logs the seed's other error, Broken pipe.
    onerror = [r for r in failures if r.source == "org.apache.tomcat.websocket.pojo.PojoEndpointBase.onError"]
    assert len(onerror) == CLIENTS, seen


@needs_netns
def test_with_nio_endpoint_at_fine_the_close_path_broken_pipe_appears(broken_run):
    record = broken_run.log.first("java.io.IOException: Broken pipe", where="WsSession.onClose",
                                  since=broken_run.fault_at)
    assert record is not None
    assert record.source == "org.apache.tomcat.util.net.NioEndpoint$NioSocketWrapper.doClose"
    wheres = [f.where for f in record.trace.frames]
    assert wheres[0] == "sun.nio.ch.FileDispatcherImpl.write0"
    flush = wheres.index("org.apache.tomcat.util.net.SecureNioChannel.flush")
    assert wheres[flush + 1] == "org.apache.tomcat.util.net.SecureNioChannel.close"
    # Every Tomcat frame of the seed's second trace but one, in order; the missing one is
    # NioSocketWrapper.close, which 10.1 split into SocketWrapperBase.close and doClose.
    alignment = align(SEED_CLOSE, record.trace)
    assert alignment.found == 13 and [f.method for f in alignment.missing] == ["close"]
    # ... and the seed's INFO line is gone: 10.1 catches the exception before that log call.
    assert "Failed to close the ServletOutputStream" not in broken_run.log.text


@needs_netns
def test_the_broken_endpoint_floods_its_log_with_every_leaked_session(broken_run):
    start, end = _after_last_failure(broken_run)
    per_session = broken_run.log.count(ILLEGAL_STATE, start, end) / (end - start) / CLIENTS
    assert per_session > 5  # one failed broadcast every 100 ms: about 10 records a second each
    # never removed (counted from the events: sessions opened side by side may log their sizes out of order)
    assert map_over_time(broken_run.log, "Broken")[-1][1] == CLIENTS


@needs_netns
def test_the_fixed_endpoint_removes_the_sessions_then_the_log_is_quiet(fixed_run, broken_run):
    removals = fixed_run.log.find("removed by", since=fixed_run.fault_at)
    assert len(removals) == CLIENTS
    assert all("Connection timed out" in r.message for r in removals), [r.message for r in removals]
    assert 1.0 < fixed_run.fault_to_until_s < scaled(3.0)
    sizes = map_sizes(fixed_run.log, "Fixed")
    # Three removals in the same millisecond, on three threads, may log their sizes in any order.
    assert max(size for _, size in sizes) == CLIENTS
    assert min(size for at, size in sizes if at >= fixed_run.fault_at) == 0
    start, end = _after_last_failure(fixed_run)
    assert fixed_run.log.count(ILLEGAL_STATE, start, end) == 0
    assert fixed_run.log.lines_between(start, end) == 0
    # before the fix, the same window was full
    assert broken_run.log.count(ILLEGAL_STATE, *_after_last_failure(broken_run)) > 0


@needs_netns
@pytest.mark.parametrize("scenario", ["broken_run", "fixed_run"])
def test_the_hosts_network_settings_are_untouched(request, scenario):
    run = request.getfixturevalue(scenario)
    assert run.tcp_retries2 == 1 and run.interfaces == ["lo"]
    assert run.client_paths == [{"broken_run": "/broken", "fixed_run": "/fixed"}[scenario]] * CLIENTS
    assert len(run.rules) == 2 * CLIENTS and all(" -j DROP" in rule for rule in run.rules)
    assert run.host_unchanged
    assert run.host_after.tcp_retries2 == host_network().tcp_retries2 != 1
    if run.host_after.iptables is not None:  # root: the host's rules are readable, and ours are not there
        assert not any(str(port) in run.host_after.iptables for port in run.client_ports)


# -- the fault proxy between a Python client and Tomcat ---------------------------------------
# Notebook 01's deaths through the fault proxy (the traces of a FIN, an RST and a stall) are tested
# in test_tomcatrun.py, on the Tomcat that also measures the idle timeouts: one start for both.


# -- the lab's handling of the process --------------------------------------------------------


def _command(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _processes_mentioning(text: str) -> list[int]:
    return [
        int(entry.name) for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and text in _command(int(entry.name))
    ]


@needs_tomcat
async def test_rerunning_replaces_tomcat_and_lab_close_leaves_no_java_process(classes):
    async with Lab() as lab:
        first = await launch_tomcat(lab, classes=classes)
        second = await launch_tomcat(lab, classes=classes)  # the same name: the first one is closed
        assert not first.running and not first.base.exists()
        assert second.running and _processes_mentioning(str(second.base)) == [second.pid]
        assert lab["tomcat"] is second
    assert not second.running and not second.base.exists()
    assert _processes_mentioning(str(second.base)) == []


@needs_netns
async def test_closing_the_lab_during_a_vanish_run_leaves_nothing_behind(classes):
    before = host_network()
    # The run's own temporary directory, wslab-netns-*, under this suite's temp dir: another suite
    # running at the same time (.ci/run gives each its own TMPDIR) has its own runs.
    prefix = os.path.join(tempfile.gettempdir(), "wslab-netns-")
    async with Lab() as lab:
        lab.spawn(run_vanish(lab, classes=classes, watch=60), name="vanish")
        # Tomcat's CATALINA_BASE is under that directory.
        await wait_until(lambda: any("java" in _command(pid) for pid in _processes_mentioning(prefix)), 30,
                         "Tomcat starting in the namespace", poll=0.1)
    # lab.close() cancelled the run: unshare and the driver got SIGKILL, the kernel killed the rest.
    await wait_until(lambda: not _processes_mentioning(prefix), 5, "every process of the run exiting")
    assert not list(Path(tempfile.gettempdir()).glob("wslab-netns-*"))
    assert host_network() == before


@needs_tomcat
async def test_a_java_error_is_one_line_naming_the_file_and_line(tmp_path):
    source = tmp_path / "Broken.java"
    source.write_text(BROKEN.read_text().replace("SESSIONS.put(session.getId(), session);", "SESSIONS.put("))
    with pytest.raises(LabError, match=r"^javac failed: Broken\.java:\d+: error: "):
        await compile_java([source], tmp_path / "classes")


@needs_tomcat
def test_tomcat_version_names_this_tomcat_and_its_jvm():
    # Notebook 09 prints it next to what it says about Tomcat 10.1 and JDK 17.
    server, jvm = tomcat_version().splitlines()
    assert server.startswith("Server version: Apache Tomcat/10.")
    assert jvm.startswith("JVM Version:") and jvm.split(":")[1].strip()[:1].isdigit()
