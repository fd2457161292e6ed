"""Deploys, measured: 200 reconnecting clients behind nginx while the old server goes, three ways; and a reload.

:func:`run_deploy` sets up a blue/green deploy on 127.0.0.1 and shuts the old
server down with one :class:`~wslab.servers.drain.Strategy`:

- the **old** server is a process of its own (``python -m wslab serve --server
  replay``), so that ``kill -9`` is a real process death; SIGTERM makes it
  drain (:mod:`wslab.servers.drain`) over its ``--drain-window`` (0: everyone
  gets 1012 at once);
- the **new** server runs here, a :class:`~wslab.servers.replay.ReplayServer`
  that logs every opening handshake it gets;
- **nginx** has both, the new one as a ``backup``: it gets connections only once
  the old one refuses them, as it does from the first step of every strategy;
- both servers publish the same numbered stream (:meth:`ReplayServer.publish_ticks
  <wslab.servers.replay.ReplayServer.publish_ticks>`, one epoch), as if they read
  one feed, so a client that moves over can ask the new one for what it missed;
- the **clients** are :class:`~wslab.clients.reconnect.ReconnectingClient`\\ s, half
  with replay on (``recover=True``), half without.

The run records what happened (:class:`DeployRecord`); :func:`deploy_result`,
pure and tested without sockets, turns it into the numbers the notebook
compares (:class:`DeployResult`). :func:`run_reloads` measures when an
``nginx -s reload`` cuts the tunnels it carries, with and without
``worker_shutdown_timeout``.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from ..clients.policy import CloseEvent, Message
from ..clients.reconnect import ReconnectingClient
from ..runtime.errors import LabError
from ..runtime.lab import Lab
from ..runtime.nginx import start_nginx
from ..runtime.timing import scaled, wait_until
from ..servers.drain import Strategy
from ..servers.process import start_server_process
from ..servers.replay import ReplayServer
from .herd import raise_fd_limit

__all__ = [
    "DeployRecord",
    "DeployResult",
    "ReloadResult",
    "attempts_per_bin",
    "deploy_result",
    "run_deploy",
    "run_reloads",
]


# -- what a run records, and what it means ---------------------------------------------------------


@dataclass
class DeployRecord:
    """What one deploy did, as it happened; every time in seconds on ``time.monotonic()``.

    Attributes:
        strategy: How the old server was shut down.
        n: Clients.
        recover: Per client, whether it asks for replay (``last_seq`` in its URL).
        shutdown_at: When the signal was sent to the old server's process.
        exited_at: When that process had exited.
        closes: Per client, the first close after ``shutdown_at``: ``(t, code, wasClean)``.
        back_at: Per client, when it was open again (on the new server).
        attempts_at_new: When each opening handshake reached the new server.
        from_seq: Per client, the last number it had received at ``shutdown_at``.
        to_seq: A number every client had received by the end.
        received: Per client, the numbers it received.
    """

    strategy: str
    n: int
    recover: list[bool]
    shutdown_at: float = 0.0
    exited_at: float = math.nan
    closes: dict[int, tuple[float, int, bool]] = field(default_factory=dict)
    back_at: dict[int, float] = field(default_factory=dict)
    attempts_at_new: list[float] = field(default_factory=list)
    from_seq: dict[int, int] = field(default_factory=dict)
    to_seq: int = -1
    received: dict[int, set[int]] = field(default_factory=dict)


def attempts_per_bin(times: Sequence[float], since: float, *, width: float = 0.1) -> list[int]:
    """How many of ``times`` fall in each ``width``-second bin from ``since`` on (the earlier ones are left out)."""
    later = [t - since for t in times if t >= since]
    if not later:
        return []
    bins = [0] * (int(max(later) // width) + 1)
    for t in later:
        bins[int(t // width)] += 1
    return bins


@dataclass(frozen=True)
class DeployResult:
    """One strategy's deploy, in numbers.

    Attributes:
        close_codes: How many clients saw each close code (1006: no close frame).
        clean: How many closes were clean (``wasClean``: the closing handshake completed).
        lost_with_replay: Messages the replaying clients never got, all of them together.
        lost_without_replay: The same, for the clients without replay.
        peak_attempts: The most opening handshakes the new server got in one 100 ms bin.
        attempts: The new server's handshakes per 100 ms bin, from the shutdown on.
        all_back_after: Seconds from the shutdown until the last client was open again (nan: not all came back).
        shutdown_took: Seconds from the signal until the old process had exited.
    """

    strategy: str
    n: int
    close_codes: dict[int, int]
    clean: int
    lost_with_replay: int
    lost_without_replay: int
    peak_attempts: int
    attempts: list[int]
    all_back_after: float
    shutdown_took: float

    def row(self) -> dict[str, Any]:
        """The strategy as one table row."""
        return {
            "strategy": self.strategy,
            "close codes seen": ", ".join(f"{code} x{count}" for code, count in sorted(self.close_codes.items())),
            "clean closes": self.clean,
            "lost, replay on": self.lost_with_replay,
            "lost, replay off": self.lost_without_replay,
            "peak attempts / 100 ms": self.peak_attempts,
            "all back after (s)": f"{self.all_back_after:.2f}",
            "shutdown took (s)": f"{self.shutdown_took:.2f}",
        }


def deploy_result(record: DeployRecord) -> DeployResult:
    """What a :class:`DeployRecord` means. Pure: no I/O, no clock.

    A client lost a message if its number is after the one it had at the
    shutdown, up to ``to_seq``, and it never received it.
    """
    lost = {True: 0, False: 0}
    for client in range(record.n):
        start = record.from_seq.get(client)
        if start is None:
            continue
        expected = range(start + 1, record.to_seq + 1)
        got = record.received.get(client, set())
        lost[record.recover[client]] += sum(1 for seq in expected if seq not in got)
    codes = Counter(code for _, code, _ in record.closes.values())
    back = [record.back_at.get(client, math.nan) - record.shutdown_at for client in range(record.n)]
    bins = attempts_per_bin(record.attempts_at_new, record.shutdown_at)
    return DeployResult(
        strategy=record.strategy,
        n=record.n,
        close_codes=dict(codes),
        clean=sum(1 for _, _, clean in record.closes.values() if clean),
        lost_with_replay=lost[True],
        lost_without_replay=lost[False],
        peak_attempts=max(bins, default=0),
        attempts=bins,
        all_back_after=max(back) if back and not any(math.isnan(b) for b in back) else math.nan,
        shutdown_took=record.exited_at - record.shutdown_at,
    )


# -- one deploy ---------------------------------------------------------------------------------


async def run_deploy(
    lab: Lab,
    strategy: str,
    *,
    n: int = 200,
    window: float = 3.0,
    tick: float = 0.2,
    min_delay: float = 0.1,
    deadline: float = 15.0,
) -> DeployRecord:
    """Run one blue/green deploy with ``n`` reconnecting clients behind nginx; see the module's docstring.

    Args:
        strategy: A :class:`~wslab.servers.drain.Strategy` (``"kill -9"``, ``"1012 at once"``, ``"drain"``).
        window: The drain window, for ``"drain"``.
        tick: Seconds between two numbered messages.
        min_delay: The clients' first reconnection delay (full jitter, as notebook 05 recommends).
        deadline: Seconds for each step (connecting everyone, everyone back, the old process exiting), scaled.

    Everything it started is closed before it returns.
    """
    strategy = Strategy(strategy)
    raise_fd_limit(2 * n + 256)
    record = DeployRecord(str(strategy), n, [i % 2 == 0 for i in range(n)])
    epoch = time.time()
    names = ["deploy-new", "deploy-ticks", "deploy-old", "deploy-nginx"]
    clients: list[ReconnectingClient] = []
    try:
        new_app = ReplayServer(lab.timeline, name="deploy-new", history=1000)
        lab.spawn(new_app.publish_ticks(tick, epoch), name="deploy-ticks")

        def handshake(connection: ServerConnection, request: Request) -> None:
            record.attempts_at_new.append(time.monotonic())

        new = await lab.serve(new_app.handler, name="deploy-new", process_request=handshake, backlog=max(128, n),
                              compression=None)
        drain_window = window if strategy == Strategy.DRAIN else 0.0
        old = await start_server_process(lab, "deploy-old", "--server", "replay", "--broadcast-interval", f"{tick}",
                                         "--epoch", repr(epoch), "--drain-window", f"{drain_window}")
        nginx = await start_nginx(lab, [old.url, new], name="deploy-nginx", backups=1)
        clients = [_client(record, i, nginx.url, min_delay) for i in range(n)]
        for i, client in enumerate(clients):
            lab.spawn(client.run(), name=f"deploy-client-{i}")
        await wait_until(lambda: all(c.last_seq is not None for c in clients), deadline,
                         f"{n} clients connected through nginx, each with a message")
        await asyncio.sleep(2 * tick)  # every client in the stream for a while

        record.shutdown_at = time.monotonic()
        record.from_seq = {i: c.last_seq for i, c in enumerate(clients) if c.last_seq is not None}
        os.kill(old.pid, signal.SIGKILL if strategy == Strategy.KILL else signal.SIGTERM)
        await asyncio.wait_for(old.process.process.wait(), scaled(deadline))
        record.exited_at = time.monotonic()
        await wait_until(lambda: len(record.back_at) == n, deadline, f"all {n} clients back on the new server")
        record.to_seq = new_app.next_seq + 1
        await wait_until(lambda: all((c.last_seq or -1) >= record.to_seq for c in clients), deadline,
                         f"every client receiving message {record.to_seq}")
    except asyncio.TimeoutError:
        raise LabError(f"the old server did not exit within {scaled(deadline):g} s of its signal") from None
    finally:
        await asyncio.gather(*(client.close() for client in clients))
        await asyncio.gather(*(lab.close(f"deploy-client-{i}") for i in range(len(clients))))
        for name in names:
            await lab.close(name)
    return record


def _client(record: DeployRecord, i: int, url: str, min_delay: float) -> ReconnectingClient:
    """Client ``i``: reconnects with full jitter, records its messages' numbers, its close, and when it is back."""
    client = ReconnectingClient(url, name=f"deploy-client-{i}", recover=record.recover[i], min_delay=min_delay,
                                max_delay=1.0, factor=2.0, jitter="full", seed=i, record_messages=False,
                                open_timeout=2.0, ping_interval=None, proxy=None, compression=None)
    received = record.received.setdefault(i, set())

    def on_message(message: Message) -> None:
        if message.seq is not None:
            received.add(message.seq)

    def on_close(close: CloseEvent) -> None:
        if record.shutdown_at and i not in record.closes:
            record.closes[i] = (time.monotonic(), close.code, close.was_clean)

    def on_open(first: bool) -> None:
        if not first and record.shutdown_at and i not in record.back_at:
            record.back_at[i] = time.monotonic()

    client.on_message, client.on_close, client.on_open = on_message, on_close, on_open
    return client


