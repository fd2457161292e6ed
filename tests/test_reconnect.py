"""ReconnectingClient against real faults: the fault proxy, server restarts, close codes, a replaying server.

Delays are scaled down (min_delay 0.05 s, keepalive 0.2 s) and every bound is generous, and
scaled by WSLAB_TIMEOUT_FACTOR: these tests check what happens, never how fast.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time

import pytest

from wslab import Lab, LabError
from wslab.clients.backoff import Backoff
from wslab.clients.policy import resume_url
from wslab.clients.reconnect import BufferFull, ReconnectingClient
from wslab.faults.proxy import start_proxy
from wslab.runtime.timing import scaled, wait_until
from wslab.servers.replay import ReplayServer, last_seq_of
from wslab.servers.wire import encode

FAST = dict(min_delay=0.05, max_delay=0.2, open_timeout=2.0, ping_interval=0.2, ping_timeout=0.2, close_timeout=0.3)


def free_port() -> int:
    """A port nobody listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def echo(ws):
    async for message in ws:
        await ws.send(message)


def kinds(lab: Lab, name: str) -> list[str]:
    return [e.kind for e in lab.timeline.select(source=name) if e.kind != "message" and not e.kind.startswith("task-")]


async def start(lab: Lab, url: str, name: str = "client", **options) -> ReconnectingClient:
    client = ReconnectingClient(url, timeline=lab.timeline, name=name, **{**FAST, **options})
    lab.spawn(client.run(), name=name)
    return client


# -- every fault leads to a reconnect ----------------------------------------------------


@pytest.mark.parametrize("fault", ["reset", "close"])
async def test_proxy_fault_leads_to_reconnect(fault):
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        client = await start(lab, proxy.url)
        await client.wait_open(5)
        await proxy.set_fault(fault)
        await wait_until(lambda: client.opens == 2, 10, "the client's second open")
        close = lab.timeline.select(source="client", kind="close")[0]
        assert close.code == 1006 and close.data["was_clean"] is False
        assert [e.detail for e in lab.timeline.select(source="client", kind="open")] == ["first", "reconnect"]


async def test_stall_is_detected_by_keepalive_then_reconnects():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        client = await start(lab, proxy.url)
        await client.wait_open(5)
        for conn in list(proxy.connections):
            await proxy.set_fault("stall", conn=conn)  # this link only: new connections pass
        await wait_until(lambda: client.opens == 2, 10, "the client's second open")
        close = lab.timeline.select(source="client", kind="close")[0]
        assert close.code == 1006 and not close.data["was_clean"]


async def test_refuse_then_pass_reconnects_after_failed_attempts():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        client = await start(lab, proxy.url)
        await client.wait_open(5)
        await proxy.set_fault("reset")  # drop the open connection ...
        await proxy.set_fault("refuse")  # ... and refuse every new attempt
        await wait_until(lambda: len(lab.timeline.select(source="client", kind="error")) >= 2, 10,
                         "two failed attempts")
        assert client.opens == 1
        await proxy.set_fault("pass")
        await wait_until(lambda: client.opens == 2, 10, "the client's second open")
        errors = lab.timeline.select(source="client", kind="error")
        assert any("ConnectionRefusedError" in e.detail for e in errors)


async def test_server_restart_closes_with_1012_and_reconnects():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        client = await start(lab, server.url)
        await client.wait_open(5)
        await server.restart(downtime=0.3)
        await wait_until(lambda: client.opens == 2, 10, "the client's second open")
        close = lab.timeline.select(source="client", kind="close")[0]
        assert close.code == 1012 and close.detail == "reason='service restart' wasClean=True"


# -- giving up, and not retrying -------------------------------------------------------------


async def test_gives_up_after_max_retries_with_an_event():
    async with Lab() as lab:
        client = await start(lab, f"ws://127.0.0.1:{free_port()}", max_retries=3)
        await client.wait_done(10)
        assert client.attempts == 4  # the first attempt, then 3 retries
        assert kinds(lab, "client")[-1] == "give-up"
        assert client.gave_up and "max_retries=3" in client.gave_up
        assert len(lab.timeline.select(source="client", kind="retry")) == 3


async def test_wait_open_fails_at_once_when_the_client_gave_up():
    async with Lab() as lab:
        client = await start(lab, f"ws://127.0.0.1:{free_port()}", max_retries=1)
        started = time.monotonic()
        with pytest.raises(LabError, match="stopped without connecting"):
            await client.wait_open(30)
        assert time.monotonic() - started < scaled(10)  # not the full 30 s


