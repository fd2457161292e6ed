"""Each fault of the proxy, checked at the far end: what the server and the client really see."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.protocol import State

from wslab import Lab
from wslab.faults.proxy import FAULTS, FaultProxy, start_proxy
from wslab.runtime.timing import scaled, wait_until


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def closed_event(lab: Lab, server: str, deadline: float):
    """The server's "closed" event for its first connection, waiting up to ``deadline`` seconds (scaled)."""
    await wait_until(lambda: lab.timeline.select(source=server, kind="closed"), deadline,
                     f"server {server!r} seeing its connection close")
    return lab.timeline.select(source=server, kind="closed")[0]


async def test_pass_relays_both_ways_and_counts_bytes():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        ws = await lab.connect(proxy.url, name="client")
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), scaled(2)) == "hello"
        assert proxy.bytes_up > len("hello") and proxy.bytes_down > len("hello")


async def test_latency_delays_each_direction():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        ws = await lab.connect(proxy.url, name="client")
        await proxy.set_fault("latency", delay=0.2)
        start = time.monotonic()
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), scaled(3)) == "ping"
        # 0.2 s on the way in and 0.2 s on the way out: a lower bound, which load never shortens.
        assert time.monotonic() - start >= 0.38


async def test_latency_keeps_order():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        ws = await lab.connect(proxy.url, name="client")
        await proxy.set_fault("latency", delay=0.05)
        for i in range(50):
            await ws.send(str(i))
        got = [await asyncio.wait_for(ws.recv(), scaled(3)) for _ in range(50)]
        assert got == [str(i) for i in range(50)]


async def test_reset_gives_the_server_an_rst_within_a_second():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        ws = await lab.connect(proxy.url, name="client")
        await proxy.set_fault("reset")
        event = await closed_event(lab, "echo", 1.0)
        assert isinstance(event.data["exc"].__cause__, ConnectionResetError)
        assert event.code == 1006
        with pytest.raises(ConnectionClosedError) as client_side:
            await asyncio.wait_for(ws.recv(), scaled(2))
        assert isinstance(client_side.value.__cause__, ConnectionResetError)


async def test_close_gives_the_server_a_fin():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        await lab.connect(proxy.url, name="client")
        await proxy.set_fault("close")
        event = await closed_event(lab, "echo", 1.0)
        # A FIN without a close frame: the server reads end of stream.
        assert isinstance(event.data["exc"].__cause__, EOFError)
        assert event.data["rcvd"] is None


async def test_stall_accepts_bytes_until_buffers_fill_then_blocks():
    chunk = os.urandom(64 * 1024)
    accepted = 0

    async def firehose(ws):
        nonlocal accepted
        while True:
            await ws.send(chunk)
            accepted += len(chunk)

    async with Lab() as lab:
        server = await lab.serve(firehose, name="firehose", compression=None)
        proxy = await start_proxy(lab, server, name="proxy")
        ws = await lab.connect(proxy.url, name="client", compression=None, max_size=None)
        await asyncio.wait_for(ws.recv(), scaled(2))
        await proxy.set_fault("stall")
        await asyncio.sleep(scaled(0.5))  # time for every buffer on the way to fill
        relayed = proxy.bytes_down
        after_stall = accepted
        await asyncio.sleep(scaled(1.0))
        # The server's writes stopped being accepted: its send() is blocked.
        assert accepted == after_stall
        assert accepted > relayed, "the server kept handing bytes to the kernel after the client vanished"
        # And the proxy forwarded nothing more.
        assert proxy.bytes_down == relayed
        # Nothing noticed: the connection is still OPEN on both ends.
        assert lab.timeline.select(source="firehose", kind="closed") == []


async def test_stall_of_one_connection_leaves_the_others_alone():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        stuck = await lab.connect(proxy.url, name="stuck")
        fine = await lab.connect(proxy.url, name="fine")
        first = proxy.connections[0].label
        await proxy.set_fault("stall", conn=first)
        await fine.send("still here")
        assert await asyncio.wait_for(fine.recv(), scaled(2)) == "still here"
        await stuck.send("hello?")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(stuck.recv(), scaled(0.3))
        await proxy.set_fault("pass", conn=first)
        assert await asyncio.wait_for(stuck.recv(), scaled(2)) == "hello?"


