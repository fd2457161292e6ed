"""Several server processes sharing broadcasts through a real Redis (wslab.servers.backplane).

Every test runs Debian's redis-server, started by the lab. On a laptop without
it they skip, with one line that says how to install it; in CI (CI=true) they
run, and a missing redis-server fails them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

import wslab.runtime.redis
from wslab.clients.reconnect import Message, ReconnectingClient
from wslab.runtime.errors import LabError
from wslab.runtime.lab import Lab
from wslab.runtime.programs import free_port
from wslab.runtime.redis import REDIS, start_redis
from wslab.runtime.timing import scaled, wait_until
from wslab.servers.backplane import BackplaneServer, start_backplane
from wslab.servers.process import start_server_process
from wslab.servers.redisbus import unpack
from wslab.servers.wire import Numbered, Resync, decode

needs_redis = pytest.mark.skipif(REDIS.skip_reason() is not None, reason=str(REDIS.skip_reason()))


# -- helpers ------------------------------------------------------------------------------


class Ledger:
    """A ReconnectingClient that writes down every number it receives, and fails over between URLs.

    Without a load balancer, the client spreads itself: it knows every server's
    URL and, when its connection closes or an attempt fails, tries the next one.
    """

    def __init__(self, lab: Lab, name: str, urls: list[str], first: int = 0, *, recover: bool = True) -> None:
        self.urls = urls
        self.seqs: list[int] = []
        self.client = ReconnectingClient(urls[first], name=name, timeline=lab.timeline, min_delay=0.05,
                                         max_delay=0.5, open_timeout=2.0, recover=recover, record_messages=False)
        self.client.on_message = self._message
        self.client.on_close = self.client.on_error = self._next_url
        lab.spawn(self.client.run(), name=name)

    def _message(self, message: Message) -> None:
        if message.seq is not None:
            self.seqs.append(message.seq)

    def _next_url(self, _: object) -> None:
        self.client.url = self.urls[(self.urls.index(self.client.url) + 1) % len(self.urls)]

    def upto(self, last: int) -> list[int]:
        """The numbers received, up to ``last``."""
        return [seq for seq in self.seqs if seq <= last]


async def backplane_app(lab: Lab, url: str, name: str, **options) -> BackplaneServer:
    app = BackplaneServer(lab.timeline, name, backplane=url, **options)
    await start_backplane(lab, app)
    return app


async def publish_all(app: BackplaneServer, count: int, interval: float = 0.0) -> list[int]:
    seqs = []
    for n in range(count):
        seq = await app.publish(f"m{n}")
        assert seq is not None, f"publish {n} failed: {app!r}"
        seqs.append(seq)
        await asyncio.sleep(interval)
    return seqs


async def publish_past(app: BackplaneServer, ledgers: list[Ledger], last: int) -> None:
    """Broadcast until every client is live past ``last``: what it lacks of the ledger by then, it never gets."""
    async def everyone_past() -> bool:
        await app.publish("after the ledger")
        return all(ledger.seqs and ledger.seqs[-1] > last for ledger in ledgers)

    await wait_until(everyone_past, 15, f"every client past number {last}", poll=0.02)


async def recv_all(ws, count: int) -> list:
    return [decode(await asyncio.wait_for(ws.recv(), scaled(5))) for _ in range(count)]


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def children_of(pid: int) -> list[int]:
    """Linux: the processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


# -- the program -------------------------------------------------------------------------------


def test_a_missing_redis_server_skips_with_the_install_command_on_a_laptop_and_fails_in_ci(monkeypatch):
    missing = dataclasses.replace(REDIS, executables=("/nonexistent/redis-server",), env_var=None)
    monkeypatch.delenv("CI", raising=False)
    reason = missing.skip_reason()
    assert reason is not None and "sudo apt install redis-server" in reason and "brew install redis" in reason
    monkeypatch.setenv("CI", "true")
    assert missing.skip_reason() is None  # in CI: no skip, the test runs and fails
    with pytest.raises(LabError, match="apt install redis-server"):
        missing.require()


