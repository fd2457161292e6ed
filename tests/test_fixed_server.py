"""FixedServer: no dead session stays in the map, no socket leaks, a stalled client never holds up the others.

Bounds are generous (two shared cores): the tight figures live in benchmarks/bench_fix.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket

import pytest
from websockets.asyncio.client import connect

from wslab import Lab
from wslab.faults.failures import FAILURE_MODES
from wslab.faults.proxy import start_proxy
from wslab.runtime.errors import WaitTimeout
from wslab.runtime.timeline import Timeline
from wslab.runtime.timing import scaled, wait_until
from wslab.servers import SERVERS, BroadcastServer, FixedServer, set_tcp_user_timeout
from wslab.studies.latency import broadcast_latency
from wslab.studies.removal import survival

PING_INTERVAL = 0.2
PING_TIMEOUT = 0.2
# How long each failure mode may leave a session in the fixed server's map (generous, scaled).
BOUNDS = {
    "clean-close": scaled(2.0),
    "killed": scaled(2.0),
    "reset": scaled(2.0),
    "vanished": PING_INTERVAL + PING_TIMEOUT + scaled(2.0),
}


async def test_fixed_server_removes_the_session_after_each_failure_mode():
    results = await survival("fixed", bounds=BOUNDS, ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT)
    assert {r.mode for r in results} == set(FAILURE_MODES)
    for r in results:
        assert r.survived, f"{r.mode}: session still held after {BOUNDS[r.mode]} s"


async def test_each_step_of_the_fix_is_needed():
    naive, removal = await asyncio.gather(
        survival("naive", bounds=BOUNDS, modes=("reset", "vanished"), label="naive"),
        survival("removal", bounds=BOUNDS, modes=("reset", "vanished"), label="removal"),
    )
    assert not any(r.survived for r in naive)  # the seed: nothing is ever removed
    removal = {r.mode: r.survived for r in removal}
    assert removal == {"reset": True, "vanished": False}  # a finally block cannot see a vanished peer


def open_fds() -> int | None:
    """Open file descriptors of this process, from /proc (None where /proc is missing)."""
    with contextlib.suppress(OSError):
        return len(os.listdir("/proc/self/fd"))
    return None


@pytest.mark.deadline(120)
async def test_random_cycles_leave_no_session_and_no_socket():
    rng = random.Random(3)
    fds_before = open_fds()
    async with Lab() as lab:
        app = FixedServer(lab.timeline, ping_interval=0.1, ping_timeout=0.1, send_deadline=0.2)
        server = await lab.serve(app.handler, name="fixed")
        proxy = await start_proxy(lab, server, name="proxy")
        lab.spawn(app.broadcast_forever(0.05, b"x" * 256), name="broadcast")

        async def cycle(n: int) -> None:
            fate = rng.choice(("close", "abort", "reset", "stall", "stop-reading"))
            via_proxy = fate in ("reset", "stall") or rng.random() < 0.5
            name = f"client-{n}"
            ws = await lab.connect(proxy.url if via_proxy else server.url, name=name)
            await asyncio.sleep(rng.uniform(0, 0.15))
            if fate == "close":
                await ws.close()
            elif fate == "abort":  # the client's process dies: its kernel sends a FIN
                ws.transport.abort()
            elif fate == "stop-reading":
                ws.transport.pause_reading()
            else:
                conn = proxy.connections[-1] if proxy.connections else None
                for c in proxy.connections:  # the proxy connection whose client port is ours
                    if c.client.transport.get_extra_info("peername")[1] == ws.transport.get_extra_info("sockname")[1]:
                        conn = c
                if conn is not None:
                    await proxy.set_fault(fate, conn=conn)
            await asyncio.sleep(rng.uniform(0, 0.1))
            ws.transport.abort()  # whatever happened, this client is gone now
            await lab.close(name)

        for batch in range(10):  # 200 cycles, 20 at a time
            await asyncio.gather(*(cycle(batch * 20 + i) for i in range(20)))

        with contextlib.suppress(WaitTimeout):  # the asserts below say what is left
            await wait_until(lambda: not app.sessions and not server.connections, 5.0, "every session ending")
        assert app.sessions == {}
        assert app.outboxes == {}
        assert server.connections == set()
        # Only stalled relays remain: the proxy plays a dead network path, which never reads again.
        assert all(c.fault == "stall" for c in proxy.connections)
    await asyncio.sleep(0.1)
    fds_after = open_fds()
    if fds_before is None:
        pytest.skip("no /proc/self/fd here: sessions checked, open sockets not counted")
    assert fds_after <= fds_before, f"{fds_after - fds_before} file descriptors left open"


async def test_a_stalled_client_never_delays_a_healthy_one_by_more_than_the_send_deadline():
    send_deadline = 0.2
    app = FixedServer(Timeline(), ping_interval=0.5, ping_timeout=0.5, send_deadline=send_deadline)
    run = await broadcast_latency(app, clients=12, stalled=3, duration=1.5, interval=0.01, payload_size=8192)
    assert run.delivered == 1.0
    assert max(run.latencies) < send_deadline + scaled(0.5), f"worst healthy latency {max(run.latencies):.3f} s"
    assert run.removed == 3
    aborts = app.timeline.select(source=app.name, kind="abort")
    assert len(aborts) == 3
    assert all("send took over" in e.detail or "would hold" in e.detail for e in aborts)
    assert run.held_peak <= app.max_buffer * 12  # never more than the bound per client


async def test_broadcast_holds_ever_more_bytes_for_a_stalled_client():
    app = BroadcastServer(Timeline(), ping_interval=20, ping_timeout=20)  # websockets' defaults
    run = await broadcast_latency(app, clients=4, stalled=1, duration=1.5, interval=0.01, payload_size=8192)
    assert run.removed == 0
    assert run.held_end > 2 * run.held[len(run.held) // 3][1] > 0  # still growing at the end


def test_the_registry_lists_every_variant_and_builds_it():
    ablation = ["naive", "removal", "keepalive", "fixed", "broadcast"]
    assert [name for name in SERVERS if name in ablation] == ablation
    for name in ablation:
        factory, doc = SERVERS[name]
        app = factory(timeline=Timeline(), name=name)
        assert hasattr(app, "handler") and hasattr(app, "sessions") and doc


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="TCP_USER_TIMEOUT is Linux-only")
async def test_tcp_user_timeout_is_set_on_the_accepted_socket():
    seen = []

    async def handler(ws):
        assert set_tcp_user_timeout(ws, 1.5)
        sock = ws.transport.get_extra_info("socket")
        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT))

    async with Lab() as lab:
        server = await lab.serve(handler, name="s")
        async with connect(server.url) as ws:
            await asyncio.wait_for(ws.wait_closed(), scaled(2))
    assert seen == [1500]


async def test_a_clean_close_is_timed_from_the_close_however_many_ticks_the_client_left_unread():
    # More than 16 unread broadcasts before the client closes: websockets' default max_queue would
    # stop it reading its socket, its close() would wait close_timeout (10 s) for the server's
    # reply, and the removal would be timed 10 s late. survival() connects its clients without it.
    [result] = await survival("removal", modes=("clean-close",), bounds={"clean-close": 1.0}, broadcast_every=0.002)
    assert result.survived, f"removed after {result.removed_after} s"
