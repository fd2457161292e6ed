"""Slow work off the reading loop: a queue, and a worker that takes messages from it.

A client that handles each message before it reads the next one stops
reading while it works. When messages come faster than it handles them,
websockets' receive queue fills (``max_queue`` frames), the connection stops
reading from the socket, and everything behind, the server's pings included,
waits in the kernel. The pong goes out late, and a keepalive drops a client
that is alive, only busy. Notebook 08 measures it.

:class:`MessageWorker` keeps the reading going: the reading loop only
:meth:`~MessageWorker.put`\\ s each message in a queue, which never waits,
and :meth:`~MessageWorker.run`, a task of its own, handles them one by one::

    worker = MessageWorker(handle)            # async def handle(message): ...
    lab.spawn(worker.run(), name="worker")
    async for message in ws:
        worker.put(message)                   # or: client.on_message = worker.put

Blocking work (``time.sleep``, a CPU-bound parse, a synchronous database
call) blocks the event loop itself: while it runs, nothing else does. The
worker gives the loop a turn between two messages, so the reading loop (and
the pong it owes) waits one handler call at most, not the whole backlog; but
every other task waits too, and one call longer than ``ping_timeout`` still
gets the client dropped. ``in_thread=True`` runs the handler in a thread
(``asyncio.to_thread``), and the loop stays free.

The queue is the client's own backlog: bounded by ``maxsize``, the oldest
message is dropped when a new one comes and the queue is full (``dropped``
counts them), so a client that can never catch up does not hold unbounded
memory. With numbered messages it can tell what it lost and resync.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

__all__ = ["MessageWorker"]

T = TypeVar("T")


class MessageWorker(Generic[T]):
    """A backlog of messages and a task that handles them, so that reading never waits for the handler.

    Args:
        handle: Called with each message, in order: an ``async def`` (awaited), or a plain function.
        in_thread: Run a plain ``handle`` in a thread, so that blocking work does not block the loop.
        maxsize: Messages the backlog holds at most; the oldest is dropped beyond. None: no bound.

    Attributes:
        handled: Messages handled so far.
        dropped: Messages dropped because the backlog was full.
        peak: The longest the backlog has been.
    """

    def __init__(self, handle: Callable[[T], Awaitable[Any] | Any], *, in_thread: bool = False,
                 maxsize: int | None = None) -> None:
        if maxsize is not None and maxsize < 1:
            raise ValueError(f"maxsize must be at least 1 (or None), not {maxsize!r}")
        self.handle = handle
        self.in_thread = in_thread
        self.backlog: collections.deque[T] = collections.deque(maxlen=maxsize)
        self.handled = 0
        self.dropped = 0
        self.peak = 0
        self._ready = asyncio.Event()

    def put(self, message: T) -> None:
        """Add ``message`` to the backlog. Never waits: it is called from the reading loop."""
        if self.backlog.maxlen is not None and len(self.backlog) == self.backlog.maxlen:
            self.dropped += 1  # the deque drops the oldest by itself
        self.backlog.append(message)
        self.peak = max(self.peak, len(self.backlog))
        self._ready.set()

    async def run(self) -> None:
        """Handle the backlog, message by message, until cancelled."""
        while True:
            await self._ready.wait()
            while self.backlog:
                message = self.backlog.popleft()
                if self.in_thread:
                    await asyncio.to_thread(self.handle, message)
                else:
                    result = self.handle(message)
                    if inspect.isawaitable(result):
                        await result
                self.handled += 1
                # Let the loop run between two messages, whatever handle did: the reading loop (and
                # the pong it owes) waits at most one handle() call, not the whole backlog.
                await asyncio.sleep(0)
            self._ready.clear()

    def __len__(self) -> int:
        return len(self.backlog)

    def __repr__(self) -> str:
        return f"<MessageWorker {len(self)} waiting, {self.handled} handled, {self.dropped} dropped>"
