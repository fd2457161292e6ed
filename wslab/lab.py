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
import errno
import logging
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .proxy import FaultProxy, UpstreamUnreachable
from .timeline import Timeline, TimelineLogHandler, describe_exception

__all__ = ["Lab", "LabError", "LabServer", "new_lab", "current_lab", "check_url"]

Handler = Callable[[ServerConnection], Awaitable[None]]

# How long closing anything may take before the lab aborts the TCP connection.
CLOSE_DEADLINE = 1.0


class LabError(Exception):
    """A mistake the lab can explain in one line: a busy port, a bad URL, no server.

    In a notebook it is shown as that one line, without a traceback.
    """

    def _render_traceback_(self) -> list[str]:  # IPython's hook for custom error display
        return [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]


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


def bind_error(exc: OSError, host: str, port: int) -> LabError:
    """Explain why listening on ``host:port`` failed."""
    if exc.errno == errno.EADDRINUSE:
        return LabError(f"port {port} on {host} is already in use: stop what runs there, or use port 0 for a free one")
    if exc.errno == errno.EADDRNOTAVAIL:
        return LabError(f"cannot listen on {host}: that address is not on this machine (use 127.0.0.1)")
    if exc.errno == errno.EACCES:
        return LabError(f"not allowed to listen on port {port}: ports below 1024 need privileges, use port 0")
    return LabError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


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


class LabServer:
    """A websockets server run by the lab, with its connections recorded on the timeline.

    Attributes:
        url: ``ws://127.0.0.1:PORT``.
        port: The port, kept across :meth:`restart`.
        handler: The connection handler (your code).
    """

    def __init__(self, lab: Lab, name: str, handler: Handler, host: str, port: int, options: dict) -> None:
        self.lab = lab
        self.name = name
        self.handler = handler
        self.host = host
        self.port = port
        self.options = options
        self.server: Server | None = None
        self._watchers: set[asyncio.Task] = set()
        self._logger = logging.getLogger(f"wslab.server.{id(self)}")
        self._logger.propagate = False  # never print: record on the timeline
        self._logger.addHandler(TimelineLogHandler(lab.timeline, name))
        self._logger.setLevel(logging.WARNING)

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT``, or ``wss://`` when the server was started with ``ssl=``."""
        scheme = "wss" if self.options.get("ssl") else "ws"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def connections(self) -> set[ServerConnection]:
        """Connections that completed the opening handshake and are still OPEN."""
        return self.server.connections if self.server else set()

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
        self.lab.timeline.record(self.name, "listening", detail=self.url)
        return self

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
                self.name, "handler-error", conn=conn, code=1011,
                detail=f"{where} raised {type(exc).__name__}: {exc}", exc=exc,
            )
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1011, "internal error"), CLOSE_DEADLINE)
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

    async def stop(self, *, code: int = 1001, reason: str = "", deadline: float = 2.0) -> None:
        """Close the listening socket, close connections with ``code``; abort those that don't finish in time."""
        if self.server is None:
            return
        server, self.server = self.server, None
        server.close(code=code, reason=reason)
        try:
            await asyncio.wait_for(asyncio.shield(server.wait_closed()), deadline)
        except asyncio.TimeoutError:
            # A send blocked on a stalled peer ignores close_timeout: only abort() frees it.
            for ws in list(server.all_connections):
                ws.transport.abort()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), CLOSE_DEADLINE)
        self.lab.timeline.record(self.name, "stopped", code=code, detail=reason)

    async def restart(self, *, downtime: float = 0.0) -> None:
        """Stop with 1012 (service restart), stay down ``downtime`` seconds, listen again on the same port."""
        await self.stop(code=1012, reason="service restart")
        await asyncio.sleep(downtime)
        await self.start()

    async def close(self) -> None:
        await self.stop(deadline=CLOSE_DEADLINE)
        for task in list(self._watchers):
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)

    def __repr__(self) -> str:
        state = "listening" if self.server else "stopped"
        return f"<LabServer {self.name} {self.url} {state}, {len(self.connections)} open>"


class Lab:
    """Everything one notebook (or script) started, by name, and a shared timeline."""

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
        self._resources[name] = server
        return server

    async def proxy(
        self, upstream: LabServer | str | int, *, name: str, host: str = "127.0.0.1", port: int = 0
    ) -> FaultProxy:
        """Start a :class:`~wslab.proxy.FaultProxy` in front of ``upstream`` (a server, a URL or a port)."""
        await self.close(name)
        up_host, up_port = _host_port(upstream)
        try:
            proxy = await FaultProxy.start(
                up_port, upstream_host=up_host, host=host, port=port, name=name, timeline=self.timeline
            )
        except UpstreamUnreachable as exc:
            raise LabError(str(exc)) from None
        except OSError as exc:
            raise bind_error(exc, host, port) from None
        self._resources[name] = proxy
        return proxy

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
        self._resources[name] = ws
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
            coro.close()
            raise LabError(f"{name!r} is a {type(old).__name__}, not a task: close it first or pick another name")
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._resources[name] = task
        return task

    def track(self, name: str, resource: Any) -> Any:
        """Track anything with a ``close()`` method (sync or async), so :meth:`close` closes it."""
        old = self._resources.pop(name, None)
        if old is not None:
            raise LabError(f"{name!r} is already taken by a {type(old).__name__}: close it first or pick another name")
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
        """Close one resource by name, or everything (tasks first, then clients, proxies, servers)."""
        if name is not None:
            resource = self._resources.pop(name, None)
            if resource is not None:
                await _close_one(resource)
            return
        # Proxies go before clients: a client behind a stalled proxy would
        # otherwise wait out its close deadline. Each kind closes concurrently.
        order = (asyncio.Task, FaultProxy, ClientConnection, LabServer)
        resources = list(self._resources.values())
        self._resources.clear()
        for kind in order:
            await asyncio.gather(*(_close_one(r) for r in resources if isinstance(r, kind)))
        await asyncio.gather(*(_close_one(r) for r in resources if not isinstance(r, order)))

    async def __aenter__(self) -> Lab:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def events(self, **filters: Any):
        """The timeline as a table; see :meth:`Timeline.table` for the filters."""
        return self.timeline.table(**filters)

    def __repr__(self) -> str:
        return f"<Lab {', '.join(self._resources) or 'empty'}; {len(self.timeline)} events>"


async def _close_one(resource: Any) -> None:
    if isinstance(resource, asyncio.Task):
        resource.cancel()
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError, Exception):
            await asyncio.wait_for(resource, CLOSE_DEADLINE)
    elif isinstance(resource, ClientConnection):
        try:
            await asyncio.wait_for(resource.close(), CLOSE_DEADLINE)
        except (asyncio.TimeoutError, Exception):
            resource.transport.abort()
    elif hasattr(resource, "close"):
        result = resource.close()
        if asyncio.iscoroutine(result):
            await result


def _host_port(target: LabServer | FaultProxy | str | int) -> tuple[str, int]:
    if isinstance(target, int):
        return "127.0.0.1", target
    if isinstance(target, (LabServer, FaultProxy)):
        return target.host, target.port
    parts = urllib.parse.urlsplit(check_url(target))
    return parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "wss" else 80)


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
