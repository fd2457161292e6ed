"""A busy client is not a dead one: how a slow message handler gets a live client dropped by keepalive.

Each cell of the grid runs one lab :class:`~wslab.servers.fixed.FixedServer`
that publishes a small numbered message every ``publish_every`` seconds and
pings every ``ping_interval``, and one client that takes ``handler`` seconds
per message: slower than the server publishes. The client runs in a thread
with its own event loop, so that a handler that blocks (``time.sleep``)
blocks the client's loop and nothing else, as it would in its own process.

What the client does with each message, :data:`MODES`:

=============================  ==================================================================
``await in the loop``          ``async for m in ws: await handle(m)``: an ``async`` handler
``time.sleep in the loop``     ``async for m in ws: handle(m)``, where ``handle`` blocks
``worker task``                ``async for m in ws: worker.put(m)``; a task awaits ``handle``
                               (:class:`~wslab.clients.worker.MessageWorker`): the fix
``worker task, time.sleep``    the same, with a blocking ``handle``: the task blocks the loop
``worker thread``              the same, with ``handle`` in a thread (``in_thread=True``): the fix
=============================  ==================================================================

and the server: ``dead_after=None`` (a pong later than ``ping_timeout`` means
dead: before), or a number (a late pong means slow: the server's fix).

:func:`run_grid` returns a :class:`CellResult` per combination: when the
server dropped the client (or None, if it lasted the whole run), why, and what
the client's backlog held. :func:`grid_table` and :func:`summary` turn results
into tables; they are pure.

Why a ping waits: websockets stops reading from the socket while ``max_queue``
messages wait to be read, and when it reads again it takes everything the
kernel holds, at once. A client that falls behind holds, in the end, its
whole lag in that queue, and a ping that arrives now is answered only after
the client has worked through all of it. The lag grows as long as messages
come faster than the handler takes them, and so does the pong's delay, until
it passes ``ping_timeout``. Only ``max_queue=None`` (never stop reading) or
reading on while the work waits elsewhere keeps the pongs on time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from ..clients.worker import MessageWorker
from ..runtime.lab import Lab
from ..runtime.timeline import EventKind
from ..servers import FixedServer, start_app

__all__ = ["MODES", "Cell", "CellResult", "grid", "grid_table", "run_cell", "run_grid", "summary"]

MODES = ("await in the loop", "time.sleep in the loop", "worker task", "worker task, time.sleep", "worker thread")


@dataclass(frozen=True)
class Cell:
    """One combination: the client's handler time and mode, its ``max_queue``, the server's keepalive."""

    handler: float  # seconds per message
    ping_timeout: float
    max_queue: int | None
    mode: str = MODES[0]
    dead_after: float | None = None  # the server's fix: None before


@dataclass
class CellResult:
    """What happened in one cell.

    Attributes:
        cell: The combination.
        dropped_at: Seconds from the client's connection to the server dropping it; None: never.
        why: The server's reason (``no pong within 0.5 s``), or ``""``.
        handled: Messages the client's handler finished.
        backlog: Messages waiting in the client's own backlog at the end (worker modes).
        late_pongs: How late each pong was that came after ``ping_timeout`` (only with ``dead_after``).
        duration: Seconds the cell ran.
    """

    cell: Cell
    dropped_at: float | None
    why: str
    handled: int
    backlog: int
    late_pongs: list[float] = field(default_factory=list)
    duration: float = 0.0


def grid(handlers: Iterable[float], ping_timeouts: Iterable[float], max_queues: Iterable[int | None], *,
         mode: str = MODES[0], dead_after: float | None = None) -> list[Cell]:
    """Every combination, as :class:`Cell` s."""
    return [Cell(h, t, q, mode, dead_after) for h, t, q in itertools.product(handlers, ping_timeouts, max_queues)]


# -- the client, in a thread of its own --------------------------------------------------------------


async def _client(url: str, cell: Cell, duration: float) -> tuple[int, int]:
    """Read for ``duration`` seconds, handling each message the cell's way. Returns (handled, backlog)."""
    handled = 0
    end = time.monotonic() + duration  # blocking work can't be cancelled: each handler call checks the end

    async def handle_async(_: Any) -> None:
        nonlocal handled
        if time.monotonic() > end:
            raise TimeoutError
        await asyncio.sleep(cell.handler)  # stands for awaited work: a database query, an HTTP call
        handled += 1

    def handle_blocking(_: Any) -> None:
        nonlocal handled
        if time.monotonic() > end:
            raise TimeoutError
        time.sleep(cell.handler)  # stands for blocking work: a CPU-bound parse, a synchronous driver
        handled += 1

    worker: MessageWorker[Any] | None = None
    if cell.mode == "worker task":
        worker = MessageWorker(handle_async)
    elif cell.mode == "worker task, time.sleep":
        worker = MessageWorker(handle_blocking)
    elif cell.mode == "worker thread":
        worker = MessageWorker(handle_blocking, in_thread=True)
    ws = await connect(url, max_queue=cell.max_queue, ping_interval=None, compression=None)
    task = asyncio.create_task(worker.run()) if worker is not None else None
    try:
        async with asyncio.timeout(duration):
            async for message in ws:
                if worker is not None:
                    worker.put(message)
                elif cell.mode == "time.sleep in the loop":
                    handle_blocking(message)
                else:
                    await handle_async(message)
    except (TimeoutError, ConnectionClosed):
        pass
    finally:
        # The run is over: leave at once. A polite close would wait behind the unread messages too.
        ws.transport.abort()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return handled, len(worker) if worker is not None else 0


