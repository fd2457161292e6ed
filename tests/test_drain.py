"""Deploys that drain: the plan (pure), the drain on a real server, and ``wslab serve`` draining on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from wslab import Lab, LabError
from wslab.faults.proxy import start_proxy
from wslab.runtime.timing import scaled, wait_until
from wslab.servers.drain import Batch, drain, drain_schedule
from wslab.servers.process import start_server_process
from wslab.servers.replay import ReplayServer
from wslab.servers.wire import Numbered, decode

# -- the plan, without I/O ---------------------------------------------------------------------


def test_a_window_of_0_closes_everyone_at_once():
    assert drain_schedule(200, 0) == [Batch(0.0, 200)]
    assert drain_schedule(0, 2.0) == []


def test_two_hundred_over_one_second_is_ten_batches_of_twenty():
    plan = drain_schedule(200, 1.0, every=0.1)
    assert [b.size for b in plan] == [20] * 10
    assert [round(b.at, 3) for b in plan] == [round(0.1 * i, 3) for i in range(10)]


def test_fewer_connections_than_slots_get_one_batch_each():
    assert drain_schedule(3, 2.0, every=0.1) == [Batch(0.0, 1), Batch(2 / 3, 1), Batch(4 / 3, 1)]


@given(st.integers(1, 5000), st.floats(0, 30), st.floats(0.01, 1))
def test_every_connection_is_in_exactly_one_batch_and_batches_are_even(n, window, every):
    plan = drain_schedule(n, window, every=every)
    assert sum(b.size for b in plan) == n
    assert max(b.size for b in plan) - min(b.size for b in plan) <= 1
    assert plan[0].at == 0 and all(0 <= b.at < max(window, 1e-9) or b.at == 0 for b in plan)
    assert [b.at for b in plan] == sorted(b.at for b in plan)


# -- the drain, on a real server ---------------------------------------------------------------


async def hold(ws) -> None:
    await ws.wait_closed()


async def test_a_drain_stops_accepting_then_closes_with_1012_spread_over_the_window():
    async with Lab() as lab:
        server = await lab.serve(hold, name="old")
        clients = [await lab.connect(server.url, name=f"c{i}") for i in range(20)]
        started = time.monotonic()
        closed_at = {}

        async def watch(i, ws):
            await ws.wait_closed()
            closed_at[i] = time.monotonic() - started

        for i, ws in enumerate(clients):
            lab.spawn(watch(i, ws), name=f"watch{i}")
        draining = asyncio.ensure_future(drain(server, window=1.0, every=0.1))
        await asyncio.sleep(0.05)
        with pytest.raises(LabError, match="connection refused"):  # not accepting any more
            await lab.connect(server.url, name="late")
        result = await asyncio.wait_for(draining, scaled(5))
        assert (result.connections, result.closed, result.aborted, result.flushed) == (20, 20, 0, 20)
        assert [b.size for b in result.batches] == [2] * 10
        assert {(ws.close_code, ws.close_reason) for ws in clients} == {(1012, "service restart")}
        times = sorted(closed_at.values())
        assert times[0] < 0.1 + scaled(0.2) and times[-1] >= 0.85  # spread over the window, not at once
        assert max(sum(1 for t in times if k * 0.1 <= t < (k + 1) * 0.1) for k in range(20)) <= 4
        assert result.took < 1.0 + scaled(1.0)
        assert lab.timeline.select(source="old", kind="stopped-accepting")
        assert not server.is_listening


async def test_a_client_that_never_answers_the_close_is_aborted_at_the_deadline():
    async with Lab() as lab:
        server = await lab.serve(hold, name="old")
        proxy = await start_proxy(lab, server, name="proxy")
        stalled = await lab.connect(proxy.url, name="stalled")
        healthy = await lab.connect(server.url, name="healthy")
        await wait_until(lambda: len(server.connections) == 2, 2, "both connections")
        await proxy.set_fault("stall")  # the close frame goes nowhere, no answer comes back
        result = await asyncio.wait_for(drain(server, window=0.2, grace=0.5), scaled(5))
        assert (result.closed, result.aborted) == (1, 1)
        assert healthy.close_code == 1012
        assert 0.1 + 0.5 - 0.05 <= result.took < 0.6 + scaled(1.0)  # the deadline: the last batch, plus grace
        [aborted] = [e for e in lab.timeline.select(source="old", kind="drain") if "aborted" in e.detail]
        assert "aborted 1 still open" in aborted.detail
        del stalled


async def test_a_drain_flushes_what_the_app_published_before_the_close_frame():
    async with Lab() as lab:
        app = ReplayServer(lab.timeline, name="replay")
        server = await lab.serve(app.handler, name="replay")
        ws = await lab.connect(server.url, name="listener")
        await wait_until(lambda: len(app.sessions) == 1, 2, "the session")
        for i in range(300):
            app.publish(f"message {i}")  # queued for the writer: none of it sent yet
        assert app.unsent(server.server.connections.copy().pop()) == 300
        result = await asyncio.wait_for(drain(server, app, window=0), scaled(5))
        got = []
        with pytest.raises(ConnectionClosed):
            while True:
                got.append(decode(await asyncio.wait_for(ws.recv(), scaled(2))))
        assert [m.seq for m in got if isinstance(m, Numbered)] == list(range(300))  # all of it, then 1012
        assert ws.close_code == 1012 and result.flushed == 1


async def test_servers_with_the_same_epoch_publish_the_same_numbered_ticks():
    async with Lab() as lab:
        epoch = time.time() - 10.0  # tick numbers near 200: joined in the middle of the stream
        first, second = ReplayServer(lab.timeline, name="a"), ReplayServer(lab.timeline, name="b")
        lab.spawn(first.publish_ticks(0.05, epoch), name="a-ticks")
        await asyncio.sleep(0.2)
        lab.spawn(second.publish_ticks(0.05, epoch), name="b-ticks")  # starts later, joins the same stream
        await asyncio.sleep(0.3)
        a = {decode(m).seq: decode(m).data for m in first.history}
        b = {decode(m).seq: decode(m).data for m in second.history}
        shared = set(a) & set(b)
        assert len(shared) >= 4 and min(a) < min(b)
        assert all(a[n] == b[n] == f"tick {n}" for n in shared)
        assert abs(max(a) - max(b)) <= 1 and 190 <= min(a) <= 215


# -- wslab serve drains on SIGTERM ---------------------------------------------------------------


async def test_wslab_serve_drains_on_sigterm():
    async with Lab() as lab:
        process = await start_server_process(lab, "old", "--server", "replay", "--broadcast-interval", "0",
                                             "--drain-window", "1")
        clients = [await lab.connect(process.url, name=f"c{i}") for i in range(10)]
        signalled = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        closed_at = []
        for ws in clients:
            await asyncio.wait_for(ws.wait_closed(), scaled(5))
            closed_at.append(time.monotonic() - signalled)
        assert {ws.close_code for ws in clients} == {1012}
        assert max(closed_at) - min(closed_at) >= 0.5  # spread over the window
        assert await asyncio.wait_for(process.process.process.wait(), scaled(5)) == 0
        assert any("drained 10 connections" in line and "10 closed with 1012, 0 aborted" in line
                   for line in process.lines())


async def test_wslab_serve_with_a_drain_window_of_0_closes_everyone_at_once():
    async with Lab() as lab:
        process = await start_server_process(lab, "old", "--server", "naive", "--broadcast-interval", "0",
                                             "--drain-window", "0")
        clients = [await lab.connect(process.url, name=f"c{i}") for i in range(5)]
        os.kill(process.pid, signal.SIGTERM)
        for ws in clients:
            await asyncio.wait_for(ws.wait_closed(), scaled(3))
        assert {ws.close_code for ws in clients} == {1012}
        with pytest.raises(OSError):
            async with connect(process.url, open_timeout=1):
                pass
