"""Hostile and oversized input: each case gets its documented answer, and the server goes on serving.

Every test runs the lab's FixedServer behind a :class:`~wslab.servers.gate.Gate`,
broadcasting every 20 ms to a healthy client, and checks four things:

1. the hostile client gets the documented answer (a close code, an HTTP status, a closed socket);
2. the healthy client keeps receiving, during and after (it is never the one dropped);
3. the event is on the timeline (``closed`` with the code sent, or ``refused``);
4. nothing is printed (background tasks record, they never print).

The malformed frames go out on raw sockets (:class:`~wslab.faults.hostile.RawClient`):
a WebSocket library would refuse to send them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from wslab import Lab
from wslab.faults.hostile import OPCODE_BINARY, OPCODE_TEXT, RawClient, build_frame, handshake_request
from wslab.runtime.server import LabServer
from wslab.runtime.timeline import Event
from wslab.runtime.timing import scaled, wait_until
from wslab.servers import ConnectionLimits, FixedServer, Gate, start_app

MAX_SIZE = 1024
OPEN_TIMEOUT = 1.0
BROADCAST_EVERY = 0.02


@dataclass
class Scene:
    lab: Lab
    server: LabServer
    app: FixedServer
    received: list[float] = field(default_factory=list)  # when the healthy client got each broadcast

    def events(self, kind: str, since: int = 0) -> list[Event]:
        return [e for e in self.lab.timeline.events[since:] if e.source == "fixed" and e.kind == kind]

    async def healthy_keeps_receiving(self, count: int = 10) -> None:
        """The healthy client receives ``count`` more broadcasts (at 50 a second: well within the deadline)."""
        target = len(self.received) + count
        await wait_until(lambda: len(self.received) >= target, 5.0, f"the healthy client receiving {count} more")


@contextlib.asynccontextmanager
async def scene(**gate: Any) -> AsyncIterator[Scene]:
    async with Lab() as lab:
        gate.setdefault("max_size", MAX_SIZE)
        gate.setdefault("open_timeout", OPEN_TIMEOUT)
        app = FixedServer(lab.timeline, ping_interval=0.5, ping_timeout=2.0, gate=Gate(**gate))
        server = await start_app(lab, app, name="fixed")
        s = Scene(lab, server, app)
        healthy = await lab.connect(server.url, name="healthy")

        async def read() -> None:
            async for _ in healthy:
                s.received.append(time.monotonic())

        lab.spawn(read(), name="healthy-reader")
        lab.spawn(app.broadcast_forever(BROADCAST_EVERY), name="broadcasts")
        await s.healthy_keeps_receiving(3)
        yield s
        await s.healthy_keeps_receiving()
        assert len(app.sessions) >= 1 and lab["healthy"].close_code is None  # never dropped


def assert_silent(capfd: pytest.CaptureFixture[str]) -> None:
    out, err = capfd.readouterr()
    assert (out, err) == ("", ""), "the server printed something"


async def bad_frame(s: Scene, frame: bytes) -> tuple[tuple[int, str] | None, Event]:
    """Send ``frame`` on a fresh raw connection; the close frame it gets, and the server's 'closed' event."""
    since = len(s.lab.timeline)
    raw = await RawClient.open(s.server.url)
    try:
        assert await raw.handshake() == 101
        await raw.send(frame)
        answer = await raw.read_close()
    finally:
        raw.close()
    await wait_until(lambda: s.events("closed", since), 5.0, "the server recording the close")
    return answer, s.events("closed", since)[0]


# -- frames ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "frame", "code"),
    [
        ("message over max_size", build_frame(OPCODE_BINARY, b"x" * (MAX_SIZE + 1)), 1009),
        ("invalid UTF-8 in a text frame", build_frame(OPCODE_TEXT, b"caf\xc3"), 1007),
        ("unmasked client frame", build_frame(OPCODE_TEXT, b"hello", mask=False), 1002),
        ("reserved opcode 0x3", build_frame(0x3, b"hello"), 1002),
        ("reserved bit set without an extension", build_frame(OPCODE_TEXT, b"hello", rsv=0b100), 1002),
    ],
)
async def test_a_bad_frame_gets_its_close_code_and_the_others_keep_receiving(capfd, case, frame, code):
    async with scene() as s:
        answer, closed = await bad_frame(s, frame)
        assert answer is not None and answer[0] == code, f"{case}: got {answer}"
        assert closed.data["sent"] == code
        assert len(s.app.sessions) == 1  # the hostile session left the map; the healthy one stayed
    assert_silent(capfd)


async def test_a_python_client_sending_too_much_gets_1009(capfd):
    async with scene() as s:
        async with connect(s.server.url, ping_interval=None) as ws:
            await ws.send(b"x" * (MAX_SIZE + 1))
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), scaled(5))  # broadcasts may come first: read to the end
                while True:
                    await asyncio.wait_for(ws.recv(), scaled(5))
        assert ws.close_code == 1009 and "exceeds limit" in (ws.close_reason or "")
    assert_silent(capfd)


# -- handshakes --------------------------------------------------------------------------------------


async def test_garbage_instead_of_a_handshake_is_closed_and_recorded(capfd):
    async with scene() as s:
        since = len(s.lab.timeline)
        raw = await RawClient.open(s.server.url)
        await raw.send(b"\x16\x03\x01\x02\x00 hello? SSH-2.0-OpenSSH\r\n\r\n")  # a TLS hello, an SSH banner...
        status, _ = await raw.read_response()
        assert status in (None, 400)  # websockets closes the socket without an answer
        assert await raw.at_eof()
        raw.close()
        await wait_until(lambda: s.events("refused", since), 5.0, "the refusal on the timeline")
        assert "did not receive a valid HTTP request" in s.events("refused", since)[0].detail
    assert_silent(capfd)


