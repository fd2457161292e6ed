"""The lab runtime: start servers, proxies, clients and tasks; close them all with one call.

In a notebook::

    lab = await wslab.new_lab()             # closes whatever an earlier run started
    server = await lab.serve(handler, name="echo")
    ws = await lab.connect(server.url, name="alice")
    ...
    await lab.close()

In a script, the same object is an async context manager::

    async with wslab.Lab() as lab:
        ...

Everything is named. Starting something under a name that is already taken
closes the old one first, so re-running a notebook cell never fails with
"address already in use" and never leaves a socket or a task behind. Every
server binds to 127.0.0.1 unless told otherwise, on a free port unless told
otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.frames import CloseCode

from .errors import LabError, bind_error
from .timeline import Timeline, TimelineLogHandler, describe_exception
from .timing import CLOSE_DEADLINE, abort_all, close_within, wait_until

__all__ = [
    "Lab", "LabServer", "Restart", "new_lab", "current_lab", "check_url", "host_port", "Handler",
    "running_tasks", "tasks_left",
]

Handler = Callable[[ServerConnection], Awaitable[None]]


def check_url(url: str) -> str:
    """Return ``url`` if it is a ``ws://`` or ``wss://`` URL with a host, else raise LabError."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        hint = " (an https:// page needs wss://)" if parts.scheme in ("http", "https") else ""
        raise LabError(f"{url!r} is not a WebSocket URL: it must start with ws:// or wss://{hint}")
    try:
        port = parts.port
    except ValueError:
        raise LabError(f"{url!r} has an invalid port number") from None
    if not parts.hostname:
        raise LabError(f"{url!r} has no host: write it like ws://127.0.0.1:8765")
    del port
    return url


class _ConnectionLabels:
    """Short labels for connections (c1, c2, ...) so tables stay readable."""

    def __init__(self) -> None:
        # Weak keys, not id(ws): once a connection is garbage-collected, a new one
        # can get the same id() and would inherit the old label (and its events).
        self._labels: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._count = 0

    def __call__(self, ws: Any) -> str:
        label = self._labels.get(ws)
        if label is None:
            self._count += 1
            label = self._labels[ws] = f"c{self._count}"
        return label


@dataclass(frozen=True)
class Restart:
    """When a :meth:`LabServer.restart` stopped listening and listened again, in timeline seconds."""

    down_at: float
    up_at: float

    @property
    def downtime(self) -> float:
        return self.up_at - self.down_at


