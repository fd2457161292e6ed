"""A websockets server run by the lab: it records every connection on the timeline, and restarts for real.

:meth:`Lab.serve <wslab.runtime.lab.Lab.serve>` makes one::

    server = await lab.serve(handler, name="echo")     # ws://127.0.0.1:PORT
    restart = await server.restart(downtime=0.5)       # the listening socket really closes
    print(restart.downtime)

A handler that raises is recorded in one line, and the connection closes
with 1011, as websockets would close it; nothing is printed. An opening
handshake that is refused (an HTTP status other than 101) or that fails
(garbage instead of HTTP, a header too big, too slow) is recorded too, as
``refused``: websockets itself only logs it at the debug level.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, HeaderLineTooLong, RequestLineTooLong, TooManyHeaders
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from .errors import bind_error
from .timeline import EventKind, Timeline, describe_exception, timeline_logger
from .timing import CLOSE_DEADLINE, abort_all, close_within, wait_until

if TYPE_CHECKING:
    from .lab import Lab

__all__ = ["Handler", "LabServer", "Restart"]

Handler = Callable[[ServerConnection], Awaitable[None]]

# The statuses websockets' HTTP parser answers by itself, before any process_request runs.
_PARSER_STATUS: dict[type[Exception], int] = {RequestLineTooLong: 414, HeaderLineTooLong: 431, TooManyHeaders: 431}


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

    def __init__(self, lab: Lab, name: str, handler: Handler, host: str, port: int, options: dict[str, Any]) -> None:
        self.lab = lab
        self.name = name
        self.handler = handler
        self.host = host
        self.port = port
        self.options = options
        self.server: Server | None = None
        self._listening = asyncio.Event()
        self._stopped_accepting = False  # stop_accepting() ran: stop() must close the connections itself
        self._watchers: set[asyncio.Task[None]] = set()
        self._logger = timeline_logger(lab.timeline, name, "server")  # websockets logs handler crashes here

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
        options = {"create_connection": _recording_connection(self.lab.timeline, self.name), **self.options}
        try:
            self.server = await serve(self._handle, self.host, self.port, logger=self._logger, **options)
        except OSError as exc:
            raise bind_error(exc, self.host, self.port) from None
        self.port = self.server.sockets[0].getsockname()[1]
        self._listening.set()
        self._stopped_accepting = False
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

    def stop_accepting(self) -> None:
        """Close the listening socket, and only that: open connections go on. The first step of a drain.

        Connection attempts are refused from now on (a proxy in front sends
        them to another server). Call :meth:`stop` once the connections are
        closed (:func:`wslab.servers.drain.drain` does both).
        """
        if self.server is None or not self._listening.is_set():
            return
        self.server.close(close_connections=False)  # websockets: stop accepting, leave connections alone
        self._listening.clear()
        self._stopped_accepting = True
        self.lab.timeline.record(self.name, EventKind.STOPPED_ACCEPTING, detail=f"{len(self.connections)} open")

    async def stop(self, *, code: int = CloseCode.GOING_AWAY, reason: str = "", deadline: float = 2.0) -> None:
        """Close the listening socket, close connections with ``code``; abort those that don't finish in time."""
        if self.server is None:
            return
        server, self.server = self.server, None
        self._listening.clear()
        server.close(code=code, reason=reason)
        # After stop_accepting(), that close() did nothing (websockets closes a server once): close them here.
        closing = [asyncio.ensure_future(ws.close(code, reason)) for ws in server.connections] \
            if self._stopped_accepting else []
        try:
            await asyncio.wait_for(asyncio.shield(server.wait_closed()), deadline)
        except asyncio.TimeoutError:
            # A send blocked on a stalled peer ignores close_timeout: only abort() frees it.
            abort_all(server.all_connections)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), CLOSE_DEADLINE)
        await asyncio.gather(*closing, return_exceptions=True)
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


def _recording_connection(timeline: Timeline, source: str) -> type[ServerConnection]:
    """websockets' ServerConnection, recording on ``timeline`` every opening handshake that does not open."""

    class RecordingConnection(ServerConnection):
        accepted_at = 0.0  # time.monotonic() when the TCP connection was accepted: the handshake's start
        got_bytes = False  # whether the peer sent anything at all

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.accepted_at = time.monotonic()
            super().connection_made(transport)

        def data_received(self, data: bytes) -> None:
            self.got_bytes = True
            super().data_received(data)

        async def handshake(self, process_request: Any = None, process_response: Any = None, *args: Any) -> None:
            async def record_response(connection: ServerConnection, request: Request, response: Response) -> Any:
                # Every response to a parsed request passes here before it is sent: record a refusal now,
                # not when the refused client finally closes its socket.
                replaced = process_response(connection, request, response) if process_response else None
                if inspect.isawaitable(replaced):
                    replaced = await replaced
                final = replaced if replaced is not None else response
                if final.status_code != 101:
                    exc = self.protocol.handshake_exc
                    body = bytes(final.body).decode(errors="replace").strip()
                    self._record_refusal(final.status_code, describe_exception(exc) if exc else body)
                return replaced

            try:
                await super().handshake(process_request, record_response, *args)
            except asyncio.CancelledError:
                # websockets' open_timeout cancels the handshake (a slowloris), so does a closing server.
                self._record_refusal(None, "no complete opening handshake within open_timeout")
                raise
            # No valid request: garbage, a header too big (websockets' parser answered). A connection
            # closed without a single byte is no handshake at all (a port probe, wait_listening's): not recorded.
            if self.request is None and self.got_bytes:
                exc = self.protocol.handshake_exc
                status = _PARSER_STATUS.get(type(exc)) if exc is not None else None
                self._record_refusal(status, describe_exception(exc) if exc else "closed before sending a request")

        def _record_refusal(self, status: int | None, why: str) -> None:
            port = self.remote_address[1] if self.remote_address else None
            answer = f"HTTP {status}" if status is not None else "no HTTP answer"
            timeline.record(source, EventKind.REFUSED, detail=f"{answer}: {why}", status=status, port=port,
                            path=self.request.path if self.request is not None else None)

    return RecordingConnection