def _run_client(url: str, cell: Cell, duration: float) -> tuple[int, int]:
    return asyncio.run(_client(url, cell, duration))


# -- the grid -------------------------------------------------------------------------------------------


async def run_cell(lab: Lab, cell: Cell, *, name: str, duration: float = 5.0, publish_every: float = 0.01,
                   ping_interval: float = 0.25, executor: concurrent.futures.Executor | None = None) -> CellResult:
    """One cell: serve, publish, let the client run ``duration`` seconds; when was it dropped, and why?"""
    app = FixedServer(lab.timeline, name, ping_interval=ping_interval, ping_timeout=cell.ping_timeout,
                      dead_after=cell.dead_after, max_buffer=64 * 2**20, send_deadline=60.0)
    server = await start_app(lab, app, name=name, compression=None)
    lab.spawn(app.broadcast_forever(publish_every), name=f"{name}-publisher")
    since = len(lab.timeline)
    started = lab.timeline.now()
    try:
        loop = asyncio.get_running_loop()
        handled, backlog = await loop.run_in_executor(executor, _run_client, server.url, cell, duration)
    finally:
        await lab.close(f"{name}-publisher")
        await lab.close(name)
    # Only what happened while the client ran: once it left, a drop says nothing about it.
    events = [e for e in lab.timeline.events[since:] if e.source == name and e.t <= started + duration]
    drop = next((e for e in events if e.kind == EventKind.ABORT), None)
    late = [e.data["late"] for e in events if e.kind == EventKind.SLOW]
    return CellResult(cell, None if drop is None else drop.t - started, drop.detail if drop else "", handled,
                      backlog, late, lab.timeline.now() - started)


async def run_grid(lab: Lab, cells: Sequence[Cell], *, parallel: int = 6, **options: Any) -> list[CellResult]:
    """Run ``cells``, ``parallel`` at a time (each client in a thread of its own); results in order."""
    gate = asyncio.Semaphore(parallel)
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="busy-client") as pool:

        async def one(i: int, cell: Cell) -> CellResult:
            async with gate:
                return await run_cell(lab, cell, name=f"busy-{i}", executor=pool, **options)

        return list(await asyncio.gather(*(one(i, cell) for i, cell in enumerate(cells))))


def grid_table(results: Iterable[CellResult]) -> list[dict[str, Any]]:
    """One row per cell: the combination, the predicted pong delay, and the outcome."""
    rows = []
    for r in results:
        c = r.cell
        rows.append({
            "handler (ms)": round(c.handler * 1000), "ping_timeout (s)": c.ping_timeout,
            "max_queue": "None" if c.max_queue is None else c.max_queue, "client": c.mode,
            "server": "before" if c.dead_after is None else f"dead_after={c.dead_after:g}",
            "dropped after (s)": "never" if r.dropped_at is None else round(r.dropped_at, 2),
            "latest pong (s)": round(max(r.late_pongs), 2) if r.late_pongs else "-",
            "handled": r.handled, "backlog": r.backlog,
        })
    return rows


def summary(results: Iterable[CellResult]) -> dict[str, Any]:
    """The cells of one mode in one line: how many were dropped, how soon, and the largest backlog."""
    results = list(results)
    dropped = [r.dropped_at for r in results if r.dropped_at is not None]
    first = results[0].cell if results else Cell(0, 0, None)
    return {
        "client": first.mode,
        "server": "before" if first.dead_after is None else f"dead_after={first.dead_after:g} s",
        "cells": len(results),
        "dropped": len(dropped),
        "soonest drop (s)": round(min(dropped), 2) if dropped else "-",
        "median drop (s)": round(sorted(dropped)[len(dropped) // 2], 2) if dropped else "-",
        "largest backlog (messages)": max((r.backlog for r in results), default=0),
    }