class LabServer:
    """A websockets server run by the lab, with its connections recorded on the timeline.

    Attributes:
        url: ``ws://127.0.0.1:PORT``.
        port: The port, kept across :meth:`restart`.
        handler: The connection handler (your code).
    """

    close_rank = 3  # closed after tasks, proxies and clients: see Lab.close

    def __init__(self, lab: Lab, name: str, handler: Handler, host: str, port: int, options: dict) -> None:
        self.lab = lab
        self.name = name
        self.handler = handler
        self.host = host
        self.port = port
        self.options = options
        self.server: Server | None = None
        self._listening = asyncio.Event()
        self._watchers: set[asyncio.Task] = set()
        # websockets logs handler crashes here. Not registered with logging.getLogger(): it goes
        # away with the server, and no later server can inherit this one's timeline.
        self._logger = logging.Logger(f"wslab.server.{name}", level=logging.WARNING)
        self._logger.addHandler(TimelineLogHandler(lab.timeline, name))

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT``, or ``wss://`` when the server was started with ``ssl=``."""
        scheme = "wss" if self.options.get("ssl") else "ws"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def connections(self) -> set[ServerConnection]:
        """Connections that completed the opening handshake and are still OPEN."""
        return self.server.connections if self.server else set()

    @property
    def is_listening(self) -> bool:
        return self.server is not None

    def label(self, ws: ServerConnection) -> str:
        return self.lab.label(ws)

    async def start(self) -> LabServer:
        """Listen (again) on the same host and port."""
        if self.server is not None:
            return self
        try:
            self.server = await serve(self._handle, self.host, self.port, logger=self._logger, **self.options)
        except OSError as exc:
            raise bind_error(exc, self.host, self.port) from None
        self.port = self.server.sockets[0].getsockname()[1]
        self._listening.set()
        self.lab.timeline.record(self.name, "listening", detail=self.url)
        return self

    async def wait_listening(self, timeout: float = 5.0) -> None:
        """Wait until the server listens (again), e.g. while a :meth:`restart` runs in a task.

        Raises:
            WaitTimeout: it did not listen within ``timeout`` seconds (scaled).
        """
        await wait_until(self._listening.is_set, timeout, f"server {self.name!r} listening again")

    async def _handle(self, ws: ServerConnection) -> None:
        conn = self.label(ws)
        self.lab.timeline.record(self.name, "open", conn=conn, detail=f"from port {ws.remote_address[1]}")
        watcher = asyncio.create_task(self._watch(ws, conn))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        try:
            await self.handler(ws)
        except ConnectionClosed as exc:
            self.lab.timeline.record(self.name, "handler-exit", conn=conn, detail=describe_exception(exc), exc=exc)
        except Exception as exc:
            # A bug in the handler: record it in one line, close with 1011 like websockets would.
            where = getattr(self.handler, "__qualname__", "handler")
            self.lab.timeline.record(
                self.name, "handler-error", conn=conn, code=CloseCode.INTERNAL_ERROR,
                detail=f"{where} raised {type(exc).__name__}: {exc}", exc=exc,
            )
            await close_within(ws, CLOSE_DEADLINE, CloseCode.INTERNAL_ERROR, "internal error")
        else:
            self.lab.timeline.record(self.name, "handler-exit", conn=conn, detail="returned")

    async def _watch(self, ws: ServerConnection, conn: str) -> None:
        """Record how and when the connection ended, with the exception's cause chain."""
        await ws.wait_closed()
        exc = ws.close_exc
        self.lab.timeline.record(
            self.name, "closed", conn=conn, code=None if ws.close_code is None else int(ws.close_code),
            detail=describe_exception(exc), exc=exc,
            rcvd=exc.rcvd.code if exc.rcvd else None, sent=exc.sent.code if exc.sent else None,
        )

    async def stop(self, *, code: int = CloseCode.GOING_AWAY, reason: str = "", deadline: float = 2.0) -> None:
        """Close the listening socket, close connections with ``code``; abort those that don't finish in time."""
        if self.server is None:
            return
        server, self.server = self.server, None
        self._listening.clear()
        server.close(code=code, reason=reason)
        try:
            await asyncio.wait_for(asyncio.shield(server.wait_closed()), deadline)
        except asyncio.TimeoutError:
            # A send blocked on a stalled peer ignores close_timeout: only abort() frees it.
            abort_all(server.all_connections)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), CLOSE_DEADLINE)
        self.lab.timeline.record(self.name, "stopped", code=int(code), detail=reason)

    async def restart(self, *, downtime: float = 0.0) -> Restart:
        """Stop with 1012 (service restart), stay down ``downtime`` seconds, listen again on the same port.

        The listening socket really closes: connection attempts meanwhile are
        refused. Returns when it listens again, with both moments; run it in a
        task and ``await server.wait_listening()`` to do something meanwhile.
        """
        await self.stop(code=CloseCode.SERVICE_RESTART, reason="service restart")
        down_at = self.lab.timeline.now()
        await asyncio.sleep(downtime)
        await self.start()
        return Restart(down_at, self.lab.timeline.now())

    def abort_connections(self) -> int:
        """Abort every connection now: for experiments whose clients are dead anyway. Returns how many."""
        return abort_all(self.server.all_connections) if self.server is not None else 0

    async def close(self) -> None:
        await self.stop(deadline=CLOSE_DEADLINE)
        for task in list(self._watchers):
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)

    def __repr__(self) -> str:
        state = "listening" if self.server else "stopped"
        return f"<LabServer {self.name} {self.url} {state}, {len(self.connections)} open>"


