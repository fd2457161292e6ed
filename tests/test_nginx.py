"""A real nginx in front of the lab's servers: idle cuts, keepalive pings, upgrade headers, reloads, cleanup.

Without nginx these tests skip on a laptop, with the install command as the
reason; in CI (``CI=true``) they run and fail: a missing nginx must never turn
a build green. Timeouts are scaled down to 1 or 2 s (nginx's default is 60 s).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.protocol import State

from wslab import Lab, LabError
from wslab.faults.proxy import start_proxy
from wslab.runtime.nginx import NGINX, NginxSettings, render_config, start_nginx
from wslab.runtime.programs import Program
from wslab.runtime.timing import scaled, wait_until

SKIP_REASON = NGINX.skip_reason()
needs_nginx = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")

IDLE_CUT_LINE = "upstream timed out (110: Connection timed out) while proxying upgraded connection"


async def echo(ws) -> None:
    async for message in ws:
        await ws.send(message)


def running(pid: int) -> bool:
    """True if process ``pid`` exists and has not exited (a zombie has exited)."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.is_dir():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def round_trip(ws, text: str = "ping?") -> None:
    await ws.send(text)
    assert await asyncio.wait_for(ws.recv(), scaled(2)) == text


# -- without nginx: the config text, the rule for a missing program ---------------------------------


def test_config_says_what_each_setting_asks_for():
    both = [("127.0.0.1", 9001), ("127.0.0.1", 9002)]
    config = render_config(8080, both, NginxSettings(read_timeout=2, send_timeout=0.5))
    assert "listen 127.0.0.1:8080;" in config
    assert "server 127.0.0.1:9001;" in config and "server 127.0.0.1:9002;" in config
    assert "proxy_read_timeout 2s;" in config and "proxy_send_timeout 500ms;" in config  # nginx reads no fractions
    assert "proxy_set_header Upgrade $http_upgrade;" in config and "proxy_http_version 1.1;" in config
    assert "zone " not in config and "worker_shutdown_timeout" not in config
    assert "/tmp" not in config  # relative paths: a notebook can show it without a local path

    changed = render_config(
        8080, both,
        NginxSettings(forward_upgrade=False, http_version="1.0", worker_processes=2, worker_shutdown_timeout=1.5),
    )
    assert "proxy_set_header Upgrade" not in changed and 'Connection "upgrade"' not in changed
    assert "proxy_http_version 1.0;" in changed
    assert "zone websocket_servers 64k;" in changed  # several workers share one rotation
    assert "worker_shutdown_timeout 1500ms;" in changed

    blue_green = render_config(8080, both, NginxSettings(backups=1))
    assert "server 127.0.0.1:9001;" in blue_green and "server 127.0.0.1:9002 backup;" in blue_green
    with pytest.raises(LabError, match="at least one upstream that is not a backup"):
        render_config(8080, both, NginxSettings(backups=2))