async def test_refuse_closes_the_listener_and_pass_opens_it_again():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        existing = await lab.connect(proxy.url, name="existing")
        await proxy.set_fault("refuse")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", proxy.port)
        await existing.send("open ones stay open")
        assert await asyncio.wait_for(existing.recv(), scaled(2)) == "open ones stay open"
        await proxy.set_fault("pass")
        again = await lab.connect(proxy.url, name="again")
        await again.send("back")
        assert await asyncio.wait_for(again.recv(), scaled(2)) == "back"


@pytest.mark.parametrize("then", ["close", "reset", "stall", "latency"])
async def test_refuse_lasts_through_every_other_fault_until_pass(then):
    # close and reset are events, stall and latency are states of the relayed connections:
    # none of them may open the listener again. Only pass does, as the docs promise.
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        await lab.connect(proxy.url, name="existing")  # an open connection, for close and reset to end
        await proxy.set_fault("refuse")
        await proxy.set_fault(then, delay=0.05 if then == "latency" else 0.0)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", proxy.port)
        assert proxy.refusing
        await proxy.set_fault("pass")
        assert not proxy.refusing
        again = await lab.connect(proxy.url, name="again")
        await again.send("back")
        assert await asyncio.wait_for(again.recv(), scaled(2)) == "back"


async def test_unknown_fault_is_one_clear_line():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        with pytest.raises(ValueError, match=r"unknown fault 'explode': choose one of pass, latency"):
            await proxy.set_fault("explode")
        with pytest.raises(ValueError, match="latency needs a positive delay"):
            await proxy.set_fault("latency")


async def test_faults_are_recorded_on_the_timeline():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        await lab.connect(proxy.url, name="client")
        for fault in ("stall", "pass", "reset"):
            await proxy.set_fault(fault)
        assert [e.detail for e in lab.timeline.select(source="proxy", kind="fault")] == ["stall", "pass", "reset"]


def test_every_fault_is_documented_in_the_module():
    import wslab.faults.proxy

    assert FAULTS == ("pass", "latency", "stall", "reset", "close", "refuse", "idle-timeout")
    documented = [line.split()[0] for line in wslab.faults.proxy.__doc__.splitlines() if line[:1].isalpha()]
    assert [f for f in FAULTS if f not in documented] == []
    assert FaultProxy.set_fault.__doc__


async def test_client_sees_the_proxy_close_as_connection_closed():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        ws = await lab.connect(proxy.url, name="client")
        await proxy.set_fault("close")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), scaled(2))


async def test_set_fault_while_a_connection_is_still_reaching_upstream_applies_to_it():
    # Accepted during a stall, its upstream connection made after set_fault("pass"):
    # it must relay, not stay stalled with the fault it was accepted under.
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        await proxy.set_fault("stall")
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        await proxy.set_fault("pass")  # before the proxy's own connect to the server completed
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not a WebSocket handshake: the server answers
        try:
            assert await asyncio.wait_for(reader.readline(), scaled(3))
            assert [c.fault for c in proxy.connections] == ["pass"]
        finally:
            writer.close()


