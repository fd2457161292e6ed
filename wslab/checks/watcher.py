"""Run a student's connection handler inside a check, and catch everything it raises.

A check must report a student's exception in the row where it happened, in
one line, never as a traceback and never not at all. Two places hide them:

- the handler itself: websockets (and :class:`~wslab.runtime.lab.LabServer`)
  log a crash and close with 1011, and a check that only looks at the
  session map never sees it, for example a ``KeyError`` from removing a
  session twice, after the session is gone;
- a task the handler started (a pinger): when it dies of an exception, asyncio
  only logs "Task exception was never retrieved", whenever the task is
  garbage-collected.

:class:`HandlerWatcher` wraps the handler to catch the first, and notes every
task created while a handler runs (a loop task factory, with a context
variable that tasks inherit) to catch the second, by connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..runtime.lab import Handler
from ..runtime.timing import CLOSE_DEADLINE
from .report import describe_error

__all__ = ["HandlerWatcher", "short_name"]

# The connection whose handler is running. A task copies the context it is created in, so a task
# started by the handler carries its connection too.
_CONNECTION: contextvars.ContextVar[ServerConnection | None] = contextvars.ContextVar("wslab_check_conn", default=None)


def short_name(function: Any, default: str = "handler") -> str:
    """``"handler"`` or ``"NaiveServer.handler"``: a qualified name without ``<locals>``."""
    return getattr(function, "__qualname__", default).rsplit("<locals>.", 1)[-1]


class HandlerWatcher:
    """Serve :meth:`handle` instead of the handler; read what happened in its attributes.

    Attributes:
        errors: Per connection, one line per exception raised by the handler
            or by a task it started (ending a handler with ``ConnectionClosed``
            is normal; letting it out of a task is not).
        started: Every connection the handler ran on, in order.
        ended: The connections whose handler has returned or raised.

    Args:
        handler: The student's ``async def handler(ws)``.
        hints: Words to add after an exception of a given type, e.g.
            ``{KeyError: " (removing twice?)"}``.
    """

    def __init__(self, handler: Handler, hints: Mapping[type[BaseException], str] | None = None) -> None:
        self.handler = handler
        self.hints = dict(hints or {})
        self.errors: dict[ServerConnection, list[str]] = {}
        self.started: list[ServerConnection] = []
        self.ended: set[ServerConnection] = set()
        self._tasks: list[tuple[asyncio.Future[Any], ServerConnection]] = []

    def _error(self, ws: ServerConnection, where: str, exc: BaseException) -> None:
        hint = next((words for kind, words in self.hints.items() if isinstance(exc, kind)), "")
        self.errors.setdefault(ws, []).append(describe_error(f"{where}()", exc) + hint)

    async def handle(self, ws: ServerConnection) -> None:
        """The handler to serve: runs the student's, and records what it raises."""
        _CONNECTION.set(ws)  # this connection's own task, so its own context: nothing to reset
        self.started.append(ws)
        try:
            await self.handler(ws)
        except Exception as exc:
            if not isinstance(exc, ConnectionClosed):
                self._error(ws, short_name(self.handler), exc)
            raise  # the server records it and closes with 1011, as websockets would
        finally:
            self.ended.add(ws)

    @contextlib.contextmanager
    def watching_tasks(self) -> Iterator[None]:
        """While inside, note every task created by a running handler, with its connection."""
        loop = asyncio.get_running_loop()
        previous = loop.get_task_factory()

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
            task = previous(loop, coro, **kwargs) if previous else asyncio.Task(coro, loop=loop, **kwargs)
            ws = _CONNECTION.get()
            if ws is not None:
                self._tasks.append((task, ws))
            return task

        loop.set_task_factory(factory)
        try:
            yield
        finally:
            loop.set_task_factory(previous)

    def collect_task_errors(self) -> None:
        """Record what the finished tasks raised (retrieved: asyncio won't log it later)."""
        for task, ws in self._tasks:
            error = task.exception() if task.done() and not task.cancelled() else None
            if error is not None and isinstance(task, asyncio.Task):
                self._error(ws, short_name(task.get_coro(), task.get_name()), error)
        self._tasks = [(task, ws) for task, ws in self._tasks if not task.done()]

    async def stop_tasks(self) -> None:
        """Cancel the tasks still running: the check is about to close their connections."""
        pending = [task for task, _ in self._tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CLOSE_DEADLINE)
        for task in pending:  # retrieve what they raised meanwhile, so that nothing is logged later
            if task.done() and not task.cancelled():
                task.exception()
        self._tasks = []
