"""The ``wslab`` command, run as a real subprocess: ``python -m wslab ...``.

Every wait has a deadline. Bounds are generous (the CI machine has 2 shared cores) and scaled
by WSLAB_TIMEOUT_FACTOR.
"""

from __future__ import annotations

import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.http11 import Response
from websockets.sync.client import connect
from websockets.uri import parse_uri

from wslab.runtime.redis import REDIS
from wslab.runtime.timing import scaled
from wslab.servers import SERVERS

DEADLINE = scaled(20)  # seconds for anything that should take well under one


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wslab", *args],
        capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL,
    )


class Running:
    """A ``python -m wslab`` process whose stdout lines are read with a deadline."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wslab", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout: float = DEADLINE) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout} s; so far: {self.seen}") from None
        assert line is not None, f"the process ended; output: {self.seen}; stderr: {self.stderr()}"
        self.seen.append(line)
        return line

    def wait_for(self, text: str, timeout: float = DEADLINE) -> str:
        end = time.monotonic() + timeout
        while True:
            line = self.line(max(0.01, end - time.monotonic()))
            if text in line:
                return line

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.poll() is not None else "(still running)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=DEADLINE)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            stream.close()


@pytest.fixture
def running():
    started: list[Running] = []

    def start(*args: str) -> Running:
        started.append(Running(*args))
        return started[-1]

    yield start
    for r in started:
        r.stop()


@pytest.fixture
def listening_port():
    """A port where a plain TCP socket listens (busy for a server; reachable for a proxy's probe)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.fixture
def free_port():
    """A port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# -- help -----------------------------------------------------------------------


def test_help_documents_both_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "serve" in result.stdout and "proxy" in result.stdout


def test_proxy_help_lists_every_stdin_command():
    result = run_cli("proxy", "--help")
    assert result.returncode == 0
    for word in ("--upstream", "--listen", "--fault", "pass", "latency", "stall", "reset", "close", "refuse", "status",
                 "idle-timeout SECONDS", "--timeout"):
        assert word in result.stdout, word


def test_serve_help_lists_server_variants():
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    for word in ("--server", "naive", "--host", "--port", "--ping-interval", "--broadcast-interval", "--drain-window",
                 "1012", "--epoch"):
        assert word in result.stdout, word


# -- bad input: one line on stderr, exit code 2 -----------------------------------


def test_no_command():
    assert_one_line_error(run_cli(), "COMMAND")


def test_serve_busy_port(listening_port):
    assert_one_line_error(run_cli("serve", "--port", str(listening_port)), f"port {listening_port}", "already in use")


def test_serve_address_not_on_this_machine():
    assert_one_line_error(run_cli("serve", "--host", "192.0.2.1"), "not on this machine")


def test_proxy_busy_listen_port(listening_port):
    taken = f"127.0.0.1:{listening_port}"
    result = run_cli("proxy", "--upstream", f"ws://{taken}", "--listen", taken)
    assert_one_line_error(result, "already in use")


def test_proxy_unreachable_upstream(free_port):
    result = run_cli("proxy", "--upstream", f"ws://127.0.0.1:{free_port}")
    assert_one_line_error(result, f"127.0.0.1:{free_port}", "not accepting connections", "start the server first")


def test_proxy_unknown_fault(listening_port):
    result = run_cli("proxy", "--upstream", f"ws://127.0.0.1:{listening_port}", "--fault", "explode")
    assert_one_line_error(result, "invalid choice: 'explode'", "stall")


def test_proxy_latency_without_delay(listening_port):
    result = run_cli("proxy", "--upstream", f"ws://127.0.0.1:{listening_port}", "--fault", "latency", "--delay", "0")
    assert_one_line_error(result, "--delay")


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("http://127.0.0.1:8765", "must start with ws://"),
        ("https://127.0.0.1:8765", "needs wss://"),
        ("127.0.0.1:8765", "not a WebSocket URL"),
        ("ws://127.0.0.1", "has no port"),
        ("ws://127.0.0.1:99999", "invalid port"),
        ("ws://:8765", "has no host"),
    ],
)
def test_proxy_malformed_upstream_url(url, fragment):
    assert_one_line_error(run_cli("proxy", "--upstream", url), "--upstream", fragment)


@pytest.mark.parametrize(
    "listen, fragment",
    [
        ("127.0.0.1", "not HOST:PORT"),
        ("127.0.0.1:http", "not a port number"),
        ("127.0.0.1:70000", "out of range"),
        ("192.0.2.1:0", "not on this machine"),  # a documentation address: never local
    ],
)
def test_proxy_bad_listen(listening_port, listen, fragment):
    result = run_cli("proxy", "--upstream", f"ws://127.0.0.1:{listening_port}", "--listen", listen)
    assert_one_line_error(result, fragment)


@pytest.mark.parametrize("args", [["--port", "x"], ["--ping-interval", "-1"], ["--server", "nope"]])
def test_serve_bad_options(args):
    assert_one_line_error(run_cli("serve", *args), args[0])


# -- serve ------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_prints_a_url_clients_connect_to_and_stops_on_signal(running, sig):
    server = running("serve", "--broadcast-interval", "0.1")
    url = server.line()
    assert url.startswith("ws://127.0.0.1:")
    with connect(url, open_timeout=10) as ws:
        message = ws.recv(timeout=10)
        assert isinstance(message, bytes) and message.split()[0].isdigit()
        server.wait_for(" open ")
    server.wait_for(" closed ")
    started = time.monotonic()
    server.proc.send_signal(sig)
    assert server.proc.wait(timeout=DEADLINE) == 0
    assert time.monotonic() - started < scaled(5)
    err = server.stderr()
    assert "Traceback" not in err, err


@pytest.mark.parametrize("variant", sorted(SERVERS))
def test_every_server_variant_serves_broadcasts_and_stops(running, variant):
    if variant == "backplane" and REDIS.skip_reason():  # it starts a redis-server of its own
        pytest.skip(REDIS.skip_reason())
    server = running("serve", "--server", variant, "--broadcast-interval", "0.1")
    url = server.line()
    assert url.startswith("ws://127.0.0.1:"), (url, server.seen)
    with connect(url, open_timeout=10) as ws:
        factory = SERVERS[variant][0]
        if hasattr(getattr(factory, "func", factory), "broadcast_forever"):  # unwrap functools.partial
            assert ws.recv(timeout=10)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=DEADLINE) == 0
    err = server.stderr()
    assert "Traceback" not in err and "error" not in err, err


def test_serve_origin_allow_list_refuses_other_pages_with_403(running):
    server = running("serve", "--server", "fixed", "--origin", "http://127.0.0.1:8000", "--broadcast-interval", "0.1")
    url = server.line()
    with pytest.raises(InvalidStatus) as refused:
        connect(url, origin="http://evil.example", open_timeout=10)
    assert refused.value.response.status_code == 403
    server.wait_for("refused")
    for origin in ("http://127.0.0.1:8000", None):  # the allowed page, and a client that is not a browser
        with connect(url, origin=origin, open_timeout=10) as ws:
            assert ws.recv(timeout=10)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=DEADLINE) == 0


def test_serve_connection_cap_refuses_with_503(running):
    server = running("serve", "--server", "fixed", "--max-connections", "1")
    url = server.line()
    with connect(url, open_timeout=10):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, open_timeout=10)
        assert refused.value.response.status_code == 503 and b"max_total=1" in refused.value.response.body
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=DEADLINE) == 0


@pytest.mark.parametrize("args", [["--accept-rate", "0"], ["--max-connections", "-1"]])
def test_serve_bad_hardening_options(args):
    assert_one_line_error(run_cli("serve", *args), args[0])


def frames_until_closed(url: str, deadline: float) -> list[Frame]:
    """Open a WebSocket to ``url`` and return every frame received until the close, or ``deadline`` seconds.

    A client that has no keepalive of its own and never answers a ping: websockets'
    sans-I/O ClientProtocol over a plain socket, whose queued pongs are never sent.
    Only a server's keepalive makes frames arrive on an idle connection.
    """
    uri = parse_uri(url)
    protocol = ClientProtocol(uri)
    frames: list[Frame] = []
    with socket.create_connection((uri.host, uri.port), timeout=DEADLINE) as sock:
        protocol.send_request(protocol.connect())
        sock.sendall(b"".join(protocol.data_to_send()))
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                protocol.receive_eof()
                break
            protocol.receive_data(data)
            for event in protocol.events_received():
                if isinstance(event, Response):
                    assert event.status_code == 101, event
                else:
                    frames.append(event)
            if frames and frames[-1].opcode is Opcode.CLOSE:
                break
    return frames


def test_serve_broadcast_runs_websockets_keepalive(running):
    # The broadcast variant's serve_options ask for a ping every 0.5 s and a pong within 0.5 s.
    server = running("serve", "--server", "broadcast", "--broadcast-interval", "0")
    frames = frames_until_closed(server.line(), scaled(10))
    opcodes = [frame.opcode for frame in frames]
    assert opcodes[:1] == [Opcode.PING], f"no keepalive ping first: {opcodes}"
    # Our pong never comes: keepalive closes the connection with 1011, as websockets documents.
    assert opcodes[-1] is Opcode.CLOSE, opcodes
    close = Close.parse(frames[-1].data)
    assert (close.code, close.reason) == (CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
    server.wait_for("keepalive ping timeout")


def test_serve_ping_interval_0_turns_the_broadcast_variants_keepalive_off(running):
    server = running("serve", "--server", "broadcast", "--broadcast-interval", "0", "--ping-interval", "0")
    # Six of the variant's ping intervals: without the override, a ping and the close would come.
    assert frames_until_closed(server.line(), scaled(3.0)) == []


# -- proxy ------------------------------------------------------------------------


def test_proxy_relays_and_obeys_reset_from_stdin(running):
    server = running("serve", "--broadcast-interval", "0.1")
    proxy = running("proxy", "--upstream", server.line())
    url = proxy.line()
    assert url.startswith("ws://127.0.0.1:")
    with connect(url, open_timeout=10) as ws:
        ws.recv(timeout=10)  # a broadcast, relayed
        proxy.wait_for(" open")
        proxy.send("status")
        assert "p1" in proxy.wait_for("p1 ") and "bytes" in proxy.seen[-1]
        proxy.send("reset")
        started = time.monotonic()
        with pytest.raises(ConnectionClosedError) as caught:
            while time.monotonic() - started < DEADLINE:
                ws.recv(timeout=DEADLINE)
        assert time.monotonic() - started < scaled(5)
        assert caught.value.rcvd is None  # no close frame: the TCP connection was reset
    proxy.wait_for("fault                reset")
    server.wait_for("ConnectionResetError")
    proxy.send("quit")
    assert proxy.proc.wait(timeout=DEADLINE) == 0
    assert "Traceback" not in proxy.stderr()


def test_proxy_reports_bad_stdin_commands_and_keeps_running(running):
    server = running("serve", "--broadcast-interval", "0")
    proxy = running("proxy", "--upstream", server.line())
    url = proxy.line()
    for command in ("explode", "latency", "latency soon", "stall p9", "stall p1 p2"):
        proxy.send(command)
    proxy.send("status")
    proxy.wait_for("fault=pass")
    with connect(url, open_timeout=10):
        proxy.wait_for(" open")
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.proc.wait(timeout=DEADLINE) == 0
    err = proxy.stderr()
    assert "Traceback" not in err
    for fragment in ("unknown command 'explode'", "latency needs seconds", "'soon' is not a number",
                     "no open proxy connection 'p9'", "at most one connection label"):
        assert fragment in err, (fragment, err)


def test_proxy_idle_timeout_typed_on_stdin_cuts_a_quiet_connection(running):
    server = running("serve", "--broadcast-interval", "0")
    proxy = running("proxy", "--upstream", server.line())
    url = proxy.line()
    for command in ("idle-timeout", "idle-timeout 0.5", "status"):
        proxy.send(command)
    assert proxy.wait_for(" open=").startswith("fault=idle-timeout 0.5 s")
    with connect(url, open_timeout=DEADLINE) as ws:
        started = time.monotonic()
        with pytest.raises(ConnectionClosedError) as caught:
            ws.recv(timeout=DEADLINE)  # nothing comes: the proxy cuts the quiet connection
        assert time.monotonic() - started < 0.5 + scaled(1)
        assert caught.value.rcvd is None  # no close frame, like nginx's cut
    proxy.wait_for("idle-timeout")
    proxy.send("quit")
    assert proxy.proc.wait(timeout=DEADLINE) == 0
    err = proxy.stderr()
    assert "idle-timeout needs seconds, e.g. 'idle-timeout 2'" in err and "Traceback" not in err


@pytest.mark.parametrize("then", ["close", "reset", "stall"])
def test_proxy_refuse_typed_on_stdin_lasts_until_pass(running, then):
    server = running("serve", "--broadcast-interval", "0")
    proxy = running("proxy", "--upstream", server.line())
    url = proxy.line()
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE):  # an open connection, for close and reset
        proxy.wait_for(" open")
        for command in ("refuse", then, "status"):
            proxy.send(command)
        status = proxy.wait_for(" open=")  # status's first line, printed after the two faults ran
        assert "refusing new connections" in status, status
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=DEADLINE).close()
        proxy.send("pass")
        proxy.send("status")
        status = proxy.wait_for(" open=")
        assert status.startswith("fault=pass") and "refusing" not in status, status
        with connect(url, open_timeout=DEADLINE):
            pass
    proxy.send("quit")
    assert proxy.proc.wait(timeout=DEADLINE) == 0
    assert "Traceback" not in proxy.stderr()


def test_serve_keepalive_is_for_the_variants_that_ping_by_themselves():
    assert_one_line_error(run_cli("serve", "--server", "naive", "--keepalive", "1"), "--keepalive is for --server")
    assert_one_line_error(run_cli("serve", "--server", "fixed", "--keepalive", "0"), "more than 0 seconds")
