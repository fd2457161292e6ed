"""Several server processes, one broadcast: fan-out and replay through a real Redis.

One :class:`~wslab.servers.fixed.FixedServer` keeps its sessions and history in
its own memory: run two, and a broadcast reaches only the sessions of the
process that sent it. :class:`BackplaneServer` is FixedServer (removal,
keepalive and isolation unchanged: the fix composes with scale-out) whose
broadcasts go through Redis:

* **Numbering.** ``publish()`` runs one Lua script: ``INCR`` gives the next
  number, shared by every process; ``XADD`` appends the frame to a stream
  (``MAXLEN ~ maxlen``); ``PUBLISH`` sends it to every process. A script runs
  atomically, so the numbers, the stream and the pub/sub order agree.
* **Fan-out.** Each process subscribes, and puts every frame into each of its
  sessions' outboxes, in number order; its own broadcasts too: one path, one order.
* **Replay across processes.** A client that reconnects to *any* process with
  ``?last_seq=N`` gets N+1, N+2, ... from the stream (``XRANGE``), then live
  frames, or ``resync`` if the stream no longer holds its gap: ReplayServer's
  protocol, so :class:`~wslab.clients.reconnect.ReconnectingClient` works unchanged.
  Which of these a client gets is decided by a pure function of three numbers,
  :func:`~wslab.servers.resume.plan_resume` (``resume=`` swaps in another).
* **Redis going away.** The process keeps its sessions, records
  ``backplane-down`` and reconnects with capped exponential backoff. Broadcasts
  meanwhile cannot be numbered: they are counted as ``lost``. Back on Redis, it
  reads from the stream what pub/sub did not bring while it was away
  (``catch-up``). If Redis restarted empty, the numbering restarted too: its
  clients get ``resync``, then the new numbers from 1.

Why pub/sub for the live path, and not each process reading the stream: see
:mod:`wslab.servers.redisbus`, which holds the Lua scripts and the frame format.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import uuid
from typing import Any

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from websockets.asyncio.server import ServerConnection

from ..runtime.errors import LabError, WaitTimeout
from ..runtime.lab import Lab, LabServer
from ..runtime.timeline import EventKind, Timeline, describe_exception
from ..runtime.timing import CLOSE_DEADLINE, close_within, wait_until
from .base import start_app
from .fixed import FixedServer
from .redisbus import HELLO, PUBLISH, WINDOW, read_range, unpack
from .replay import last_seq_of
from .resume import ResumeFunction, plan_resume, resume_steps
from .wire import Resync, encode, encode_resync

__all__ = ["PUBLISH", "BackplaneServer", "start_backplane"]


class BackplaneServer(FixedServer):
    """FixedServer whose broadcasts go through Redis, so that every process delivers them.

    Start it with :func:`start_backplane` (or ``lab.spawn(app.run())`` next to
    :func:`~wslab.servers.base.start_app`): :meth:`run` is its link to Redis.

    Args:
        timeline: Where to record events (the server never prints).
        name: The source name on the timeline.
        backplane: The Redis URL, ``redis://127.0.0.1:PORT``.
        prefix: Redis key names start with it: processes with the same prefix share broadcasts.
        maxlen: Frames the stream keeps for replay, at least (``XADD MAXLEN ~``).
        min_delay: First delay before reconnecting to Redis, in seconds.
        max_delay: Longest delay before reconnecting to Redis, in seconds.
        seed: Seed for the reconnection jitter.
        catch_up: Back on Redis after an outage, read what was missed from the stream.
            False shows pub/sub alone: at-most-once, whatever was published meanwhile is lost here.
        resume: Decides where a connecting client's broadcasts start, from its ``last_seq`` and
            the numbers the stream holds: :func:`~wslab.servers.resume.plan_resume`, or your own.
        options: FixedServer's (keepalive, ping_interval, ping_timeout, max_buffer,
            send_deadline, tcp_user_timeout). Isolation is always on: a replay goes
            into the client's outbox first, then the live frames after it.

    Attributes:
        connected: Subscribed to Redis right now.
        last_seq: The last number this process delivered to its sessions.
        published: Broadcasts this process handed to Redis.
        lost: Broadcasts it could not hand over (Redis was down): nobody got them.
        delivered: Frames it received from Redis and fanned out to its sessions.
        caught_up: Of those, frames read from the stream after an outage, not pushed by pub/sub.
        replayed: Frames read from the stream for clients that came back with ``last_seq``.
        resyncs: ``resync`` messages sent.
        outages: ``(down_at, up_at)`` in timeline seconds; ``up_at`` is None while down.
    """

    def __init__(
        self,
        timeline: Timeline | None = None,
        name: str = "backplane",
        *,
        backplane: str,
        prefix: str = "wslab",
        maxlen: int = 1000,
        min_delay: float = 0.05,
        max_delay: float = 2.0,
        seed: int | None = None,
        catch_up: bool = True,
        resume: ResumeFunction = plan_resume,
        **options: Any,
    ) -> None:
        if options.pop("isolation", True) is not True:
            raise ValueError("BackplaneServer needs isolation: a replay goes through the client's outbox")
        super().__init__(timeline, name, isolation=True, **options)
        if not backplane.startswith("redis://"):
            raise LabError(f"{backplane!r} is not a Redis URL: write it like redis://127.0.0.1:6379")
        self.backplane = backplane
        self.counter, self.stream, self.channel, self.epoch_key = (
            f"{prefix}:{key}" for key in ("seq", "stream", "broadcasts", "epoch"))
        self.maxlen = maxlen
        self.min_delay = min_delay
        self.max_delay = max_delay
        self._rng = random.Random(seed)
        self.catch_up = catch_up
        self.resume = resume

        self.connected = False
        self.last_seq: int | None = None
        self.epoch: bytes | None = None
        self.published = self.lost = self.delivered = self.caught_up = self.replayed = self.resyncs = 0
        self.outages: list[tuple[float, float | None]] = []
        self._redis: redis.asyncio.Redis | None = None
        self._publish: Any = None  # the PUBLISH script, bound to the current connection
        self._read_window: Any = None  # the WINDOW script, likewise
        self._suspect = False  # a publish failed: the link should reconnect even if its socket looks fine
        self._held: dict[int, list[tuple[int | None, bytes | str]]] = {}  # live frames for resuming sessions
        self._floors: dict[int, int] = {}  # resumed sessions: skip live frames up to this number (sent already)
        self._resumes: dict[int, asyncio.Task[None]] = {}

    # -- the link to Redis ---------------------------------------------------------------

    async def run(self) -> None:
        """Stay subscribed to Redis and deliver what it pushes, until cancelled. Never raises otherwise."""
        failures = 0
        try:
            while True:
                client = redis.asyncio.Redis.from_url(
                    self.backplane,
                    # No hidden retries (redis-py's default is 10): an outage must show, and this loop
                    # decides when to try again. Timeouts: no command waits for ever.
                    retry=Retry(NoBackoff(), 0), socket_timeout=2.0, socket_connect_timeout=1.0,
                    client_name=self.name,  # CLIENT LIST shows which process each connection is
                )
                try:
                    await self._listen(client)
                except (RedisError, OSError) as exc:  # redis-py wraps most socket errors; OSError for the rest
                    if self.connected:
                        failures = 0  # it was up: start the backoff again from the beginning
                    self._went_down(exc)
                finally:
                    self._redis = self._publish = self._read_window = None
                    with contextlib.suppress(Exception):  # the connection is dead already
                        await asyncio.wait_for(client.aclose(), CLOSE_DEADLINE)
                # Capped exponential backoff with equal jitter (see wslab.clients.backoff for the others).
                ceiling = min(self.max_delay, self.min_delay * 2 ** min(failures, 30))
                failures += 1
                await asyncio.sleep(ceiling / 2 + self._rng.uniform(0, ceiling / 2))
        finally:
            self.connected = False

    async def _listen(self, client: redis.asyncio.Redis) -> None:
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self.channel)  # first: every frame published after this reaches us
            epoch, top = await client.register_script(HELLO)(
                keys=[self.epoch_key, self.counter], args=[uuid.uuid4().hex])
            self._redis, self._publish = client, client.register_script(PUBLISH)
            self._read_window = client.register_script(WINDOW)
            await self._catch_up(client, epoch, int(top))
            self._came_up()
            while True:
                if pubsub.connection is None or not pubsub.connection.is_connected:
                    # redis-py would reconnect and subscribe again by itself, silently: whatever was
                    # published meanwhile would be lost without a trace. Start over here instead.
                    raise RedisError("the subscription's connection is closed")
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    try:
                        seq, frame = unpack(message["data"])
                    except ValueError:  # someone else's PUBLISH on our channel: not ours to deliver
                        self.timeline.record(self.name, EventKind.LOG, detail=f"ignored {message['data'][:40]!r}")
                        continue
                    self._deliver(seq, frame)
                elif self._suspect:  # a publish failed while this socket stayed quiet: start over
                    raise RedisError("a publish failed")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), CLOSE_DEADLINE)  # type: ignore[no-untyped-call]  # redis-py

    async def _catch_up(self, client: redis.asyncio.Redis, epoch: bytes, top: int) -> None:
        """Just subscribed: deliver from the stream what was published since this process last delivered."""
        if self.last_seq is None:
            self.last_seq = top  # the first connection: live frames only, like a client without last_seq
        elif epoch != self.epoch:
            # Redis restarted empty: the numbering starts again at 1, and our sessions must be told.
            self.timeline.record(self.name, EventKind.RESYNC, detail="Redis restarted empty: numbering from 1")
            self._floors.clear()
            self._fan_out(None, encode_resync(None, 1))
            self.resyncs += len(self.sessions)
            self.last_seq = 0
        self.epoch = epoch
        if top > self.last_seq and not self.catch_up:
            self.last_seq = top  # pub/sub alone: what was published while we were away is lost here
        elif top > self.last_seq:
            frames = await self._read_range(client, self.last_seq + 1, top)
            first = frames[0][0] if frames else top + 1
            if first > self.last_seq + 1:  # the stream no longer holds all we missed
                missed = (self.last_seq + 1, first - 1)
                self.timeline.record(self.name, EventKind.RESYNC, detail=f"missed {missed[0]}-{missed[1]}",
                                     missed=missed)
                self._fan_out(None, encode_resync(missed, first))
                self.resyncs += len(self.sessions)
                self.last_seq = first - 1
            for seq, frame in frames:
                self._deliver(seq, frame)
            self.caught_up += len(frames)
            self.timeline.record(self.name, EventKind.CATCH_UP, detail=f"{len(frames)} frames from the stream",
                                 frames=len(frames))

    def _came_up(self) -> None:
        self.connected, self._suspect = True, False
        detail = f"subscribed at {self.backplane}, last_seq {self.last_seq}"
        if self.outages and self.outages[-1][1] is None:
            down_at = self.outages[-1][0]
            self.outages[-1] = (down_at, self.timeline.now())
            detail += f", after {self.timeline.now() - down_at:.3f} s down; {self.lost} broadcasts lost so far"
        self.timeline.record(self.name, EventKind.BACKPLANE_UP, detail=detail)

    def _went_down(self, exc: BaseException) -> None:
        if self.connected or not self.outages or self.outages[-1][1] is not None:
            self.outages.append((self.timeline.now(), None))
            self.timeline.record(self.name, EventKind.BACKPLANE_DOWN, detail=describe_exception(exc),
                                 sessions=len(self.sessions))
        self.connected = False

    async def wait_connected(self, timeout: float = 5.0) -> None:
        """Wait until :meth:`run` is subscribed, at most ``timeout`` s (scaled), or raise WaitTimeout."""
        await wait_until(lambda: self.connected, timeout, f"{self.name} subscribed to {self.backplane}")

    # -- broadcasting: Redis numbers, then every process delivers ------------------------

    async def publish(self, data: bytes | str) -> int | None:
        """Number ``data`` and hand it to Redis. Returns its number, or None if Redis was unreachable (lost)."""
        if self._publish is None or not self.connected:
            self.lost += 1
            return None
        tail = encode(0, data)[2:]  # "SENT_AT data": the script puts the real number in front
        try:
            seq = await self._publish(keys=[self.counter, self.stream, self.channel],
                                      args=[self.maxlen, "t" if isinstance(data, str) else "b", tail])
        except (RedisError, OSError):
            self.lost += 1
            self._suspect = True
            return None
        self.published += 1
        return int(seq)

    async def broadcast(self, message: bytes | str) -> None:
        """The same as :meth:`publish`: delivery happens when Redis pushes it back to every process."""
        await self.publish(message)

    async def broadcast_forever(self, interval: float, payload: bytes = b"", count: int | None = None) -> None:
        """Publish ``"message N from NAME pid PID"`` (plus ``payload`` in hex) every ``interval`` seconds."""
        n = 0
        while count is None or n < count:
            text = f"message {n} from {self.name} pid {os.getpid()}"
            await self.publish(text + (f" {payload.hex()}" if payload else ""))
            n += 1
            await asyncio.sleep(interval)

    def _deliver(self, seq: int, frame: bytes | str) -> None:
        """One frame from Redis, in number order: into every local session's outbox."""
        if self.last_seq is not None and seq <= self.last_seq:
            return  # already delivered: read from the stream while pub/sub queued it too
        self.last_seq = seq
        self.delivered += 1
        self._fan_out(seq, frame)

    def _fan_out(self, seq: int | None, message: bytes | str) -> None:
        if not self._held and not self._floors:
            for session_id, ws in list(self.sessions.items()):  # FixedServer.broadcast, isolation on
                self.enqueue(session_id, ws, message)
            return
        for session_id, ws in list(self.sessions.items()):
            held = self._held.get(session_id)
            if held is not None:
                held.append((seq, message))  # its replay is being read: this goes after it
            else:
                self._put_live(session_id, ws, seq, message)

    def _put_live(self, session_id: int, ws: ServerConnection, seq: int | None, message: bytes | str) -> None:
        floor = self._floors.get(session_id)
        if floor is not None and seq is not None:
            if seq <= floor:
                return  # the client has it already (it came from a process that was ahead of this one)
            del self._floors[session_id]
        self.enqueue(session_id, ws, message)

    # -- sessions that come back with last_seq --------------------------------------------

    def register(self, ws: ServerConnection) -> int:
        """FixedServer's handler calls this first. From this moment every frame reaches the session; they
        are held for it until :meth:`resume_session` has sent what comes before them."""
        session_id = super().register(ws)
        last_seq = last_seq_of(ws.request.path if ws.request else "")
        self._held[session_id] = []
        self._resumes[session_id] = asyncio.create_task(self.resume_session(session_id, ws, last_seq))
        return session_id

    async def resume_session(self, session_id: int, ws: ServerConnection, last_seq: int | None) -> None:
        """Ask :attr:`resume` where the client's broadcasts start; send the resync and the replay it says, then
        the live broadcasts held meanwhile. Redis numbers and keeps them all, so this works on any process."""
        try:
            if self._read_window is None or not self.connected:
                raise RedisError("not connected to the backplane")
            oldest, newest = map(int, await self._read_window(keys=[self.counter, self.stream]))
        except (RedisError, OSError) as exc:
            if last_seq is None:  # a new client needs no window: live broadcasts, as plan_resume would say
                return self._release(session_id, ws, None)
            # Closing with 1013 "try again later" keeps the client's last_seq intact: it comes back when
            # the backplane is, and loses nothing.
            return await self._refuse(session_id, ws, f"cannot replay: {describe_exception(exc)}", 1013,
                                      "backplane unavailable, try again later")
        if last_seq is not None:
            self.timeline.record(self.name, EventKind.RESUME, conn=f"s{session_id}", last_seq=last_seq,
                                 detail=f"last_seq={last_seq}, the stream holds {oldest}-{newest}")
        try:
            steps = resume_steps(self.resume(last_seq, oldest, newest), oldest, newest)
        except Exception as exc:  # a resume function of your own may fail: one line on the timeline, and 1011
            detail = f"resume({last_seq}, {oldest}, {newest}) raised {describe_exception(exc)}"
            return await self._refuse(session_id, ws, detail, 1011, "resume failed")
        try:
            if steps.resync is not None:
                self._resync(session_id, ws, steps.resync)
            if steps.replay is not None:
                await self._replay(session_id, ws, *steps.replay, oldest)
        except (RedisError, OSError) as exc:
            return await self._refuse(session_id, ws, f"cannot replay: {describe_exception(exc)}", 1013,
                                      "backplane unavailable, try again later")
        self._release(session_id, ws, steps.live_after)

    async def _replay(self, session_id: int, ws: ServerConnection, first: int, last: int, oldest: int) -> None:
        client = self._redis
        if client is None:
            raise RedisError("not connected to the backplane")
        frames = await self._read_range(client, first, last)
        start = frames[0][0] if frames else last + 1
        if start > max(first, oldest):  # trimmed since the window was read: say so, never leave a silent hole
            self._resync(session_id, ws, Resync((max(first, oldest), start - 1), start))
        for _, frame in frames:
            self.enqueue(session_id, ws, frame)
        self.replayed += len(frames)

    async def _read_range(self, client: redis.asyncio.Redis, first: int, last: int) -> list[tuple[int, bytes | str]]:
        """The stream's frames ``first`` to ``last``; an entry that is not ours is skipped, and logged."""
        frames, skipped = await read_range(client, self.stream, first, last)
        for line in skipped:
            self.timeline.record(self.name, EventKind.LOG, detail=line)
        return frames

    def _release(self, session_id: int, ws: ServerConnection, live_after: int | None) -> None:
        """From now on, live broadcasts numbered above ``live_after`` go straight to the client."""
        if live_after is not None:
            self._floors[session_id] = live_after
        for seq, message in self._held.pop(session_id, []):
            self._put_live(session_id, ws, seq, message)

    async def _refuse(self, session_id: int, ws: ServerConnection, detail: str, code: int, reason: str) -> None:
        self.timeline.record(self.name, EventKind.ABORT, conn=f"s{session_id}", detail=detail)
        self._held.pop(session_id, None)
        await close_within(ws, CLOSE_DEADLINE, code, reason)

    def _resync(self, session_id: int, ws: ServerConnection, resync: Resync) -> None:
        missed, next_seq = resync.missed, resync.next_seq
        why = f"missed {missed[0]}-{missed[1]}" if missed else f"last_seq from the future, going on from {next_seq}"
        self.timeline.record(self.name, EventKind.RESYNC, conn=f"s{session_id}", detail=why, missed=missed)
        self.resyncs += 1
        self.enqueue(session_id, ws, encode_resync(missed, next_seq))

    def remove(self, session_id: int, reason: str) -> None:
        """FixedServer's removal, plus the session's replay, if one is under way."""
        task = self._resumes.pop(session_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._held.pop(session_id, None)
        self._floors.pop(session_id, None)
        super().remove(session_id, reason)

    @property
    def resuming(self) -> int:
        """Sessions whose start is being decided or read from the stream: their live broadcasts wait."""
        return len(self._held)

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return (f"<BackplaneServer {self.name} {state} at {self.backplane}: {len(self.sessions)} sessions, "
                f"last_seq {self.last_seq}, {self.published} published, {self.lost} lost>")


async def start_backplane(
    lab: Lab, app: BackplaneServer, *, name: str | None = None, timeout: float = 5.0, **serve_options: Any
) -> LabServer:
    """Serve ``app`` in ``lab``, run its link to Redis as a lab task, and return once it is subscribed.

    Raises:
        WaitTimeout: it could not subscribe within ``timeout`` seconds (scaled), with Redis's
            last error; it goes on trying in the background.
    """
    server = await start_app(lab, app, name=name, **serve_options)
    lab.spawn(app.run(), name=f"{server.name}-link")
    try:
        await app.wait_connected(timeout)
    except WaitTimeout as exc:
        down = app.timeline.select(source=app.name, kind=EventKind.BACKPLANE_DOWN)
        raise WaitTimeout(f"{exc}: {down[-1].detail if down else 'no answer'}") from None
    return server
