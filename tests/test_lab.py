"""The lab runtime: cleanup leaves nothing behind, bad input gives one clear line, nothing prints."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import os
import shutil
import socket
import ssl
import sys

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError
from websockets.frames import CloseCode

import wslab
from wslab import Lab, LabError, check_url
from wslab.faults.failures import FAILURE_MODES, connect_victim, run_failure
from wslab.faults.proxy import start_proxy
from wslab.runtime.errors import WaitTimeout, bind_error
from wslab.runtime.lab import running_tasks, tasks_left
from wslab.runtime.programs import ChildProcess, free_port
from wslab.runtime.timing import abort_all, close_within, scaled, wait_until


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def idle(ws):
    await ws.wait_closed()


def open_sockets() -> int:
    """How many sockets this process holds, read from /proc (Linux) or by probing fds."""
    if os.path.isdir("/proc/self/fd"):
        count = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                    count += 1
            except OSError:
                pass
        return count
    count = 0
    for fd in range(3, 4096):
        try:
            socket.socket(fileno=os.dup(fd)).close()
            count += 1
        except OSError:
            pass
    return count


def pending_tasks() -> int:
    return len([t for t in asyncio.all_tasks() if t is not asyncio.current_task()])


async def test_repeated_start_and_close_leaves_no_socket_and_no_task():
    async def one_cycle(lab: Lab):
        server = await lab.serve(echo, name="echo", ping_interval=0.5)
        proxy = await start_proxy(lab, server, name="proxy")
        direct = await lab.connect(server.url, name="direct")
        relayed = await lab.connect(proxy.url, name="relayed")
        await proxy.set_fault("stall", conn=proxy.connections[0])
        lab.spawn(asyncio.sleep(3600), name="sleeper")
        await direct.send("x")
        await direct.recv()
        del relayed

    # Warm up once: the first cycle imports modules and creates lazy singletons.
    async with Lab() as lab:
        await one_cycle(lab)
    await asyncio.sleep(scaled(0.1))
    sockets_before, tasks_before = open_sockets(), pending_tasks()
    for _ in range(15):
        async with Lab() as lab:
            await one_cycle(lab)
    await asyncio.sleep(scaled(0.2))
    assert open_sockets() == sockets_before
    assert pending_tasks() == tasks_before


async def test_rerunning_a_cell_replaces_the_named_server():
    lab = await wslab.new_lab()
    first = await lab.serve(echo, name="echo")
    old_port = first.port
    second = await lab.serve(echo, name="echo")  # the same cell, run again
    assert first.server is None, "the first server must be closed"
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", old_port)
    ws = await lab.connect(second.url, name="client")
    await ws.send("hi")
    assert await ws.recv() == "hi"
    lab_again = await wslab.new_lab()  # the notebook's first cell, run again
    assert lab_again is not lab and lab.names == []
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", second.port)
    await lab_again.close()


async def test_servers_bind_to_loopback_by_default():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        assert server.server.sockets[0].getsockname()[0] == "127.0.0.1"
        assert proxy._listener.sockets[0].getsockname()[0] == "127.0.0.1"


async def test_busy_port_is_one_clear_line():
    async with Lab() as lab:
        taken = await lab.serve(echo, name="first")
        with pytest.raises(LabError, match=rf"^port {taken.port} on 127.0.0.1 is already in use: .*port 0"):
            await lab.serve(echo, name="second", port=taken.port)
        with pytest.raises(LabError, match="already in use"):
            await start_proxy(lab, taken, name="proxy", port=taken.port)


# Python 3.13's asyncio reports a failed bind as OSError("could not bind on any address
# out of [...]") with errno None; 3.11 and 3.12 re-raise the bind's own OSError.


def test_a_bind_error_without_errno_says_the_address_is_not_on_this_machine():
    exc = OSError("could not bind on any address out of [('192.0.2.1', 0)]")  # 192.0.2.1: never local
    assert exc.errno is None
    message = str(bind_error(exc, "192.0.2.1", 0))
    assert message == "cannot listen on 192.0.2.1: that address is not on this machine (use 127.0.0.1)"


def test_a_bind_error_without_errno_says_the_port_is_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        exc = OSError(f"could not bind on any address out of [('127.0.0.1', {port})]")
        message = str(bind_error(exc, "127.0.0.1", port))
    assert message == f"port {port} on 127.0.0.1 is already in use: stop what runs there, or use port 0 for a free one"


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://127.0.0.1:8765", r"not a WebSocket URL: it must start with ws:// or wss:// \(an https:// page needs wss://\)"),
        ("127.0.0.1:8765", "not a WebSocket URL"),
        ("ws://127.0.0.1:notaport", "invalid port"),
        ("ws://:8765", "has no host"),
    ],
)
def test_malformed_urls_are_one_clear_line(url, message):
    with pytest.raises(LabError, match=message):
        check_url(url)


async def test_no_server_is_one_clear_line():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    async with Lab() as lab:
        refused = rf"nothing is listening at ws://127.0.0.1:{free_port} .*is the server running"
        with pytest.raises(LabError, match=refused):
            await lab.connect(f"ws://127.0.0.1:{free_port}", name="client")
        with pytest.raises(LabError, match="is not accepting connections.*start the server first"):
            await start_proxy(lab, free_port, name="proxy")


async def test_silent_server_hits_the_open_deadline():
    async def accept_and_say_nothing(reader, writer):
        await asyncio.sleep(10)

    silent = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        async with Lab() as lab:
            with pytest.raises(LabError, match="did not complete the opening handshake within 0.5 s"):
                await lab.connect(f"ws://127.0.0.1:{port}", name="client", open_timeout=0.5)
    finally:
        silent.close()


async def test_tls_verification_failure_is_one_clear_line():
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    async with Lab() as lab:
        server = await lab.serve(echo, name="tls", ssl=server_context)
        url = f"wss://127.0.0.1:{server.port}"
        # The default context trusts the system CAs, not our test CA.
        with pytest.raises(LabError, match="TLS certificate verification failed.*pass ssl= a context that trusts"):
            await lab.connect(url, name="untrusting")
        trusting = ssl.create_default_context()
        ca.configure_trust(trusting)
        ws = await lab.connect(url, name="trusting", ssl=trusting)
        await ws.send("over TLS")
        assert await ws.recv() == "over TLS"


async def test_a_handler_that_raises_is_recorded_not_printed(capfd):
    async def buggy(ws):
        await ws.recv()
        raise KeyError("session-42")

    async with Lab() as lab:
        server = await lab.serve(buggy, name="buggy")
        ws = await lab.connect(server.url, name="client")
        await ws.send("trigger")
        with pytest.raises(ConnectionClosedError) as closed:
            await asyncio.wait_for(ws.recv(), scaled(2))
        assert closed.value.rcvd.code == 1011
        [error] = lab.timeline.select(kind="handler-error")
        assert error.detail == ("test_a_handler_that_raises_is_recorded_not_printed.<locals>.buggy "
                                "raised KeyError: 'session-42'")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


async def test_background_task_errors_are_recorded_not_printed(capfd):
    async def crash():
        raise RuntimeError("boom")

    async with Lab() as lab:
        lab.spawn(crash(), name="crasher")
        await wait_until(lambda: lab.timeline.select(source="crasher"), 1, "the crash being recorded")
        [event] = lab.timeline.select(source="crasher")
        assert event.kind == "task-error" and "RuntimeError('boom')" in event.detail
    out, err = capfd.readouterr()
    assert out == "" and err == ""


async def test_lab_error_renders_as_one_line_in_ipython():
    error = LabError("port 1 on 127.0.0.1 is already in use")
    lines = error._render_traceback_()
    assert len(lines) == 1 and "already in use" in lines[0]


async def test_events_table_is_stable_without_times():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        ws = await lab.connect(server.url, name="client")
        await ws.close()
        await wait_until(lambda: lab.timeline.select(source="echo", kind="closed"), 1, "the server's closed event")
        table = lab.events(times=False, source="echo")
    assert table.header() == ["source", "conn", "event", "code", "detail"]
    assert [row[2] for row in table.rows()] == ["listening", "open", "handler-exit", "closed"]
    assert [row[3] for row in table.rows()] == ["", "", "", "1000"]
    assert "t (s)" not in str(table) and "t (s)" not in table._repr_html_()


async def test_restart_really_closes_the_listening_socket():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        ws = await lab.connect(server.url, name="client")
        await server.stop(code=CloseCode.SERVICE_RESTART, reason="service restart")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", server.port)
        with pytest.raises(ConnectionClosedError) as closed:
            await asyncio.wait_for(ws.recv(), scaled(2))
        assert closed.value.rcvd.code == 1012
        await server.start()
        again = await lab.connect(server.url, name="client")
        await again.send("back")
        assert await again.recv() == "back"


def test_wslab_imports_without_a_running_loop():
    # Importing must not start anything: a student imports it before the first await.
    code = "import wslab, asyncio; assert wslab.current_lab() is None; print('ok')"
    import subprocess

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=scaled(60))
    assert result.stdout.strip() == "ok", result.stderr


# -- a name taken again closes what it held (re-running a cell) --------------------------------


async def test_track_under_a_taken_name_closes_the_old_resource():
    closed: list[str] = []

    class Resource:
        def __init__(self, name: str) -> None:
            self.name = name

        async def close(self) -> None:
            closed.append(self.name)

    first, second = Resource("first"), Resource("second")
    async with Lab() as lab:
        assert await lab.track("thing", first) is first
        assert await lab.track("thing", first) is first  # the same object again: nothing to close
        assert closed == []
        assert await lab.track("thing", second) is second  # a re-run: no error, the old one closed
        assert closed == ["first"] and lab["thing"] is second
    assert closed == ["first", "second"]


async def test_a_killed_victim_started_again_under_its_name_kills_the_first_process():
    # connect_victim(..., "killed") tracks its client process as "victim-killed": the
    # second one must not fail ("already taken") and the first process must really die.
    async with Lab() as lab:
        server = await lab.serve(idle, name="server")
        first = await connect_victim(lab, server, "killed")
        second = await connect_victim(lab, server, "killed")
        assert first.client.returncode is not None, "the first client process still runs"
        with pytest.raises(ProcessLookupError):
            os.kill(first.client.pid, 0)  # gone, not just signalled: the lab waited for it
        assert second.client.returncode is None
        # The server saw the first client's connection end (its kernel sent a FIN).
        await wait_until(lambda: lab.timeline.select(source="server", kind="closed", conn=first.conn), 5,
                         "the server seeing the first client die")
        assert lab.timeline.select(source="server", kind="closed", conn=second.conn) == []
    assert second.client.returncode is not None  # and lab.close() stopped the second one


async def test_rerunning_notebook_01s_four_deaths_cell_works():
    async with Lab() as lab:
        server = await lab.serve(idle, name="naive")
        proxy = await start_proxy(lab, server, name="proxy")
        for run in (1, 2):  # the cell, run twice in the same lab
            outcomes = {mode: await run_failure(lab, server, mode, proxy=proxy, timeout=2.0) for mode in FAILURE_MODES}
            assert outcomes["killed"].exception == "ConnectionClosedError", (run, outcomes["killed"])
            assert outcomes["vanished"].exception == "nothing", (run, outcomes["vanished"])


# -- each server logs to its own lab, through a logger nobody else can find ------------------------


async def test_servers_register_no_logger_and_never_log_to_an_old_labs_timeline():
    def broken_process_request(connection, request):
        raise RuntimeError("a bug in process_request")  # websockets logs it, at ERROR

    def wslab_loggers() -> set[str]:
        return {name for name in logging.Logger.manager.loggerDict if name.startswith("wslab")}

    registered_before = wslab_loggers()
    labs = []
    for _ in range(20):
        # One lab per "notebook run"; each server object is freed after its lab closes, so
        # CPython hands its id() to the next one: an id-keyed logger would be inherited.
        lab = Lab()
        server = await lab.serve(idle, name="server", process_request=broken_process_request)
        with pytest.raises(LabError, match="500"):
            await lab.connect(server.url, name="client")
        await wait_until(lambda lab=lab: lab.timeline.select(kind="log"), 5, "websockets logging the bug")
        await lab.close()
        labs.append(lab)
        del server
        gc.collect()
    assert wslab_loggers() == registered_before, "a logger was registered per server"
    logged = [len(lab.timeline.select(kind="log")) for lab in labs]
    assert logged == [1] * len(labs), f"log events per lab (a later server's bug landed on an earlier lab): {logged}"


# -- which tasks did the lab leave running? (notebook 00's last check) ---------------------------------


async def test_tasks_left_reports_what_started_since_the_snapshot_wherever_its_code_lives(tmp_path):
    # `conda env create -f environment.yml` makes an env named wslab: the kernel's own code
    # then lives under .../envs/wslab/..., and a rule that looks for "wslab" in a task's file
    # path calls ipykernel's tasks leaks (issue 7). This module plays such a kernel task.
    path = tmp_path / "envs" / "wslab" / "lib" / "kernel_loop.py"
    path.parent.mkdir(parents=True)
    path.write_text("import asyncio\n\n\nasync def serve_forever():\n    await asyncio.Event().wait()\n")
    spec = importlib.util.spec_from_file_location("kernel_loop", path)
    kernel_loop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernel_loop)

    leaked: list[asyncio.Task] = []

    async def sloppy(ws):
        # A handler that starts a task behind the lab's back: nothing will ever end it.
        leaked.append(asyncio.get_running_loop().create_task(asyncio.Event().wait()))
        await ws.wait_closed()

    kernel_task = asyncio.create_task(kernel_loop.serve_forever())
    try:
        before = running_tasks()  # notebook 00's first cell
        async with Lab() as lab:
            server = await lab.serve(sloppy, name="sloppy", ping_interval=0.5)
            proxy = await start_proxy(lab, server, name="proxy")
            await lab.connect(proxy.url, name="client", ping_interval=0.5)
            lab.spawn(asyncio.sleep(3600), name="sleeper")
            await wait_until(lambda: leaked, 5, "the handler starting its task")
        await asyncio.sleep(0)  # let the tasks cancelled by close() finish
        assert "wslab" in kernel_task.get_coro().cr_code.co_filename and not kernel_task.done()
        # Everything the lab started is closed; the kernel's task ran before the snapshot.
        assert tasks_left(before) == leaked
    finally:
        for task in [kernel_task, *leaked]:
            task.cancel()
        await asyncio.gather(kernel_task, *leaked, return_exceptions=True)


async def test_tasks_left_ignores_the_chain_of_tasks_running_the_caller():
    # ipykernel runs each cell in fresh tasks, each awaiting the next: run_in_context ->
    # shell_main -> run_cell_async. The outer two started after the snapshot, yet they
    # are not left behind: they wait for the cell, and end with it.
    before = running_tasks()

    async def run_cell():
        return tasks_left(before)

    async def shell_main():
        return await asyncio.create_task(run_cell())

    async def run_in_context():
        return await asyncio.create_task(shell_main())

    assert await asyncio.create_task(run_in_context()) == []
    sibling = asyncio.create_task(asyncio.Event().wait())  # not waiting for the caller: reported
    try:
        assert await asyncio.create_task(run_in_context()) == [sibling]
    finally:
        sibling.cancel()


# -- external programs run as child processes (Python itself plays the program here) ------------------


async def _accepts(port: int) -> bool:
    _, writer = await asyncio.open_connection("127.0.0.1", port)  # OSError while it starts: polled again
    writer.close()
    return True


async def test_a_child_process_is_tracked_once_it_serves_and_gone_after_close():
    port = free_port()
    async with Lab() as lab:
        child = await ChildProcess.start(
            lab, "web", lambda d: [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            ready=lambda d: _accepts(port),
        )
        assert lab["web"] is child and child.running and child.directory.is_dir()
        again = await ChildProcess.start(  # the same cell, run again: the first one is stopped first
            lab, "web", lambda d: [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            ready=lambda d: _accepts(port),
        )
        assert not child.running and not child.directory.exists()
    assert not again.running and not again.directory.exists()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    assert [e.kind for e in lab.timeline.select(source="web")] == ["started", "exited", "started", "exited"]


async def test_a_child_process_that_exits_or_never_serves_is_one_clear_line():
    async def never(directory) -> bool:
        return False

    async with Lab() as lab:
        with pytest.raises(LabError, match=r"^broken exited with code 3: bad config line 7$"):
            await ChildProcess.start(
                lab, "broken", lambda d: [sys.executable, "-c", "print('bad config line 7'); raise SystemExit(3)"],
                ready=never,
            )
        with pytest.raises(LabError, match=r"^sleepy was not ready within [\d.]+ s: still starting$"):
            await ChildProcess.start(
                lab, "sleepy", lambda d: [sys.executable, "-c", "print('still starting', flush=True); "
                                          "import time; time.sleep(60)"],
                ready=never, timeout=0.5,
            )
        assert "broken" not in lab and "sleepy" not in lab


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
async def test_a_child_process_stops_when_the_kernel_that_started_it_is_killed(tmp_path):
    # A restarted Jupyter kernel dies without running lab.close(): its nginx, Redis or Tomcat
    # must not live on. A "kernel" (a Python process) starts a child through the lab, prints its
    # pid, and is killed with SIGKILL; the child must be gone soon after.
    port = free_port()
    kernel_code = f"""