@pytest.mark.parametrize("code", [1008, 4000, 4401])
async def test_policy_codes_are_not_retried(code):
    async def kick(ws):
        await ws.close(code, "go away")

    async with Lab() as lab:
        server = await lab.serve(kick, name="kick")
        client = await start(lab, server.url)
        await client.wait_done(10)
        assert client.opens == 1 and client.attempts == 1
        assert client.last_close.code == code and client.last_close.reason == "go away"
        assert kinds(lab, "client") == ["connecting", "open", "close", "give-up"]


async def test_retry_table_is_configurable():
    from wslab.clients.closecodes import RETRY

    async def kick(ws):
        await ws.close(4000, "come back later")

    async with Lab() as lab:
        server = await lab.serve(kick, name="kick")
        client = await start(lab, server.url, retry_table={**RETRY, 4000: True}, max_retries=2, min_uptime=60)
        await client.wait_done(10)
        assert client.opens == 3  # retried twice, then gave up on max_retries, not on the code
        assert "max_retries" in client.gave_up


async def test_handshake_rejected_with_403_is_not_retried():
    def deny(connection, request):
        return connection.respond(403, "no\n")

    async with Lab() as lab:
        server = await lab.serve(echo, name="echo", process_request=deny)
        client = await start(lab, server.url)
        await client.wait_done(10)
        assert client.attempts == 1 and client.opens == 0
        assert "403" in client.gave_up


async def test_user_close_does_not_reconnect_and_sends_1000():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        client = await start(lab, server.url)
        await client.wait_open(5)
        await client.close()
        assert client.state == "closed" and client.opens == 1
        await wait_until(lambda: lab.timeline.select(source="echo", kind="closed"), 10,
                         "the server seeing the close")
        assert lab.timeline.select(source="echo", kind="closed")[0].code == 1000
        with pytest.raises(LabError):
            await client.send("too late")


async def test_close_during_the_handshake_stops_for_good():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        await proxy.set_fault("latency", delay=0.3)  # a slow opening handshake
        client = await start(lab, proxy.url)
        await wait_until(lambda: client.state == "connecting", 10, "the client connecting")
        await client.close()
        await client.wait_done(5)
        assert client.state == "closed" and client.opens == 0
        await wait_until(lambda: lab.timeline.select(source="echo", kind="closed"), 10,
                         "the server seeing the close")
        assert lab.timeline.select(source="echo", kind="closed")[0].code == 1000


async def test_lab_close_cancels_run_and_closes_cleanly():
    lab = Lab()
    server = await lab.serve(echo, name="echo")
    client = await start(lab, server.url)
    await client.wait_open(5)
    await lab.close("client")
    assert client.state == "closed"
    await wait_until(lambda: lab.timeline.select(source="echo", kind="closed"), 10, "the server seeing the close")
    assert lab.timeline.select(source="echo", kind="closed")[0].code == 1000
    await lab.close()


# -- backoff: growth, min_uptime, replayable delays ----------------------------------------------


async def test_flapping_server_backs_off_until_a_connection_lasts_min_uptime():
    async def flap(ws):
        await ws.close(1011, "flap")  # accepts, then drops at once

    async with Lab() as lab:
        server = await lab.serve(flap, name="flap")
        await start(lab, server.url, min_delay=0.02, max_delay=1.0, factor=2.0, min_uptime=5.0)
        await wait_until(lambda: len(lab.timeline.select(source="client", kind="retry")) >= 4, 10,
                         "four retries")
        delays = [e.data["delay"] for e in lab.timeline.select(source="client", kind="retry")][:4]
        assert delays == sorted(delays) and delays[-1] > delays[0]  # grows: no reset on short connections

    async with Lab() as lab:
        server = await lab.serve(flap, name="flap")
        await start(lab, server.url, min_delay=0.02, max_delay=1.0, factor=2.0, min_uptime=0.0)
        await wait_until(lambda: len(lab.timeline.select(source="client", kind="retry")) >= 4, 10,
                         "four retries")
        delays = [e.data["delay"] for e in lab.timeline.select(source="client", kind="retry")][:4]
        assert delays == [0.02] * 4  # every connection "lasted" min_uptime: back to min_delay each time