class _RecordingTransport:
    """A stand-in transport for a unit test of the relay's bookkeeping: it records what is written."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass


def test_bytes_read_before_the_upstream_connection_is_up_are_kept_not_dropped():
    """Python 3.11.0-3.11.3 (Debian 12's python3) ignore pause_reading() in connection_made
    (CPython gh-103607): the client's first bytes can arrive before the upstream socket exists."""
    from wslab.faults.relay import ProxyConnection

    conn = ProxyConnection(proxy=None, label="p1")  # type: ignore[arg-type]  # the proxy is not used here
    conn._relay(conn.client, b"GET / HTTP/1.1\r\n")  # the upstream side has no transport yet
    conn._relay(conn.client, b"\r\n")
    upstream = _RecordingTransport()
    conn.server.connection_made(upstream)  # type: ignore[arg-type]
    assert upstream.written == [b"GET / HTTP/1.1\r\n", b"\r\n"]
    assert conn.bytes_up == 18


# -- idle-timeout: nginx's proxy_read_timeout, in the fault proxy ---------------------------------


async def talk(ws) -> None:
    """A server handler: on a path ``/send/SECONDS`` send a message every SECONDS; otherwise only read."""
    parts = (ws.request.path if ws.request else "").strip("/").split("/")
    if parts[0] == "send":
        while True:
            await asyncio.sleep(float(parts[1]))
            await ws.send("from the server")
    async for _ in ws:
        pass  # read, never answer: client->server traffic stays one-way


async def lifetime(ws, since: float, deadline: float) -> float:
    """Seconds from ``since`` until ``ws`` closed, waiting up to ``deadline`` (scaled)."""
    await asyncio.wait_for(ws.wait_closed(), scaled(deadline))
    return time.monotonic() - since


async def test_idle_timeout_closes_a_quiet_connection_with_a_fin_each_way_at_the_timeout():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        await proxy.set_fault("idle-timeout", timeout=1.0)
        ws = await lab.connect(proxy.url, name="client")
        await ws.send("last words")
        assert await asyncio.wait_for(ws.recv(), scaled(2)) == "last words"
        quiet_since = time.monotonic()
        with pytest.raises(ConnectionClosedError) as caught:
            await asyncio.wait_for(ws.recv(), scaled(5))
        lived = time.monotonic() - quiet_since
        assert abs(lived - 1.0) <= scaled(0.5), f"cut {lived:.3f} s after the last byte, expected 1 s"
        # What nginx's cut looks like to the client: no close frame, the stream just ended (a FIN).
        assert ws.close_code == 1006 and caught.value.rcvd is None and caught.value.sent is None
        assert isinstance(caught.value.__cause__, EOFError)
        server_side = await closed_event(lab, "echo", 2.0)  # the server gets a FIN too
        assert server_side.code == 1006 and isinstance(server_side.data["exc"].__cause__, EOFError)
        [cut] = lab.timeline.select(source="proxy", kind="idle-timeout")
        assert "FIN to both sides" in cut.detail


async def test_idle_timeout_restarts_at_every_byte_in_either_direction():
    async with Lab() as lab:
        server = await lab.serve(talk, name="talk")
        proxy = await start_proxy(lab, server, name="proxy")
        await proxy.set_fault("idle-timeout", timeout=1.0)
        up = await lab.connect(proxy.url + "/read", name="client-sends")
        down = await lab.connect(proxy.url + "/send/0.3", name="server-sends")
        silent = await lab.connect(proxy.url + "/read", name="silent")  # the control
        opened = time.monotonic()

        async def send_every(seconds: float) -> None:
            while True:
                await asyncio.sleep(seconds)
                await up.send("from the client")

        lab.spawn(send_every(0.3), name="sender")
        lived = await lifetime(silent, opened, 3)
        assert abs(lived - 1.0) <= scaled(0.5), lived
        await asyncio.sleep(1.5)  # 2.5 timeouts in all
        assert up.state is State.OPEN and down.state is State.OPEN
        await lab.close("sender")
        # Quiet now, both ways: cut one timeout after the last byte.
        cut = await lifetime(up, time.monotonic(), 3)
        assert cut <= 1.0 + scaled(0.5), cut


async def test_switching_idle_timeout_on_gives_an_idle_connection_a_full_timeout():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        ws = await lab.connect(proxy.url, name="client")
        await asyncio.sleep(1.2)  # idle longer than the timeout about to be set
        switched = time.monotonic()
        await proxy.set_fault("idle-timeout", timeout=1.0)
        lived = await lifetime(ws, switched, 3)
        assert 0.95 <= lived <= 1.0 + scaled(0.5), lived  # counted from the switch, not from the last byte


async def test_idle_timeout_is_a_state_for_new_connections_until_pass_and_can_hit_one_connection():
    async with Lab() as lab:
        server = await lab.serve(echo, name="echo")
        proxy = await start_proxy(lab, server, name="proxy")
        await proxy.set_fault("idle-timeout", timeout=0.5)
        assert "idle-timeout 0.5 s" in repr(proxy)
        await proxy.set_fault("pass")
        spared = await lab.connect(proxy.url, name="spared")
        target = await lab.connect(proxy.url, name="target")
        await wait_until(lambda: len(proxy.connections) == 2, 2, "both connections relayed")
        await proxy.set_fault("idle-timeout", timeout=0.5, conn=proxy.connections[1])
        await lifetime(target, time.monotonic(), 3)
        assert spared.state is State.OPEN
        with pytest.raises(ValueError, match="idle-timeout needs a positive timeout"):
            await proxy.set_fault("idle-timeout")