class Lab:
    """Everything one notebook (or script) started, by name, and a shared timeline.

    Starting anything under a name that is taken closes the old one first.
    :meth:`close` closes everything, in an order that never waits for nothing:
    tasks, then fault proxies, then clients, then servers, then external
    programs (a resource's ``close_rank`` attribute says where it goes).
    """

    def __init__(self, timeline: Timeline | None = None) -> None:
        self.timeline = timeline if timeline is not None else Timeline()
        self.label = _ConnectionLabels()
        self._resources: dict[str, Any] = {}

    # -- starting things ----------------------------------------------------

    async def serve(
        self, handler: Handler, *, name: str, host: str = "127.0.0.1", port: int = 0, **options: Any
    ) -> LabServer:
        """Start a websockets server running ``handler`` for each connection.

        ``options`` go to :func:`websockets.asyncio.server.serve`, e.g.
        ``ping_interval=0.5``. The lab's default is ``ping_interval=None``
        (no keepalive) so that each notebook turns keepalive on explicitly.
        """
        await self.close(name)
        options.setdefault("ping_interval", None)
        server = LabServer(self, name, handler, host, port, options)
        await server.start()
        await self.track(name, server)
        return server

    async def connect(self, url: str, *, name: str, open_timeout: float = 5.0, **options: Any) -> ClientConnection:
        """Open a client connection, tracked by the lab. ``options`` go to websockets' ``connect``.

        The lab's default is ``ping_interval=None``, like for servers.
        """
        await self.close(name)
        check_url(url)
        options.setdefault("ping_interval", None)
        try:
            ws = await connect(url, open_timeout=open_timeout, **options)
        except ConnectionRefusedError:
            raise LabError(f"nothing is listening at {url} (connection refused): is the server running?") from None
        except asyncio.TimeoutError:
            raise LabError(f"{url} did not complete the opening handshake within {open_timeout} s") from None
        except InvalidURI as exc:
            raise LabError(str(exc)) from None
        except InvalidHandshake as exc:
            raise LabError(f"{url} refused the WebSocket handshake: {exc}") from None
        except OSError as exc:
            cause = f"{type(exc).__name__}: {exc}"
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                cause = f"TLS certificate verification failed ({getattr(exc, 'verify_message', exc)}); pass ssl= a context that trusts the server's CA"
            raise LabError(f"cannot connect to {url}: {cause}") from None
        await self.track(name, ws)
        self.timeline.record(name, "open", detail=url)
        return ws

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task:
        """Run ``coro`` in the background. Its end, and any exception, is recorded, never printed.

        Spawning under a name that is running cancels the old task first
        (without waiting: use ``await lab.close(name)`` to wait).
        """
        old = self._resources.pop(name, None)
        if isinstance(old, asyncio.Task):
            old.cancel()
        elif old is not None:
            self._resources[name] = old
            coro.close()
            raise LabError(f"{name!r} is a {type(old).__name__}, not a task: close it first or pick another name")
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._resources[name] = task
        return task

    async def track(self, name: str, resource: Any) -> Any:
        """Track anything with a ``close()`` method (sync or async), so :meth:`close` closes it.

        Like every way of starting something, it first closes what ``name``
        held before, if that is something else.
        """
        old = self._resources.get(name)
        if old is not None and old is not resource:
            await self.close(name)
        self._resources[name] = resource
        return resource

    def _task_done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            self.timeline.record(task.get_name(), "task-cancelled")
        elif task.exception() is not None:
            self.timeline.record(task.get_name(), "task-error", detail=describe_exception(task.exception()))
        else:
            self.timeline.record(task.get_name(), "task-done")

    def __getitem__(self, name: str) -> Any:
        return self._resources[name]

    def __contains__(self, name: str) -> bool:
        return name in self._resources

    @property
    def names(self) -> list[str]:
        return list(self._resources)

    # -- closing things -----------------------------------------------------

    async def close(self, name: str | None = None) -> None:
        """Close one resource by name, or everything (in ``close_rank`` order, each rank concurrently)."""
        if name is not None:
            resource = self._resources.pop(name, None)
            if resource is not None:
                await _close_one(resource)
            return
        resources = list(self._resources.values())
        self._resources.clear()
        for rank in sorted({_rank(r) for r in resources}):
            await asyncio.gather(*(_close_one(r) for r in resources if _rank(r) == rank))

    async def __aenter__(self) -> Lab:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def events(self, **filters: Any):
        """The timeline as a table; see :meth:`Timeline.table` for the filters."""
        return self.timeline.table(**filters)

    def __repr__(self) -> str:
        return f"<Lab {', '.join(self._resources) or 'empty'}; {len(self.timeline)} events>"


