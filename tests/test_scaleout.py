"""Notebook 07's instruments: clients that write down what they hear, a crowd in worker processes, CPU and memory.

The analyses are pure and tested on hand-made notes; listening, the crowd and
a burst run for real, small, against real servers (the crowd's against a real
Redis, skipped on a laptop without redis-server).
"""

from __future__ import annotations

import asyncio
import os

import pytest

from wslab.runtime.errors import LabError
from wslab.runtime.lab import Lab
from wslab.runtime.redis import REDIS, start_redis
from wslab.servers import FixedServer, start_app
from wslab.servers.backplane import BackplaneServer, start_backplane
from wslab.servers.wire import stamp
from wslab.studies.crowd import burst, cpu_seconds, rss_bytes, start_crowd
from wslab.studies.listeners import Heard, Share, latencies, listen, missing, shares

needs_redis = pytest.mark.skipif(REDIS.skip_reason() is not None, reason=str(REDIS.skip_reason()))


def notes(*pairs: tuple[int, float]) -> list[Heard]:
    return [Heard(seq, sent_at, sent_at + 0.001) for seq, sent_at in pairs]


# -- the analyses, pure --------------------------------------------------------------------------


def test_without_a_backplane_each_group_misses_what_the_other_heard():
    a = notes((0, 1.0), (1, 1.1), (2, 1.2))  # process a numbers from 0 ...
    b = notes((0, 1.05))  # ... and so does process b: the send time tells the two 0s apart
    total, groups = shares([a, a, b])
    assert total == 4
    assert groups == [Share(clients=2, heard=3, missed=1), Share(clients=1, heard=1, missed=3)]
    assert groups[0].fraction_missed == 0.25 and groups[1].fraction_missed == 0.75


def test_with_one_numbering_missing_counts_what_each_client_never_got():
    assert missing([notes((1, 0), (2, 0), (3, 0)), notes((1, 0), (3, 0)), []], 1, 3) == [0, 1, 3]


def test_latencies_are_arrival_minus_send():
    assert latencies([[Heard(1, 10.0, 10.25)], [Heard(1, 10.0, 10.5)]]) == [0.25, 0.5]
    assert shares([]) == (0, [])


def test_cpu_time_and_memory_of_a_process():
    first = cpu_seconds(os.getpid())
    sum(i * i for i in range(300_000))  # burn a little CPU
    assert first is not None and cpu_seconds(os.getpid()) >= first
    assert (rss_bytes(os.getpid()) or 0) > 10 * 2**20  # a Python with websockets loaded: well over 10 MiB
    assert cpu_seconds(2**22 + 12345) is None  # no such process


# -- for real ------------------------------------------------------------------------------------


async def test_listeners_hear_every_numbered_broadcast_with_its_send_time():
    async with Lab() as lab:
        app = FixedServer(lab.timeline, "fixed", keepalive=False)
        server = await start_app(lab, app)
        listeners = await listen(lab, server.url, 5, name="listeners")
        for seq in range(10):
            await app.broadcast(stamp(seq))
        await asyncio.sleep(0.3)
        assert [[h.seq for h in heard] for heard in listeners.heard] == [list(range(10))] * 5
        assert all(0 <= h.arrived - h.sent_at < 1 for heard in listeners.heard for h in heard)
        assert len(listeners) == 5
    assert listeners.heard and "listeners" not in lab.names


async def test_listen_to_nothing_is_a_one_line_lab_error():
    async with Lab() as lab:
        with pytest.raises(LabError, match="could not connect to ws://127.0.0.1:9/"):
            await listen(lab, "ws://127.0.0.1:9/", 3, name="nobody", open_timeout=1)
        assert "nobody" not in lab.names


@needs_redis
@pytest.mark.slow
async def test_a_crowd_in_worker_processes_receives_every_burst_and_stops_with_the_lab():
    async with Lab() as lab:
        redis = await start_redis(lab)
        app = BackplaneServer(lab.timeline, "server", backplane=redis.url, ping_interval=2, ping_timeout=2)
        server = await start_backplane(lab, app)
        publisher = BackplaneServer(lab.timeline, "publisher", backplane=redis.url)
        await start_backplane(lab, publisher)
        crowd = await start_crowd(lab, [server.url], 40, workers=2)
        assert len(app.sessions) == 40 and len(crowd.pids) == 2
        run = await burst(publisher, crowd, 5, {"this process": os.getpid()}, rounds=2)
        assert run.deliveries == 40 * 10 and run.dropped == 0 and run.broadcasts == 10
        assert run.seconds > 0 and run.delivered_per_second > 0 and (run.cpu["this process"] or 0) >= 0
        workers = crowd.workers
    assert all(worker.returncode is not None for worker in workers)
