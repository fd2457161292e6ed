"""Clients that write down every numbered broadcast they hear, and what their notes say: notebook 07.

:func:`listen` connects N plain WebSocket clients (websockets' own, no
reconnection) and records, for each, every numbered frame: its number, when
the server stamped it, and when it arrived. The analyses are pure functions of
those notes, tested without sockets:

- :func:`shares`: with several processes and no backplane, which broadcasts
  each client heard, grouped by the process that sent them;
- :func:`missing`: with one numbering (the backplane), which numbers each
  client never got;
- :func:`latencies`: how long each broadcast took to arrive.

Send times are ``time.monotonic()`` in the sending process and arrivals in this
one: on one machine, Linux and macOS share that clock between processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect

from ..runtime.errors import LabError
from ..runtime.lab import Lab, check_url
from ..runtime.timing import abort_all, scaled
from ..servers.wire import Numbered, decode

__all__ = ["Heard", "Listeners", "Share", "latencies", "listen", "missing", "shares"]


@dataclass(frozen=True)
class Heard:
    """One numbered broadcast, as one client heard it: its number, when it was sent, when it arrived."""

    seq: int
    sent_at: float
    arrived: float


class Listeners:
    """Clients connected by :func:`listen`; ``heard[i]`` is what client ``i`` heard, in order of arrival."""

    close_rank = 2  # with the lab's clients: after the tasks, before the servers

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.heard: list[list[Heard]] = []
        self.closed = 0  # connections that ended while listening
        self._conns: list[ClientConnection] = []
        self._tasks: list[asyncio.Task[None]] = []

    def __len__(self) -> int:
        return len(self._conns)

    def sent_between(self, start: float, end: float) -> list[list[Heard]]:
        """What each client heard of the broadcasts sent from ``start`` to ``end`` (monotonic seconds)."""
        return [[h for h in heard if start <= h.sent_at < end] for heard in self.heard]

    async def _record(self, ws: ClientConnection, heard: list[Heard]) -> None:
        try:
            async for raw in ws:
                arrived = time.monotonic()
                frame = decode(raw)
                if isinstance(frame, Numbered):
                    heard.append(Heard(frame.seq, frame.sent_at, arrived))
        except Exception:  # the connection ended badly: counted below, never printed
            pass
        self.closed += 1

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        abort_all(ws for ws in self._conns if ws.transport is not None)

    def __repr__(self) -> str:
        return f"<Listeners {self.name}: {len(self)} clients of {self.url}>"


async def listen(lab: Lab, url: str, count: int, *, name: str, open_timeout: float = 10.0) -> Listeners:
    """Connect ``count`` clients to ``url``, each on its own connection, and record what they hear.

    The lab tracks them under ``name`` (re-running a cell closes the old ones first).
    Connections open a few at a time, as a crowd would arrive.

    Raises:
        LabError: a client could not connect (the message says why).
    """
    check_url(url)
    listeners = await lab.track(name, Listeners(name, url))
    opening = asyncio.Semaphore(50)

    async def one() -> None:
        async with opening:
            try:
                ws = await connect(url, open_timeout=scaled(open_timeout), ping_interval=None, compression=None)
            except (OSError, asyncio.TimeoutError) as exc:
                raise LabError(f"{name}: a client could not connect to {url}: {type(exc).__name__}: {exc}") from None
        heard: list[Heard] = []
        listeners._conns.append(ws)
        listeners.heard.append(heard)
        listeners._tasks.append(asyncio.create_task(listeners._record(ws, heard)))

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            with contextlib.suppress(Exception):
                await lab.close(name)
            raise result
    return listeners


# -- what the notes say: pure ---------------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    """Clients that heard exactly the same broadcasts: in this lab, the clients of one process.

    Attributes:
        clients: How many clients.
        heard: Broadcasts each of them heard.
        missed: Broadcasts sent meanwhile, by any process, that they never heard.
    """

    clients: int
    heard: int
    missed: int

    @property
    def fraction_missed(self) -> float:
        return self.missed / (self.heard + self.missed) if self.heard + self.missed else 0.0


def shares(heard: Sequence[Sequence[Heard]]) -> tuple[int, list[Share]]:
    """Every broadcast anyone heard, and the clients grouped by what they heard (largest group first).

    A broadcast is known by its number and its send time: two processes that
    number on their own both send a number 7, at different instants.
    """
    keys = [frozenset((h.seq, h.sent_at) for h in one) for one in heard]
    everything = frozenset().union(*keys) if keys else frozenset()
    groups = Counter(keys)
    found = [Share(clients, len(key), len(everything - key)) for key, clients in groups.most_common()]
    return len(everything), found


def missing(heard: Sequence[Sequence[Heard]], first: int, last: int) -> list[int]:
    """For each client, how many of the numbers ``first`` to ``last`` it never heard (one numbering: Redis's)."""
    wanted = set(range(first, last + 1))
    return [len(wanted - {h.seq for h in one}) for one in heard]


def latencies(heard: Sequence[Sequence[Heard]]) -> list[float]:
    """Seconds from send to arrival, for every broadcast every client heard."""
    return [h.arrived - h.sent_at for one in heard for h in one]