def _rank(resource: Any) -> int:
    # Tasks first (they use the rest); fault proxies (close_rank 1) before clients, so a client
    # behind a stalled proxy doesn't wait out its close deadline; then clients, servers, programs.
    if isinstance(resource, asyncio.Task):
        return 0
    if isinstance(resource, ClientConnection):
        return 2
    return getattr(resource, "close_rank", 4)


async def _close_one(resource: Any) -> None:
    if isinstance(resource, asyncio.Task):
        resource.cancel()
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError, Exception):
            await asyncio.wait_for(resource, CLOSE_DEADLINE)
    elif isinstance(resource, ClientConnection):
        await close_within(resource, CLOSE_DEADLINE)
    elif hasattr(resource, "close"):
        result = resource.close()
        if asyncio.iscoroutine(result):
            await result


def host_port(target: Any) -> tuple[str, int]:
    """``(host, port)`` of a port number, a ``ws://`` URL, or anything with ``host`` and ``port``."""
    if isinstance(target, int):
        return "127.0.0.1", target
    if isinstance(target, str):
        parts = urllib.parse.urlsplit(check_url(target))
        return parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "wss" else 80)
    return target.host, target.port


_current: Lab | None = None


async def new_lab() -> Lab:
    """Close the lab an earlier run of this notebook started, and return a fresh one.

    Put ``lab = await wslab.new_lab()`` in a notebook's first code cell.
    """
    global _current
    if _current is not None:
        await _current.close()
    _current = Lab()
    return _current


def current_lab() -> Lab | None:
    """The lab :func:`new_lab` returned last, if any."""
    return _current


def running_tasks() -> set[asyncio.Task]:
    """Every asyncio task that runs now, except those running the caller: a snapshot for :func:`tasks_left`.

    Take it before the lab starts anything (in a notebook: right after ``new_lab()``).
    """
    tasks = {task for task in asyncio.all_tasks() if not task.done()}
    return tasks - _running_the_caller(tasks)


def tasks_left(before: set[asyncio.Task]) -> list[asyncio.Task]:
    """The tasks that run now and did not run at the ``before`` snapshot: what was left behind.

    After ``await lab.close()`` this should be empty. The rule is "started
    since the snapshot", never "whose code looks like ours": the kernel's own
    tasks were all running at the snapshot, wherever their code lives.
    """
    return list(running_tasks() - before)


def _running_the_caller(tasks: set[asyncio.Task]) -> set[asyncio.Task]:
    """The current task, and every task in ``tasks`` that waits for it, directly or through others.

    A kernel runs each notebook cell in a fresh chain of tasks, each awaiting the
    next (ipykernel: ``run_in_context`` -> ``shell_main`` -> ``run_cell_async``);
    they end with the cell. What a task waits for is ``_fut_waiter``, the
    attribute asyncio's own ``repr()`` shows as ``wait_for=``.
    """
    current = asyncio.current_task()
    chain: set[asyncio.Future[Any]] = set() if current is None else {current}
    while waiting := {t for t in tasks if t not in chain and getattr(t, "_fut_waiter", None) in chain}:
        chain |= waiting
    return {t for t in tasks if t in chain}