async def test_a_connection_that_sends_nothing_is_no_refusal_but_garbage_after_it_is(capfd):
    # A port probe (connect, close: what wait_listening does) is not a refused handshake: notebook 00's
    # event table showed one as "refused" until the lab's server only recorded peers that sent something.
    async with scene() as s:
        since = len(s.lab.timeline)
        probe = await RawClient.open(s.server.url)
        probe.close()
        raw = await RawClient.open(s.server.url)
        await raw.send(b"garbage\r\n\r\n")
        assert await raw.at_eof()
        raw.close()
        await wait_until(lambda: s.events("refused", since), 5.0, "the garbage's refusal on the timeline")
        await asyncio.sleep(0.2)  # the probe closed first: its refusal, if any, would be there by now
        assert len(s.events("refused", since)) == 1
    assert_silent(capfd)


async def test_an_enormous_header_is_refused_with_431(capfd):
    async with scene() as s:
        since = len(s.lab.timeline)
        raw = await RawClient.open(s.server.url)
        status = await raw.handshake(extra_headers={"Cookie": "x" * 64_000})
        raw.close()
        assert status == 431
        await wait_until(lambda: s.events("refused", since), 5.0, "the refusal on the timeline")
        assert s.events("refused", since)[0].data["status"] == 431
    assert_silent(capfd)


async def test_a_slowloris_is_dropped_at_the_open_timeout(capfd):
    async with scene() as s:
        since = len(s.lab.timeline)
        raw = await RawClient.open(s.server.url, timeout=OPEN_TIMEOUT + 5)
        request = handshake_request(s.server.url)
        started = time.monotonic()
        dropped_at = None
        for byte in request:  # one byte every 0.2 s: the whole request would take over 30 s
            try:
                await raw.send(bytes([byte]))
            except (ConnectionError, OSError):
                dropped_at = time.monotonic() - started
                break
            if raw.reader.at_eof():
                dropped_at = time.monotonic() - started
                break
            with contextlib.suppress(asyncio.TimeoutError):  # EOF arrives as a read of b""
                if await asyncio.wait_for(raw.reader.read(1), 0.2) == b"":
                    dropped_at = time.monotonic() - started
                    break
        raw.close()
        assert dropped_at is not None, "the server never dropped the slow handshake"
        assert OPEN_TIMEOUT - 0.1 <= dropped_at <= OPEN_TIMEOUT + scaled(1.0)
        await s.healthy_keeps_receiving()
        refused = s.events("refused", since)
        assert refused and "open_timeout" in refused[0].detail
    assert_silent(capfd)


# -- a flood of connections that never read ------------------------------------------------------------


def can_bind(host: str) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, 0))
        except OSError:
            return False
    return True


needs_second_loopback = pytest.mark.skipif(
    not can_bind("127.0.0.2"),
    reason="no 127.0.0.2 on this machine (macOS: sudo ifconfig lo0 alias 127.0.0.2 up); Linux has all of 127/8",
)


async def flood(s: Scene, n: int, host: str) -> tuple[list[RawClient], list[int | None]]:
    """Open ``n`` connections from ``host`` that complete the handshake and then never read."""
    clients, statuses = [], []
    for _ in range(n):
        raw = await RawClient.open(s.server.url, local_host=host)
        statuses.append(await raw.handshake())
        clients.append(raw)
    return clients, statuses


@needs_second_loopback
async def test_one_client_cannot_hold_more_than_its_share(capfd):
    async with scene(limits=ConnectionLimits(max_per_client=20, max_total=200)) as s:
        since = len(s.lab.timeline)
        flooders, statuses = await flood(s, 30, "127.0.0.2")  # another "machine": a second loopback address
        try:
            assert statuses == [101] * 20 + [503] * 10
            await s.healthy_keeps_receiving(25)  # 20 never-reading sessions in the map, the healthy one unhurt
            refused = s.events("refused", since)
            assert len(refused) >= 1 and "max_per_client=20" in refused[0].detail
            # Another client still gets in: the cap is per client.
            async with connect(s.server.url, ping_interval=None) as other:
                await asyncio.wait_for(other.recv(), scaled(5))
        finally:
            for raw in flooders:
                raw.close()
    assert_silent(capfd)


@needs_second_loopback
async def test_the_total_cap_refuses_everyone_new_and_keeps_serving_those_in(capfd):
    async with scene(limits=ConnectionLimits(max_per_client=40, max_total=30)) as s:
        # The healthy client holds 1 of the 30; two flooders take the rest.
        first, statuses_1 = await flood(s, 20, "127.0.0.2")
        second, statuses_2 = await flood(s, 20, "127.0.0.3")
        try:
            assert statuses_1 == [101] * 20 and statuses_2 == [101] * 9 + [503] * 11
            with pytest.raises(InvalidStatus) as refused:
                await connect(s.server.url, open_timeout=scaled(5))
            assert refused.value.response.status_code == 503
            assert b"max_total=30" in refused.value.response.body
            await s.healthy_keeps_receiving(25)  # at the cap, with 29 sessions that never read
        finally:
            for raw in first + second:
                raw.close()
        # The flooders are gone: room again.
        await wait_until(lambda: s.app.gate is not None and s.app.gate.limits is not None
                         and s.app.gate.limits.total <= 1, 5.0, "the caps counting the flood out")
        async with connect(s.server.url, ping_interval=None) as again:
            await asyncio.wait_for(again.recv(), scaled(5))
    assert_silent(capfd)