import asyncio, sys
from wslab.runtime.lab import Lab
from wslab.runtime.childprocess import ChildProcess

async def ready(directory):
    _, writer = await asyncio.open_connection("127.0.0.1", {port})
    writer.close()
    return True

async def main():
    lab = Lab()
    child = await ChildProcess.start(lab, "web", lambda d: [sys.executable, "-m", "http.server", "{port}",
                                     "--bind", "127.0.0.1"], ready=ready)
    print(child.pid, child.directory, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""
    kernel = await asyncio.create_subprocess_exec(sys.executable, "-c", kernel_code, stdout=asyncio.subprocess.PIPE)
    assert kernel.stdout is not None
    try:
        line = await asyncio.wait_for(kernel.stdout.readline(), scaled(15))
        pid_text, directory = line.decode().split(maxsplit=1)
        child_pid = int(pid_text)
        os.kill(child_pid, 0)  # running
    finally:
        kernel.kill()
        await kernel.wait()

    def child_gone() -> bool:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            return True
        # A zombie (reparented to init, not yet reaped) has stopped too.
        with open(f"/proc/{child_pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"

    await wait_until(child_gone, 5, f"the child {child_pid} stopping after its kernel was killed")
    shutil.rmtree(directory.strip(), ignore_errors=True)  # a killed kernel cannot delete its child's temp dir


# -- deadlines: wait_until, close_within, abort_all, and the one timing knob ------------------------------


async def test_wait_until_takes_truthy_results_and_coroutines_and_says_what_did_not_happen():
    events: list[str] = []
    asyncio.get_running_loop().call_later(0.05, events.append, "closed")
    await wait_until(lambda: events, 5, "an event")  # a non-empty list counts as true

    async def has_event() -> bool:
        return bool(events)

    await wait_until(has_event, 5, "an event")
    with pytest.raises(WaitTimeout, match=r"^the server noticing did not happen within [\d.]+ s$") as raised:
        await wait_until(lambda: False, 0.05, "the server noticing")
    assert isinstance(raised.value, LabError)  # one line in a notebook, like every lab error


@pytest.mark.parametrize(
    "factor, expected",
    [("3", "6.0"), ("", "2.0"), ("abc", "LabError: WSLAB_TIMEOUT_FACTOR='abc' is not a number"),
     ("0.5", "LabError: WSLAB_TIMEOUT_FACTOR='0.5' must be 1 or more")],
)
def test_the_timeout_factor_scales_deadlines_or_says_what_is_wrong(factor, expected):
    import subprocess

    # A bad factor stops `import wslab` itself, with the one-line LabError.
    code = ("try:\n    from wslab.runtime.timing import scaled\n    print(scaled(2))\n"
            "except Exception as exc:\n    print(f'{type(exc).__name__}: {exc}')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=scaled(60),
                            env={**os.environ, "WSLAB_TIMEOUT_FACTOR": factor})
    assert result.stdout.startswith(expected), result.stdout + result.stderr


async def test_close_within_aborts_a_connection_whose_peer_stopped_reading():
    blocked = asyncio.Event()

    async def firehose(ws):
        try:
            while True:
                await ws.send(b"x" * 65536)
        finally:
            blocked.set()

    async with Lab() as lab:
        server = await lab.serve(firehose, name="firehose", compression=None)
        client = await lab.connect(server.url, name="client", compression=None)
        client.transport.pause_reading()  # the peer stops reading: the server's send() blocks
        await wait_until(lambda: server.connections and all(
            ws.transport.get_write_buffer_size() > 0 for ws in server.connections), 5, "the server's send blocking")
        [ws] = server.connections
        loop = asyncio.get_running_loop()
        started = loop.time()
        await close_within(ws, 0.2)  # the close frame queues behind the stuck bytes: only abort() ends it
        assert loop.time() - started < 0.2 + scaled(1.0)
        assert ws.state.name == "CLOSED" and ws.close_code == 1006
        await wait_until(blocked.is_set, 5, "the handler's send failing")
        assert abort_all([client]) == 1


async def test_wait_listening_returns_when_a_restart_listens_again():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        restart = asyncio.create_task(server.restart(downtime=0.2))
        await wait_until(lambda: not server.is_listening, 5, "the server stopping")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", server.port)
        await server.wait_listening(5)
        moments = await restart
        assert server.is_listening and moments.downtime >= 0.2  # a lower bound: never shorter
        ws = await lab.connect(server.url, name="client")
        await ws.send("back")
        assert await asyncio.wait_for(ws.recv(), scaled(2)) == "back"


async def test_lab_connections_to_this_machine_never_go_through_a_proxy_from_the_environment(monkeypatch):
    """websockets sends ws:// through http_proxy/https_proxy/all_proxy, even to 127.0.0.1: on a machine behind
    a corporate proxy every lab connection would fail. A refused proxy stands in for one here."""
    import socket as socket_module

    from wslab.clients.reconnect import ReconnectingClient

    with socket_module.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        refused = unused.getsockname()[1]  # closed again below: connecting to it is refused
    for variable in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(variable, f"http://127.0.0.1:{refused}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        # The control: without proxy=None, websockets really goes to the (refused) proxy, not the server.
        with pytest.raises(OSError):
            async with connect(server.url, open_timeout=scaled(5)):
                pass
        ws = await lab.connect(server.url, name="client")
        await ws.send("direct")
        assert await asyncio.wait_for(ws.recv(), scaled(5)) == "direct"
        client = ReconnectingClient(server.url, name="reconnecting", timeline=lab.timeline, min_delay=0.05)
        lab.spawn(client.run(), name="reconnecting")
        await client.wait_open(timeout=5)
        await client.close()