async def test_same_seed_gives_the_same_delays():
    url = f"ws://127.0.0.1:{free_port()}"
    runs = []
    for _ in range(2):
        async with Lab() as lab:
            client = await start(lab, url, jitter="full", seed=7, max_retries=4)
            await client.wait_done(10)
            runs.append([e.data["delay"] for e in lab.timeline.select(source="client", kind="retry")])
    assert len(runs[0]) == 4 and runs[0] == runs[1]
    expected = Backoff(min_delay=0.05, max_delay=0.2, jitter="full", rng=random.Random(7))
    assert runs[0] == [expected.next() for _ in range(4)]


async def test_injected_clock_drives_uptime():
    ticks = iter(range(1000))
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        client = await start(lab, server.url, clock=lambda: float(next(ticks)) * 10, min_uptime=5.0)
        await client.wait_open(5)
        await server.restart(downtime=0.1)
        await wait_until(lambda: client.opens == 2, 10, "the client's second open")
        close = lab.timeline.select(source="client", kind="close")[0]
        assert close.data["uptime"] >= 10  # fake seconds: each clock read is 10 s later


# -- the outbound buffer ----------------------------------------------------------------------------


async def test_buffer_overflow_raises_and_is_recorded():
    async with Lab() as lab:
        client = await start(lab, f"ws://127.0.0.1:{free_port()}", buffer_size=3)
        for i in range(3):
            await client.send(f"m{i}")
        with pytest.raises(BufferFull, match="buffer_size=3"):
            await client.send("m3")
        assert client.buffered == 3
        assert lab.timeline.select(source="client", kind="buffer-full")


async def test_buffer_is_flushed_in_order_on_reconnect():
    async with Lab() as lab:
        app = ReplayServer(lab.timeline)
        server = await lab.serve(app.handler, name="replay")
        client = await start(lab, server.url)
        await client.wait_open(5)
        await server.stop()
        await wait_until(lambda: client.state != "open", 10, "the client noticing the stop")
        for i in range(5):
            await client.send(f"m{i}")
        assert client.buffered == 5
        await server.start()
        await client.wait_open(10)
        await client.send("m5")  # after the flush: goes straight out, after the others
        await wait_until(lambda: len(app.received) == 6, 10, "six messages at the server")
        assert list(app.received) == [f"m{i}" for i in range(6)]
        assert client.buffered == 0


# -- missed-message recovery ----------------------------------------------------------------------------


async def run_ledger(recover: bool) -> tuple[list[int], ReconnectingClient, ReplayServer]:
    """Publish 400 numbered messages through a reset, a stall and a server restart; return what the client got."""
    async with Lab() as lab:
        app = ReplayServer(lab.timeline, history=1000)
        server = await lab.serve(app.handler, name="replay")
        proxy = await start_proxy(lab, server, name="proxy")
        client = await start(lab, proxy.url, recover=recover)
        got: list[int] = []
        client.on_message = lambda m: got.append(m.seq)
        await client.wait_open(5)

        async def publish():
            for i in range(400):
                app.publish(f"m{i}")
                await asyncio.sleep(0.005)

        publisher = lab.spawn(publish(), name="publish")
        await asyncio.sleep(0.3)
        await proxy.set_fault("reset")
        await client.wait_open(10)
        await asyncio.sleep(0.2)
        await server.restart(downtime=0.2)
        await client.wait_open(10)
        await asyncio.sleep(0.2)
        for conn in list(proxy.connections):
            await proxy.set_fault("stall", conn=conn)
        await wait_until(lambda: client.opens == 4, 10, "the client's fourth open")
        await asyncio.wait_for(publisher, scaled(20))
        await wait_until(lambda: client.last_seq == 399 or (not recover and got and got[-1] == 399), 10,
                         "the last message")
        return got, client, app


async def test_recovery_leaves_no_gap_and_no_duplicate():
    got, client, app = await run_ledger(recover=True)
    assert got == list(range(400))
    assert client.gaps == [] and client.duplicates == 0
    assert app.replayed > 0


async def test_without_recovery_messages_are_lost_and_the_gaps_are_seen():
    got, client, app = await run_ledger(recover=False)
    lost = set(range(400)) - set(got)
    assert lost and len(got) == len(set(got))
    assert sum(last - first + 1 for first, last in client.gaps) == len(lost)
    assert app.replayed == 0


