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
import ipaddress
import urllib.parse
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidURI

from .errors import LabError
from .server import Handler, LabServer, Restart
from .timeline import EventTable, Timeline, describe_exception
from .timing import CLOSE_DEADLINE, close_within

__all__ = [
    "Lab", "LabServer", "Restart", "new_lab", "current_lab", "check_url", "host_port", "is_loopback", "Handler",
    "running_tasks", "tasks_left",
]

T = TypeVar("T")


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
        if is_loopback(url):
            # websockets sends ws:// through the proxy named in http_proxy/https_proxy/all_proxy, even to
            # 127.0.0.1; on a machine behind a corporate proxy, every lab connection would then fail.
            options.setdefault("proxy", None)
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
                cause = (f"TLS certificate verification failed ({getattr(exc, 'verify_message', exc)}); "
                         "pass ssl= a context that trusts the server's CA")
            raise LabError(f"cannot connect to {url}: {cause}") from None
        await self.track(name, ws)
        self.timeline.record(name, "open", detail=url)
        return ws

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
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

    async def track(self, name: str, resource: T) -> T:
        """Track anything with a ``close()`` method (sync or async), so :meth:`close` closes it.

        Like every way of starting something, it first closes what ``name``
        held before, if that is something else.
        """
        old = self._resources.get(name)
        if old is not None and old is not resource:
            await self.close(name)
        self._resources[name] = resource
        return resource

    def _task_done(self, task: asyncio.Task[Any]) -> None:
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

    def events(self, **filters: Any) -> EventTable:
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


def is_loopback(url: str) -> bool:
    """Whether ``url`` names this machine (127.0.0.0/8, ::1 or localhost): no proxy belongs in between."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


def running_tasks() -> set[asyncio.Task[Any]]:
    """Every asyncio task that runs now, except those running the caller: a snapshot for :func:`tasks_left`.

    Take it before the lab starts anything (in a notebook: right after ``new_lab()``).
    """
    tasks = {task for task in asyncio.all_tasks() if not task.done()}
    return tasks - _running_the_caller(tasks)


def tasks_left(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    """The tasks that run now and did not run at the ``before`` snapshot: what was left behind.

    After ``await lab.close()`` this should be empty. The rule is "started
    since the snapshot", never "whose code looks like ours": the kernel's own
    tasks were all running at the snapshot, wherever their code lives.
    """
    return list(running_tasks() - before)


def _running_the_caller(tasks: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
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