# -- a reload --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReloadResult:
    """When one ``nginx -s reload`` cut the tunnels its old worker carried.

    Attributes:
        worker_shutdown_timeout: The setting (None: not set).
        tunnels: Tunnels open at the reload.
        cut_after: Seconds from the SIGHUP until each tunnel that was cut closed, sorted.
        codes: The close codes the clients saw for those.
        watched: Seconds watched after the reload.
        old_workers_left: Old worker processes still running when the watch ended.
    """

    worker_shutdown_timeout: float | None
    tunnels: int
    cut_after: list[float]
    codes: list[int]
    watched: float
    old_workers_left: int

    def row(self) -> dict[str, Any]:
        cut = self.cut_after
        when = f"{cut[0]:.2f}-{cut[-1]:.2f} s after the reload" if cut else "-"
        return {
            "worker_shutdown_timeout": "not set" if self.worker_shutdown_timeout is None
            else f"{self.worker_shutdown_timeout:g} s",
            "tunnels cut": f"{len(cut)}/{self.tunnels} within {self.watched:g} s",
            "when": when,
            "close codes": ", ".join(f"{c} x{k}" for c, k in sorted(Counter(self.codes).items())) or "-",
            "old workers still running": self.old_workers_left,
        }


async def run_reloads(
    lab: Lab, server: Any, timeouts: Sequence[float | None], *, tunnels: int = 20, watch: float = 2.5
) -> list[ReloadResult]:
    """For each ``worker_shutdown_timeout`` in ``timeouts``: an nginx with ``tunnels`` open tunnels to ``server``,
    reloaded; watch ``watch`` seconds for the tunnels being cut. All nginx run at once."""

    async def one(k: int, timeout: float | None) -> ReloadResult:
        name = f"reload-nginx-{k}"
        nginx = await start_nginx(lab, server, name=name, worker_shutdown_timeout=timeout)
        conns: list[ClientConnection] = [await lab.connect(nginx.url, name=f"{name}-t{i}", proxy=None)
                                         for i in range(tunnels)]
        cut: dict[int, float] = {}

        async def watch_one(i: int, ws: ClientConnection) -> None:
            await ws.wait_closed()
            cut[i] = time.monotonic()

        watchers = [asyncio.ensure_future(watch_one(i, ws)) for i, ws in enumerate(conns)]
        reload = await nginx.reload()
        signalled = time.monotonic() - (lab.timeline.now() - reload.signalled_at)
        await asyncio.sleep(max(0.0, signalled + watch - time.monotonic()))
        for task in watchers:
            task.cancel()
        left = len(set(reload.old_workers) & set(nginx.worker_pids()))
        result = ReloadResult(timeout, tunnels, sorted(t - signalled for t in cut.values()),
                              [int(conns[i].close_code or 0) for i in cut], watch, left)
        await asyncio.gather(*(lab.close(f"{name}-t{i}") for i in range(tunnels)))
        await lab.close(name)
        return result

    return list(await asyncio.gather(*(one(k, timeout) for k, timeout in enumerate(timeouts))))