@needs_redis
async def test_start_redis_tries_another_port_when_its_port_was_taken(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = iter([busy])
        monkeypatch.setattr(wslab.runtime.redis, "free_port", lambda: next(ports, None) or free_port())
        async with Lab() as lab:
            redis = await start_redis(lab)
            assert redis.port != busy and await redis.client().ping()
            taken = lab.timeline.select(source="redis-server", kind="exited")[0]
            assert taken.detail == f"port {busy} was taken: trying another"
            with pytest.raises(LabError, match=f"Failed listening on port {busy}"):
                await start_redis(lab, name="pinned", port=busy)  # a port you chose is not replaced


# -- the frame ------------------------------------------------------------------------------


def test_unpack_gives_the_number_and_the_frame_as_sent():
    assert unpack(b"t42 81237.500000 hello") == (42, "42 81237.500000 hello")
    assert unpack(b"b7 1.000000 \x00\xff") == (7, b"7 1.000000 \x00\xff")


@needs_redis
async def test_frames_arrive_in_the_labs_wire_format_text_and_binary():
    async with Lab() as lab:
        redis = await start_redis(lab)
        app = await backplane_app(lab, redis.url, "p0")
        server = lab["p0"]
        ws = await lab.connect(server.url, name="c")
        text_seq = await app.publish("hello everyone")
        binary_seq = await app.publish(b"\x00\xffraw")
        text, binary = await asyncio.wait_for(ws.recv(), scaled(5)), await asyncio.wait_for(ws.recv(), scaled(5))
        assert isinstance(text, str) and isinstance(binary, bytes)
        first, second = decode(text), decode(binary)
        assert isinstance(first, Numbered) and isinstance(second, Numbered)
        assert (first.seq, first.data) == (text_seq, "hello everyone")
        assert (second.seq, second.data) == (binary_seq, b"\x00\xffraw")
        assert 0 <= time.monotonic() - first.sent_at < scaled(5)  # the same monotonic clock, one machine


# -- fan-out ---------------------------------------------------------------------------------


@needs_redis
async def test_fan_out_reaches_every_client_of_every_process_in_one_order():
    async with Lab() as lab:
        redis = await start_redis(lab)
        apps = [await backplane_app(lab, redis.url, f"p{i}") for i in range(2)]
        clients = [await lab.connect(lab[f"p{i % 2}"].url, name=f"c{i}") for i in range(6)]
        published = []
        for n in range(50):
            published.append(await apps[n % 2].publish(f"from p{n % 2}: {n}"))
        for ws in clients:
            frames = await recv_all(ws, 50)
            assert [f.seq for f in frames] == published == list(range(published[0], published[0] + 50))
            assert [f.data for f in frames] == [f"from p{n % 2}: {n}" for n in range(50)]
        assert all(app.delivered == 50 and app.lost == 0 for app in apps)


@needs_redis
async def test_fan_out_between_two_real_server_processes():
    async with Lab() as lab:
        redis = await start_redis(lab)
        procs = [await start_server_process(lab, f"p{i}", "--server", "backplane", "--backplane", redis.url,
                                            "--broadcast-interval", "0.05") for i in range(2)]
        for i, proc in enumerate(procs):
            ws = await lab.connect(proc.url, name=f"c{i}")
            frames = await recv_all(ws, 30)
            seqs = [f.seq for f in frames]
            assert seqs == list(range(seqs[0], seqs[0] + 30)), "one numbering, no gap"
            publishers = {f.data.rsplit(" pid ", 1)[1] for f in frames}
            assert publishers == {str(p.pid) for p in procs}, "each client gets both processes' broadcasts"
        assert not any("Traceback" in line for proc in procs for line in proc.lines())


# -- replay across processes -------------------------------------------------------------------


@needs_redis
@pytest.mark.slow
async def test_kill_9_of_one_process_mid_broadcast_loses_nothing_with_replay():
    async with Lab() as lab:
        redis = await start_redis(lab)
        procs = [await start_server_process(lab, f"p{i}", "--server", "backplane", "--backplane", redis.url,
                                            "--broadcast-interval", "0") for i in range(2)]
        publisher = await backplane_app(lab, redis.url, "publisher")
        urls = [p.url for p in procs]
        replay = [Ledger(lab, f"replay{i}", urls, first=i % 2) for i in range(6)]
        no_replay = [Ledger(lab, f"no-replay{i}", urls, first=0, recover=False) for i in range(2)]
        for ledger in replay + no_replay:
            await ledger.client.wait_open()

        published = []
        for n in range(1000):
            if n == 300:
                await procs[0].kill()  # kill -9, mid-broadcast
            published += await publish_all(publisher, 1, interval=0.005)
        await publish_past(publisher, replay + no_replay, published[-1])

        for ledger in replay:
            assert ledger.upto(published[-1]) == published, f"{ledger.client.name}: lost or duplicated messages"
            assert ledger.client.gaps == [] and ledger.client.duplicates == 0
        for ledger in replay[::2] + no_replay:  # the clients of p0
            assert ledger.client.opens >= 2 and ledger.client.url == urls[1], "moved to p1, the survivor"
        # The control: the same kill, without replay, loses what was broadcast while they were away.
        for ledger in no_replay:
            received = ledger.upto(published[-1])
            assert len(received) < len(published) and set(received) <= set(published)


@needs_redis
async def test_a_gap_older_than_the_stream_gets_resync_then_what_the_stream_holds():
    async with Lab() as lab:
        redis = await start_redis(lab)
        app = await backplane_app(lab, redis.url, "p0", maxlen=100)
        published = await publish_all(app, 500)
        await wait_until(lambda: app.last_seq == published[-1], 5, "p0 delivered every broadcast")
        oldest = int((await redis.client().xrange(app.stream, count=1))[0][0].split(b"-")[1])
        assert 100 <= published[-1] - oldest + 1 < 500, "MAXLEN ~ 100 trimmed the stream"

        ws = await lab.connect(f"{lab['p0'].url}/?last_seq=5", name="late")
        resync, *frames = await recv_all(ws, 1 + published[-1] - oldest + 1)
        assert resync == Resync(missed=(6, oldest - 1), next_seq=oldest)
        assert [f.seq for f in frames] == list(range(oldest, published[-1] + 1))

        ws = await lab.connect(f"{lab['p0'].url}/?last_seq={published[-1] - 3}", name="recent")
        assert [f.seq for f in await recv_all(ws, 3)] == published[-3:], "a gap the stream holds: replayed"

        ws = await lab.connect(f"{lab['p0'].url}/?last_seq={published[-1] + 50}", name="future")
        assert await recv_all(ws, 1) == [Resync(missed=None, next_seq=published[-1] + 1)]
        assert app.resyncs == 2 and app.replayed == (published[-1] - oldest + 1) + 3


@needs_redis
async def test_a_stream_entry_packed_some_other_way_is_skipped_and_the_replay_goes_on():
    async with Lab() as lab:
        redis = await start_redis(lab)
        app = await backplane_app(lab, redis.url, "p0")
        ours = await publish_all(app, 2)
        # Another publisher on the same keys (an older version, say): it takes a number from the
        # counter, as PUBLISH does, but packs the frame its own way.
        admin = redis.client()
        theirs = await admin.incr(app.counter)
        await admin.xadd(app.stream, {"f": f"{theirs} packed some other way"}, id=f"0-{theirs}")
        ours += await publish_all(app, 2)
        await wait_until(lambda: app.last_seq == ours[-1], 5, "p0 delivered every broadcast")

        ws = await lab.connect(f"{lab['p0'].url}/?last_seq=0", name="resuming")
        assert [f.seq for f in await recv_all(ws, 4)] == ours, "replayed around the entry that is not ours"
        live = await app.publish("live")
        assert [f.seq for f in await recv_all(ws, 1)] == [live], "and then live: the session is not stuck"
        ignored = [e.detail for e in lab.timeline.select(source="p0", kind="log")]
        assert ignored == [f"ignored stream entry: not a backplane frame: b'{theirs} packed some other way'"]


# -- Redis going away ---------------------------------------------------------------------------


@needs_redis
async def test_a_lost_subscription_is_at_most_once_and_the_stream_recovers_it():
    async with Lab() as lab:
        redis = await start_redis(lab)
        publisher = await backplane_app(lab, redis.url, "publisher")
        # A long first backoff: whatever is published meanwhile misses pub/sub for sure.
        with_stream = await backplane_app(lab, redis.url, "with-stream", min_delay=0.3, seed=1)
        pubsub_only = await backplane_app(lab, redis.url, "pubsub-only", min_delay=0.3, seed=1, catch_up=False)
        full = Ledger(lab, "full", [lab["with-stream"].url])
        partial = Ledger(lab, "partial", [lab["pubsub-only"].url])
        await full.client.wait_open()
        await partial.client.wait_open()

        admin = redis.client()
        published = await publish_all(publisher, 50, interval=0.002)
        subscriptions = await admin.client_list(_type="pubsub")
        for entry in subscriptions:
            if entry["name"] in ("with-stream", "pubsub-only"):
                await admin.client_kill_filter(_id=entry["id"])  # CLIENT KILL ID: that connection only
        published += await publish_all(publisher, 150, interval=0.002)
        await wait_until(lambda: full.seqs[-1:] == partial.seqs[-1:] == published[-1:], 10, "both have the last")

        assert with_stream.outages and pubsub_only.outages, "both subscriptions were really cut"
        assert full.seqs == published and full.client.gaps == [] and with_stream.caught_up > 0
        assert partial.client.gaps and len(partial.seqs) == len(published) - partial.client.sequence.missed
        assert full.client.opens == partial.client.opens == 1, "the WebSocket connections never noticed"


@needs_redis
async def test_a_redis_restart_does_not_crash_a_server_process_and_fan_out_comes_back():
    async with Lab() as lab:
        redis = await start_redis(lab)
        proc = await start_server_process(lab, "p1", "--server", "backplane", "--backplane", redis.url,
                                          "--broadcast-interval", "0")
        publisher = await backplane_app(lab, redis.url, "p0")
        remote, local = Ledger(lab, "remote", [proc.url]), Ledger(lab, "local", [lab["p0"].url])
        await remote.client.wait_open()
        await local.client.wait_open()
        before = await publish_all(publisher, 20)
        await wait_until(lambda: remote.seqs == local.seqs == before, 5, "fan-out before the restart")

        restart = lab.spawn(redis.restart(downtime=0.5), name="restart")
        await wait_until(lambda: not publisher.connected, 5, "p0 noticed Redis is gone")
        assert await publisher.publish("while Redis is down") is None and publisher.lost == 1
        await restart
        await publisher.wait_connected(10)
        after = await publish_all(publisher, 20)
        assert after == list(range(1, 21)), "the new Redis numbers from 1 again"
        # p1 may subscribe again after some of these: it reads them from the new stream (catch-up).
        await wait_until(lambda: remote.seqs[20:] == local.seqs[20:] == after, 10, "fan-out after the restart")
        assert remote.client.gaps == local.client.gaps == [], "told to resync, then every new broadcast"

        assert proc.running, "the server process is alive"
        assert remote.client.opens == local.client.opens == 1, "sessions were kept through the outage"
        lines = proc.lines()
        assert any("backplane-down" in line for line in lines) and any("backplane-up" in line for line in lines)
        assert not any("Traceback" in line for line in lines), "\n".join(lines)


@needs_redis
async def test_a_client_that_resumes_while_redis_is_down_is_told_to_come_back_later():
    async with Lab() as lab:
        redis = await start_redis(lab)
        app = await backplane_app(lab, redis.url, "p0")
        published = await publish_all(app, 10)
        await wait_until(lambda: app.last_seq == published[-1], 5, "p0 delivered every broadcast")
        staying = await lab.connect(lab["p0"].url, name="staying")
        await redis.kill()
        await wait_until(lambda: not app.connected, 5, "p0 noticed Redis is gone")

        ws = await lab.connect(f"{lab['p0'].url}/?last_seq=3", name="resuming")
        with pytest.raises(ConnectionClosed) as caught:
            await asyncio.wait_for(ws.recv(), scaled(5))
        assert caught.value.rcvd is not None and caught.value.rcvd.code == 1013  # try again later
        fresh = await lab.connect(lab["p0"].url, name="fresh")  # without last_seq: served, live only
        await asyncio.sleep(0.2)
        assert staying.state.name == fresh.state.name == "OPEN"


# -- closing -----------------------------------------------------------------------------------------


@needs_redis
async def test_lab_close_leaves_no_redis_server_and_no_server_process_behind():
    lab = Lab()
    try:
        redis = await start_redis(lab)
        pids = [redis.pid]
        await redis.restart(downtime=0.1)
        pids.append(redis.pid)
        shared = await start_server_process(lab, "shared", "--server", "backplane", "--backplane", redis.url)
        # Without --backplane, a server process starts a redis-server of its own, as its child.
        alone = await start_server_process(lab, "alone", "--server", "backplane")
        pids += [shared.pid, alone.pid, *children_of(alone.pid)]
        assert len(pids) == 5 and all(is_running(pid) for pid in pids[1:])
        directories = [redis.process.directory, shared.process.directory, alone.process.directory]
    finally:
        await lab.close()
    assert not [pid for pid in pids if is_running(pid)]
    assert not [d for d in directories if d.exists()]