async def test_resync_when_the_gap_is_older_than_the_history():
    async with Lab() as lab:
        app = ReplayServer(lab.timeline, history=10)
        server = await lab.serve(app.handler, name="replay")
        client = await start(lab, server.url)
        await client.wait_open(5)
        app.publish("first")
        await wait_until(lambda: client.last_seq == 0, 10, "the first message")
        await server.stop()
        for i in range(50):
            app.publish(f"while away {i}")
        await server.start()
        await wait_until(lambda: lab.timeline.select(source="client", kind="resync"), 10, "the resync")
        assert client.gaps == [(1, 40)]  # 41..50 are still in the history of 10
        app.publish("after")
        await wait_until(lambda: client.last_seq == 51, 10, "message 51")
        assert app.resyncs == 1


async def test_gaps_and_duplicates_are_visible_to_the_application():
    async def numbered(ws):
        for seq in (0, 1, 3, 3, 4):
            await ws.send(encode(seq, "x"))
        await ws.wait_closed()

    async with Lab() as lab:
        server = await lab.serve(numbered, name="numbered")
        client = await start(lab, server.url)
        seen = []
        client.on_message = lambda m: seen.append(m.seq)
        await wait_until(lambda: len(seen) == 5, 10, "five messages")
        assert client.gaps == [(2, 2)] and client.duplicates == 1
        assert [e.kind for e in lab.timeline.select(source="client", kind=["gap", "duplicate"])] == ["gap", "duplicate"]


async def test_a_failing_callback_is_recorded_not_raised():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        client = await start(lab, server.url)
        client.on_message = lambda m: 1 / 0
        await client.wait_open(5)
        await client.send("boom")

        def callback_failed() -> bool:
            return any("ZeroDivisionError" in e.detail for e in lab.timeline.select(source="client", kind="error"))

        await wait_until(callback_failed, 10, "the callback's error recorded")
        assert client.state == "open"


def test_bad_url_is_a_lab_error():
    with pytest.raises(LabError, match="ws://"):
        ReconnectingClient("http://127.0.0.1:1")


# -- python -m wslab client ----------------------------------------------------------------------------


async def test_cli_client_prints_events_and_sends_stdin_lines():
    import signal
    import sys

    async with Lab() as lab:
        app = ReplayServer(lab.timeline)
        server = await lab.serve(app.handler, name="replay")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wslab", "client", server.url, "--min-delay", "0.05",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            lines = []
            while not any(" open " in line for line in lines):
                lines.append((await asyncio.wait_for(proc.stdout.readline(), scaled(20))).decode())
            app.publish("hello from the server")
            while not any("seq 0: hello from the server" in line for line in lines):
                lines.append((await asyncio.wait_for(proc.stdout.readline(), scaled(10))).decode())
            proc.stdin.write(b"typed line\n")
            await proc.stdin.drain()
            await wait_until(lambda: list(app.received) == ["typed line"], 10, "the typed line at the server")
            proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(proc.communicate(), scaled(10))
            assert proc.returncode == 0
            assert "close" in out.decode() and "1000" in out.decode()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_cli_client_exits_1_when_it_gives_up():
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wslab", "client", f"ws://127.0.0.1:{free_port()}", "--min-delay", "0.02",
        "--max-retries", "2", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), scaled(20))
    assert proc.returncode == 1
    assert "give-up" in out.decode() and "max_retries=2" in out.decode()


# -- the resume URL, as a property ----------------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.integers(min_value=-1, max_value=10**12))
def test_last_seq_round_trips_through_the_client_url(last_seq):
    client = ReconnectingClient("ws://127.0.0.1:9/feed?room=a")
    client.sequence.last_seq = last_seq
    url = client.resume_url()
    assert last_seq_of(url) == last_seq and "room=a" in url
    client.recover = False
    assert client.resume_url() == "ws://127.0.0.1:9/feed?room=a"


def test_resume_url_replaces_an_old_last_seq_and_keeps_the_rest_of_the_query():
    assert resume_url("ws://127.0.0.1:9/feed?last_seq=3&room=a", 7) == "ws://127.0.0.1:9/feed?room=a&last_seq=7"
    assert resume_url("ws://127.0.0.1:9", 7) == "ws://127.0.0.1:9/?last_seq=7"
    assert resume_url("ws://127.0.0.1:9/feed", None) == "ws://127.0.0.1:9/feed"  # nothing received yet