def test_ci_never_skips_the_nginx_tests(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert NGINX.skip_reason() is None
    monkeypatch.setenv("CI", "")
    available, reason = NGINX.availability()
    assert (NGINX.skip_reason() is None) == available
    assert reason


def test_a_missing_nginx_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(Program, "find", lambda self: None)
    monkeypatch.delenv("CI", raising=False)
    assert "apt install nginx-light" in NGINX.skip_reason() and "brew install nginx" in NGINX.skip_reason()

    async def start():
        async with Lab() as lab:
            await start_nginx(lab, 9)

    with pytest.raises(LabError, match="apt install nginx-light"):
        asyncio.run(start())


# -- a real nginx ----------------------------------------------------------------------------------


@needs_nginx
async def test_an_idle_websocket_is_cut_at_the_read_timeout_without_a_close_frame():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        nginx = await start_nginx(lab, server, read_timeout=2)
        ws = await lab.connect(nginx.url, name="idle")
        await round_trip(ws)  # through nginx for real
        quiet_since = asyncio.get_running_loop().time()
        with pytest.raises(ConnectionClosedError) as caught:
            await asyncio.wait_for(ws.recv(), scaled(10))
        lived = asyncio.get_running_loop().time() - quiet_since
        assert abs(lived - 2.0) <= scaled(0.5), f"cut after {lived:.3f} s, expected 2 s"
        assert ws.close_code == 1006  # no close frame: nginx closed the TCP connection
        assert caught.value.rcvd is None and caught.value.sent is None
        await wait_until(lambda: bool(nginx.error_log_lines("info", containing="upstream timed out")), 2,
                         "the log line")
        [line] = nginx.error_log_lines("info", containing="upstream timed out")
        assert "[info]" in line  # only at info: error_log at "notice" or above would hide the cut
        assert not nginx.error_log_lines("notice", containing="upstream timed out")
        if sys.platform.startswith("linux"):  # the errno text is the OS's own
            assert IDLE_CUT_LINE in line


@needs_nginx
async def test_the_fault_proxys_idle_timeout_cuts_like_nginx():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        nginx = await start_nginx(lab, server, read_timeout=2)
        proxy = await start_proxy(lab, server, name="proxy")
        await proxy.set_fault("idle-timeout", timeout=2)
        seen = {}

        async def idle(name: str, url: str) -> None:
            ws = await lab.connect(url, name=name)
            await round_trip(ws)
            quiet_since = asyncio.get_running_loop().time()
            with pytest.raises(ConnectionClosedError) as caught:
                await asyncio.wait_for(ws.recv(), scaled(10))
            lived = asyncio.get_running_loop().time() - quiet_since
            exc = caught.value
            seen[name] = (lived, (ws.close_code, exc.rcvd, exc.sent, type(exc.__cause__)))

        await asyncio.gather(idle("via-nginx", nginx.url), idle("via-proxy", proxy.url))
        (nginx_lived, nginx_close), (proxy_lived, proxy_close) = seen["via-nginx"], seen["via-proxy"]
        assert nginx_close == proxy_close == (1006, None, None, EOFError)  # the same close: a FIN, no frame
        assert abs(nginx_lived - 2.0) <= scaled(0.5) and abs(proxy_lived - 2.0) <= scaled(0.5), seen
        assert abs(nginx_lived - proxy_lived) <= scaled(0.5), seen
        # And the server saw the same end on both of its connections.
        await wait_until(lambda: len(lab.timeline.select(source="echo", kind="closed")) == 2, 2, "both server ends")
        for event in lab.timeline.select(source="echo", kind="closed"):
            assert event.code == 1006 and isinstance(event.data["exc"].__cause__, EOFError)


@needs_nginx
async def test_pings_at_half_the_timeout_keep_a_connection_alive_for_three_timeouts():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        nginx = await start_nginx(lab, server, read_timeout=2)
        pinging = await lab.connect(nginx.url, name="pinging", ping_interval=1.0, ping_timeout=5)
        silent = await lab.connect(nginx.url, name="silent")  # the control: same nginx, no pings
        await asyncio.sleep(3 * 2.0)
        assert silent.state is State.CLOSED and silent.close_code == 1006
        assert pinging.state is State.OPEN
        await round_trip(pinging)


@needs_nginx
@pytest.mark.parametrize(
    ("settings", "status", "why"),
    [
        # Measured with nginx 1.22.1 and websockets 17.4: the websockets server answers, not nginx.
        # Without the headers nginx sends "Connection: close" upstream, and the server says
        # 426 Upgrade Required: "invalid Connection header: close".
        ({"forward_upgrade": False}, 426, "invalid Connection header: close"),
        # With proxy_http_version 1.0, 505 HTTP Version Not Supported: "unsupported HTTP version: HTTP/1.0".
        ({"http_version": "1.0"}, 505, "unsupported HTTP version: HTTP/1.0"),
    ],
)
async def test_a_proxy_that_does_not_forward_the_upgrade_fails_the_handshake(settings, status, why):
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        nginx = await start_nginx(lab, server, **settings)
        with pytest.raises(InvalidStatus) as caught:
            async with connect(nginx.url, open_timeout=scaled(5)):
                pass
        assert caught.value.response.status_code == status
        assert why in caught.value.response.body.decode()
        assert not nginx.error_log_lines("warn")  # nginx sees nothing wrong: it relayed an HTTP answer


@needs_nginx
async def test_a_rejected_config_is_one_line_quoting_nginx():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        with pytest.raises(LabError) as caught:
            await start_nginx(lab, server, extra="proxy_read_timeot 2s;")
        message = str(caught.value)
        assert "\n" not in message
        assert '[emerg] unknown directive "proxy_read_timeot" in nginx.conf:' in message
        assert "nginx" not in lab

        with pytest.raises(LabError, match="unknown nginx setting 'read_timout'"):
            await start_nginx(lab, server, read_timout=2)

        nginx = await start_nginx(lab, server)
        with pytest.raises(LabError, match="unknown directive"):  # re-running the cell with a typo
            await start_nginx(lab, server, extra="proxy_read_timeot 2s;")
        assert nginx.running and lab["nginx"] is nginx  # the one that runs is left alone
        with pytest.raises(LabError, match=r'\[emerg\] invalid value "2\.0"'):
            await nginx.reload(http_version="2.0")
        assert nginx.generation == 1 and "proxy_http_version 1.1;" in nginx.config
        await round_trip(await lab.connect(nginx.url, name="after"))  # still running the old config


@needs_nginx
async def test_close_leaves_no_nginx_process_and_no_directory():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        first = await start_nginx(lab, server)
        first_pids = [first.pid, *first.worker_pids()]
        assert len(first_pids) == 2 and all(map(running, first_pids))

        second = await start_nginx(lab, server)  # the same name: the first one goes
        assert not any(map(running, first_pids)) and not first.directory.exists()
        ws = await lab.connect(second.url, name="client")
        await round_trip(ws)

        second_pids = [second.pid, *second.worker_pids()]
        await lab.close()
        assert not any(map(running, second_pids)) and not second.directory.exists()


@needs_nginx
async def test_workers_whose_master_was_killed_alone_do_not_outlive_the_lab():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        nginx = await start_nginx(lab, server)
        workers = nginx.worker_pids()
        os.kill(nginx.pid, signal.SIGKILL)  # kill -9 of the master's pid only
        await asyncio.wait_for(nginx.process.wait(), scaled(5))
        assert all(map(running, workers))  # orphans: they still hold the port
        await lab.close()
        await wait_until(lambda: not any(map(running, workers)), 2, "the orphaned workers exiting")


@needs_nginx
async def test_kill_cuts_every_tunnel_and_closes_the_port():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        nginx = await start_nginx(lab, server)
        ws = await lab.connect(nginx.url, name="client")
        await round_trip(ws)
        await nginx.kill()
        await asyncio.wait_for(ws.wait_closed(), scaled(1))
        assert ws.close_code == 1006
        # The lab closed its copy of the listening socket: refused, not stuck in a backlog.
        with pytest.raises(LabError, match="connection refused"):
            await lab.connect(nginx.url, name="again")


@needs_nginx
async def test_the_server_sees_the_clients_host_and_address():
    seen = []

    async def record(ws) -> None:
        seen.append((ws.request.headers["Host"], ws.request.headers["X-Forwarded-For"]))
        await echo(ws)

    async with Lab() as lab:
        server = await lab.serve(record, name="record")
        nginx = await start_nginx(lab, server)
        await round_trip(await lab.connect(nginx.url, name="client"))
        assert seen == [(f"127.0.0.1:{nginx.port}", "127.0.0.1")]


@needs_nginx
async def test_nginx_takes_its_servers_in_turn():
    async with Lab() as lab:
        a = await lab.serve(echo, name="a")
        b = await lab.serve(echo, name="b")
        nginx = await start_nginx(lab, [a, b.url])
        for i in range(4):
            await round_trip(await lab.connect(nginx.url, name=f"c{i}"))
        assert (len(a.connections), len(b.connections)) == (2, 2)


@needs_nginx
async def test_a_backup_server_gets_connections_only_once_the_others_refuse():
    async with Lab() as lab:
        old = await lab.serve(echo, name="old")
        new = await lab.serve(echo, name="new")
        nginx = await start_nginx(lab, [old, new], backups=1)
        for i in range(3):
            await round_trip(await lab.connect(nginx.url, name=f"before{i}"))
        assert (len(old.connections), len(new.connections)) == (3, 0)
        old.stop_accepting()  # a drain's first step: connections go on, new ones are refused
        for i in range(3):
            await round_trip(await lab.connect(nginx.url, name=f"after{i}"))  # nginx tries the backup instead
        assert (len(old.connections), len(new.connections)) == (3, 3)
        assert nginx.error_log_lines("error", containing="Connection refused")


@needs_nginx
async def test_a_reload_with_worker_shutdown_timeout_cuts_old_tunnels_at_that_timeout():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        nginx = await start_nginx(lab, server, worker_shutdown_timeout=1)
        tunnels = [await lab.connect(nginx.url, name=f"t{i}") for i in range(3)]
        for ws in tunnels:
            await round_trip(ws)
        cut_at = {}

        async def watch(name, ws):
            await ws.wait_closed()
            cut_at[name] = lab.timeline.now()

        for i, ws in enumerate(tunnels):
            lab.spawn(watch(f"t{i}", ws), name=f"watch-t{i}")
        reload = await nginx.reload()
        assert reload.generation == 2 and reload.ready_at >= reload.signalled_at
        await wait_until(lambda: len(cut_at) == 3, 5, "the old tunnels being cut")
        for name, at in cut_at.items():
            after = at - reload.signalled_at
            assert abs(after - 1.0) <= scaled(0.5), f"{name} cut {after:.3f} s after"
        assert all(ws.close_code == 1006 for ws in tunnels)  # nginx sends no close frame
        await wait_until(lambda: not set(reload.old_workers) & set(nginx.worker_pids()), 2, "the old worker exiting")


@needs_nginx
async def test_without_worker_shutdown_timeout_old_tunnels_survive_a_reload():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        nginx = await start_nginx(lab, server)
        old = await lab.connect(nginx.url, name="old")
        await round_trip(old)
        reload = await nginx.reload(read_timeout=1)
        new = await lab.connect(nginx.url, name="new")  # a new worker, with the new config
        await asyncio.sleep(3.0)
        assert new.state is State.CLOSED and new.close_code == 1006  # read_timeout 1 s: idle, cut
        await round_trip(old)  # still carried by the old worker, with the old 60 s read_timeout
        assert set(reload.old_workers) <= set(nginx.worker_pids())  # it lingers for that tunnel


@needs_nginx
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the socket's flags from /proc")
async def test_nginx_inherits_a_non_blocking_listening_socket():
    # A blocking one made a worker that lost an accept() race during a reload sit in accept() for
    # good, never reading its order to quit: Nginx.reload then waited 10 s and failed (1 run in 6).
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        nginx = await start_nginx(lab, server)
        # Logged on stderr, before nginx opens its error.log: 'using inherited sockets from "7;"'.
        output = (nginx.directory / "output.log").read_text()
        fd = int(output.split('using inherited sockets from "')[1].split(";")[0])
        for pid in [nginx.pid, *nginx.worker_pids()]:
            flags = int(Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0], 8)
            assert flags & os.O_NONBLOCK, f"process {pid}: fd {fd} is blocking (flags {flags:o})"
