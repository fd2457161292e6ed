"""A reconnecting WebSocket client: the seed's ReconnectingWebSocket, in Python.

The blog post's fix for the client side is one line of JavaScript::

    let ws = new ReconnectingWebSocket('ws://host:port');

which, inside, is ``ws.onclose = () => setTimeout(connect, delay)`` with a
delay that grows. :class:`ReconnectingClient` is that loop, built on
websockets' :func:`~websockets.asyncio.client.connect`, plus what the JavaScript
library leaves out: jitter, a close-code table, a bounded send buffer and the
recovery of missed messages. In a notebook::

    client = ReconnectingClient(server.url, timeline=lab.timeline, name="alice", min_delay=0.05)
    lab.spawn(client.run(), name="alice")   # runs in the background, never prints
    await client.wait_open(timeout=5)
    await client.send("hello")              # kept in the buffer while disconnected
    ...
    await lab.close()                       # cancels run(): the connection closes with 1000

Every event goes on the timeline, with the browser's names: ``connecting``,
``open`` (first or reconnect), ``message``, ``close`` (code, reason,
wasClean), ``error``, ``give-up``; and ``retry`` (the delay chosen), ``gap``,
``duplicate``, ``resync`` and ``buffer-full``. The same events can call your
functions: set ``client.on_open``, ``on_message``, ``on_close``, ``on_error``
or ``on_give_up``, as you would set ``ws.onclose`` in a browser.

Read :meth:`ReconnectingClient.run` first: the rest serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ..runtime.errors import LabError, WaitTimeout
from ..runtime.lab import check_url, is_loopback
from ..runtime.timeline import EventKind, Timeline, describe_exception, timeline_logger
from ..runtime.timing import CLOSE_DEADLINE, close_within, scaled
from ..servers.wire import Numbered, Resync, decode
from . import closecodes
from .backoff import Backoff
from .buffer import BufferFull, SendBuffer
from .policy import (
    ClientState,
    CloseEvent,
    GiveUp,
    Message,
    Policy,
    ReconnectPolicy,
    SequenceTracker,
    close_event,
    resume_url,
)

__all__ = ["ReconnectingClient", "ClientState", "CloseEvent", "Message", "BufferFull"]


class ReconnectingClient:
    """Connect, and reconnect after every close, with backoff, until closed or giving up.

    Options mirror ReconnectingWebSocket's (``reconnectInterval``, ``maxReconnectInterval``, ``reconnectDecay``,
    ``timeoutInterval``, ``maxReconnectAttempts``), and its defaults are the same, except ``jitter``.

    Args:
        url: ``ws://`` or ``wss://`` URL of the server.
        name: Source name of this client's events on the timeline.
        timeline: Where to record events; a new one if None.
        min_delay, max_delay, factor, jitter, seed, rng: The delays between attempts (the first, the
            longest, their growth, their jitter and its randomness), as :class:`~wslab.clients.backoff.Backoff`
            takes them. ``jitter``: ``"none"``, ``"full"``, ``"equal"`` or ``"decorrelated"``.
        backoff: A ready :class:`~wslab.clients.backoff.Backoff`, instead of those six options.
        open_timeout: Seconds an attempt (TCP + opening handshake) may take.
        max_retries, min_uptime, retry_table: When to give up (None: never), how long a connection must
            last for the backoff to start again, which close codes to retry after (:data:`closecodes.RETRY`),
            as :class:`~wslab.clients.policy.ReconnectPolicy` takes them.
        policy: A ready decision-maker (a ReconnectPolicy, or anything with its ``decide`` and
            ``retries``), instead of the backoff options and those three.
        buffer_size: How many messages :meth:`send` keeps while disconnected.
        recover: Ask the server to replay missed messages on reconnect (``last_seq`` in the URL).
            Sequence numbers are tracked, and gaps and duplicates recorded, either way.
        record_messages: Record a ``message`` event for every message.
        clock: Returns seconds; inject a fake one to replay a run exactly.
        connect_options: Passed to websockets' ``connect``, e.g. ``ping_interval=0.5, ping_timeout=0.5,
            close_timeout=0.5``. Keepalive is websockets' default (20 s + 20 s): it is how a vanished
            link is noticed at all.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "client",
        timeline: Timeline | None = None,
        min_delay: float = 1.0,
        max_delay: float = 30.0,
        factor: float = 1.5,
        jitter: str = "none",
        backoff: Backoff | None = None,
        open_timeout: float = 2.0,
        max_retries: int | None = None,
        min_uptime: float = 5.0,
        retry_table: dict[int | range, bool] = closecodes.RETRY,
        policy: Policy | None = None,
        buffer_size: int = 100,
        recover: bool = True,
        record_messages: bool = True,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        seed: int | None = None,
        **connect_options: Any,
    ) -> None:
        self.url = check_url(url)
        self.name = name
        self.timeline = timeline if timeline is not None else Timeline(clock)
        self.backoff = backoff if backoff is not None else Backoff(
            min_delay=min_delay, max_delay=max_delay, factor=factor, jitter=jitter, seed=seed, rng=rng)
        # Every decision (retry or give up, how long to wait) is made by this object, without I/O.
        self.policy: Policy = policy if policy is not None else ReconnectPolicy(
            self.backoff, retry_table=retry_table, max_retries=max_retries, min_uptime=min_uptime)
        self.open_timeout = open_timeout
        self.recover = recover
        self.record_messages = record_messages
        self.clock = clock
        if is_loopback(url):
            connect_options.setdefault("proxy", None)  # never through http_proxy to 127.0.0.1: see Lab.connect
        self.connect_options = connect_options

        # Like a browser's event handlers: set them to functions of one argument.
        self.on_open: Callable[[bool], Any] | None = None  # True on the first open
        self.on_message: Callable[[Message], Any] | None = None
        self.on_close: Callable[[CloseEvent], Any] | None = None
        self.on_error: Callable[[BaseException], Any] | None = None
        self.on_give_up: Callable[[str], Any] | None = None

        self.state = ClientState.NEW
        self.attempts = 0  # connection attempts, ever
        self.opens = 0  # connections opened, ever
        self.gave_up: str | None = None  # why, once it has
        self.last_close: CloseEvent | None = None

        self.sequence = SequenceTracker()  # numbers received: gaps, duplicates, last_seq to resume from
        self.received = 0  # messages received

        self._buffer = SendBuffer(buffer_size, name)  # what send() keeps while disconnected
        self._ws: ClientConnection | None = None
        self._closing = False
        self._handshake = 0.0  # seconds the last successful attempt took
        self._wake = asyncio.Event()  # set by close() to cut a backoff sleep short
        self._opened = asyncio.Event()
        self._done = asyncio.Event()
        self._logger = timeline_logger(self.timeline, name, "client")  # what websockets logs: on the timeline

    # -- the loop ---------------------------------------------------------------

    async def run(self) -> str:
        """Stay connected until :meth:`close`, cancellation or giving up. Returns why it stopped."""
        if self.state != ClientState.NEW:
            raise LabError(f"{self.name}: run() was already called; make a new ReconnectingClient")
        try:
            while True:
                ws, failure = await self._attempt()
                if self._closing:  # close() was called during the attempt
                    if ws is not None:
                        await close_within(ws)
                    return "closed by the user"
                if ws is not None:
                    close, uptime = await self._session(ws)
                    if self._closing:
                        return "closed by the user"
                    decision = self.policy.decide(close, uptime)
                else:
                    assert failure is not None
                    decision = self.policy.decide(failure)
                if isinstance(decision, GiveUp):
                    return self._give_up(decision.reason)
                self.state = ClientState.WAITING
                self._record(EventKind.RETRY, detail=f"attempt {decision.retry} in {decision.delay:.3f} s",
                             delay=decision.delay, retry=decision.retry)
                await self._sleep(decision.delay)
                if self._closing:
                    return "closed by the user"
        finally:
            # Cancelled (lab.close()) while connected: close with 1000, within a deadline.
            if self._ws is not None:
                ws, self._ws = self._ws, None
                await close_within(ws)
                self._record_close(close_event(ws), " (cancelled)")
            self.state = ClientState.CLOSED
            self._opened.clear()
            self._done.set()

    async def _attempt(self) -> tuple[ClientConnection | None, Exception | None]:
        """One connection attempt: ``(connection, None)``, or ``(None, the error)`` after recording it."""
        self.state = ClientState.CONNECTING
        self.attempts += 1
        url = self.resume_url()
        self._record(EventKind.CONNECTING, detail=url, attempt=self.attempts)
        started = self.clock()
        try:
            ws = await connect(url, open_timeout=self.open_timeout, logger=self._logger, **self.connect_options)
        except Exception as exc:
            self._record(EventKind.ERROR, detail=describe_exception(exc), attempt=self.attempts,
                         duration=self.clock() - started)
            self._call(self.on_error, exc)
            return None, exc
        self._handshake = self.clock() - started
        return ws, None

    async def _session(self, ws: ClientConnection) -> tuple[CloseEvent, float]:
        """Use one connection until it closes: flush the buffer, then read. Returns the close event and the uptime."""
        self._ws = ws
        self.opens += 1
        first = self.opens == 1
        opened_at = self.clock()
        self._record(EventKind.OPEN, detail="first" if first else "reconnect", attempt=self.attempts,
                     handshake=self._handshake)
        try:
            await self._buffer.flush(ws)
            self.state = ClientState.OPEN
            self._opened.set()
            self._call(self.on_open, first)
            async for raw in ws:
                self._receive(raw)
        except ConnectionClosed:
            pass
        finally:
            self._opened.clear()
            self.state = ClientState.DISCONNECTED
        await close_within(ws)  # normally closed already; never wait forever
        self._ws = None
        self.last_close = close = close_event(ws)
        uptime = self.clock() - opened_at
        self._record_close(close, uptime=uptime)
        self._call(self.on_close, close)
        return close, uptime

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    def _give_up(self, why: str) -> str:
        self.gave_up = why
        self._record(EventKind.GIVE_UP, detail=why, retries=self.policy.retries)
        self._call(self.on_give_up, why)
        return why

    # -- sending --------------------------------------------------------------------

    async def send(self, message: str | bytes) -> None:
        """Send ``message`` now if connected, else keep it for the next connection.

        Kept messages go out in order, before anything else, right after the next opening
        handshake. ``send`` returning means the message was handed to the connection, not that
        the server got it: one written just before the link died is lost (only acknowledgements fix that).

        Raises:
            BufferFull: disconnected, and ``buffer_size`` messages are waiting already.
            LabError: the client is closed.
        """
        if self._closing or self.state == ClientState.CLOSED:
            raise LabError(f"{self.name} is closed: make a new ReconnectingClient to send more")
        if self.state == ClientState.OPEN and not self._buffer and self._ws is not None:
            try:
                await self._ws.send(message)
                return
            except ConnectionClosed:
                pass  # the connection died under us: keep the message for the next one
        try:
            self._buffer.add(message)
        except BufferFull:
            self._record(EventKind.BUFFER_FULL, detail=f"{len(self._buffer)} messages waiting", size=len(self._buffer))
            raise

    @property
    def buffered(self) -> int:
        """How many messages wait for the next connection."""
        return len(self._buffer)

    @property
    def buffer_size(self) -> int:
        return self._buffer.size

    # -- receiving -----------------------------------------------------------------

    def _receive(self, raw: str | bytes) -> None:
        frame = decode(raw)
        if isinstance(frame, Resync):  # the server's history lost our gap: reload state some other way
            self.sequence.resync(frame.missed, frame.next_seq)
            self._record(EventKind.RESYNC, detail=f"server history lost {frame.missed}: reload state",
                         missed=frame.missed, next_seq=frame.next_seq)
            return
        seq = frame.seq if isinstance(frame, Numbered) else None
        data = frame.data
        if seq is not None:
            seen = self.sequence.see(seq)
            if seen.kind == "duplicate":
                self._record(EventKind.DUPLICATE, detail=f"seq {seq} again (last was {self.sequence.last_seq})",
                             seq=seq)
            elif seen.missed is not None:
                first, last = seen.missed
                self._record(EventKind.GAP, detail=f"missed {first}-{last}", first=first, last=last)
        self.received += 1
        if self.record_messages:
            preview = data if isinstance(data, str) else f"<{len(data)} bytes>"
            preview = preview if len(preview) <= 60 else preview[:57] + "..."
            self._record(EventKind.MESSAGE, detail=preview if seq is None else f"seq {seq}: {preview}", seq=seq)
        self._call(self.on_message, Message(data, seq))

    # The numbers, for reading: the tracker holds them.
    @property
    def last_seq(self) -> int | None:
        return self.sequence.last_seq

    @property
    def gaps(self) -> list[tuple[int, int]]:
        return self.sequence.gaps

    @property
    def duplicates(self) -> int:
        return self.sequence.duplicates

    @property
    def retries(self) -> int:
        return self.policy.retries

    def resume_url(self) -> str:
        """The URL for the next attempt: with ``?last_seq=N`` once a numbered message was seen, if recovering."""
        return resume_url(self.url, self.last_seq) if self.recover else self.url

    # -- waiting and closing -----------------------------------------------------------

    async def wait_open(self, timeout: float = 10.0) -> None:
        """Wait until the client is connected (and its buffer flushed), at most ``timeout`` seconds.

        Raises:
            LabError: not connected in time, or the client stopped (gave up, closed) meanwhile.
        """
        timeout = scaled(timeout)
        waiters = [asyncio.ensure_future(self._opened.wait()), asyncio.ensure_future(self._done.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self._opened.is_set():
            return
        if self._done.is_set():
            raise LabError(f"{self.name} stopped without connecting: {self.gave_up or 'closed'}")
        raise WaitTimeout(f"{self.name} did not connect within {timeout} s (state: {self.state}); "
                          f"see its events on the timeline")

    async def wait_done(self, timeout: float = 10.0) -> None:
        """Wait until :meth:`run` has returned (closed or given up), at most ``timeout`` seconds (scaled)."""
        timeout = scaled(timeout)
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except asyncio.TimeoutError:
            raise WaitTimeout(f"{self.name} still runs after {timeout} s (state: {self.state})") from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close for good, like ``ws.close()`` in a browser: no reconnection after this."""
        self._closing = True
        self._wake.set()
        ws = self._ws
        if ws is not None:
            await close_within(ws, CLOSE_DEADLINE, code, reason)
        if self.state == ClientState.NEW:
            self.state = ClientState.CLOSED
        else:
            with contextlib.suppress(LabError):
                await self.wait_done(CLOSE_DEADLINE + 1.0)

    # -- small helpers ------------------------------------------------------------------

    def _record(self, kind: EventKind, *, code: int | None = None, detail: str = "", **data: Any) -> None:
        self.timeline.record(self.name, kind, code=code, detail=detail, **data)

    def _record_close(self, close: CloseEvent, note: str = "", **data: Any) -> None:
        detail = f"reason={close.reason!r} wasClean={close.was_clean}{note}"
        self._record(EventKind.CLOSE, code=close.code, detail=detail, reason=close.reason, was_clean=close.was_clean,
                     **data)

    def _call(self, callback: Callable[[Any], Any] | None, argument: Any) -> None:
        """Call an ``on_*`` handler; an exception in it is recorded, like a browser logs it, and ignored."""
        if callback is None:
            return
        try:
            callback(argument)
        except Exception as exc:
            self._record(EventKind.ERROR, detail=f"in {getattr(callback, '__qualname__', 'callback')}: "
                                         f"{describe_exception(exc)}")

    def __repr__(self) -> str:
        return (f"<ReconnectingClient {self.name} {self.state}, {self.opens} opens, {self.attempts} attempts, "
                f"last_seq={self.last_seq}>")
