"""Tokens that expire across reconnects: three clients, one server that closes with 4401 at expiry.

A server that checks a short-lived token at the handshake (:mod:`wslab.servers.auth`)
and closes each connection with 4401 "token expired" when its token runs out.
:func:`measure_tokens` runs three clients against it at once, with replay on
(:class:`~wslab.servers.replay.ReplayServer`), and :func:`summarize` reads,
from the timeline alone, what each one went through:

1. ``fixed URL``: the token is minted once and baked into the URL, as a page
   that builds its URL at load time does. It reconnects after the 4401, with the
   same, expired token: HTTP 401, and it stops.
2. ``token per attempt``: ``url`` is a function that mints a fresh token for
   every attempt, but the client treats 4401 like any other close: with a
   connection shorter than ``min_uptime`` (5 s) each expiry counts as a
   failure, so its backoff grows expiry after expiry.
3. ``refresh on 4401``: the same function, and 4401 means "refresh": the
   backoff starts over at every expiry (:data:`~wslab.clients.closecodes.REFRESH`).

All three use the same backoff (full jitter from ``min_delay``, seeded).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..clients import closecodes
from ..clients.policy import Message
from ..clients.reconnect import ReconnectingClient
from ..runtime.errors import WaitTimeout
from ..runtime.lab import Lab
from ..runtime.timeline import Event, EventKind
from ..runtime.timing import wait_until
from ..servers import Gate, ReplayServer, TokenSigner, start_app
from ..servers.auth import TOKEN_EXPIRED

__all__ = ["STRATEGIES", "TokenRun", "intervals", "measure_tokens", "summarize"]

STRATEGIES = ("fixed URL", "token per attempt", "refresh on 4401")


@dataclass(frozen=True)
class TokenRun:
    """What one client went through.

    Attributes:
        strategy: Which of :data:`STRATEGIES`.
        expiries: Connections the server closed with 4401.
        rejected: Handshakes refused with HTTP 401.
        recoveries: For each 4401, seconds until the client was connected again (``inf``: never).
        missed: Messages published while the client ran that it never received (replay on).
        received: Distinct messages received.
        gave_up: Why the client stopped, if it did.
        client: Its source name on the timeline.
    """

    strategy: str
    expiries: int
    rejected: int
    recoveries: list[float]
    missed: int
    received: int
    gave_up: str | None
    client: str = ""

    def row(self) -> dict[str, Any]:
        finite = [r for r in self.recoveries if math.isfinite(r)]
        never = len(self.recoveries) - len(finite)
        return {
            "client": self.strategy,
            "closed with 4401": self.expiries,
            "rejected handshakes (401)": self.rejected,
            "time to recover, mean (s)": round(statistics.fmean(finite), 2) if finite else "never",
            "time to recover, max (s)": "never" if never else (round(max(finite), 2) if finite else "-"),
            "messages missed": self.missed,
            "gave up": self.gave_up or "no",
        }


def summarize(strategy: str, events: Iterable[Event], *, published: range, seen: set[int],
              gave_up: str | None = None, client: str = "") -> TokenRun:
    """A client's :class:`TokenRun` from its own timeline events. No I/O.

    ``published`` is the range of numbers the server published while the client ran
    (from the first it received); ``seen`` the numbers it received.
    """
    events = sorted(events, key=lambda e: e.t)
    expiries = [e for e in events if e.kind == EventKind.CLOSE and e.code == TOKEN_EXPIRED]
    opens = [e.t for e in events if e.kind == EventKind.OPEN]
    recoveries = []
    for close in expiries:
        later = [t for t in opens if t > close.t]
        recoveries.append(later[0] - close.t if later else math.inf)
    rejected = sum(1 for e in events if e.kind == EventKind.ERROR and "HTTP 401" in e.detail)
    received = len(seen & set(published))
    return TokenRun(strategy, len(expiries), rejected, recoveries, len(published) - received, received, gave_up,
                    client)


def intervals(events: Iterable[Event], *, until: float) -> list[tuple[float, float]]:
    """When a client was connected: ``(open, close)`` pairs from its events, the last one open until ``until``."""
    spans, opened = [], None
    for e in sorted(events, key=lambda e: e.t):
        if e.kind == EventKind.OPEN and opened is None:
            opened = e.t
        elif e.kind == EventKind.CLOSE and opened is not None:
            spans.append((opened, e.t))
            opened = None
    if opened is not None:
        spans.append((opened, until))
    return spans


def _client(strategy: str, url: str, signer: TokenSigner, lab: Lab, options: dict[str, Any]) -> ReconnectingClient:
    fresh: Callable[[], str] = lambda: signer.url(url, "alice")  # noqa: E731 - a token minted per call
    if strategy == "fixed URL":
        # Retries after 4401 (as ReconnectingWebSocket retries after anything), with the same URL.
        return ReconnectingClient(fresh(), retry_table={**closecodes.RETRY, TOKEN_EXPIRED: True}, **options)
    if strategy == "token per attempt":
        return ReconnectingClient(fresh, retry_table={**closecodes.RETRY, TOKEN_EXPIRED: True},
                                  refresh_codes=frozenset(), **options)
    return ReconnectingClient(fresh, **options)  # refresh on 4401: the default for a url function


async def measure_tokens(
    lab: Lab, *, lifetime: float = 2.0, duration: float = 9.0, interval: float = 0.05, min_delay: float = 0.5,
    seed: int = 1,
) -> list[TokenRun]:
    """Run the three :data:`STRATEGIES` at once for ``duration`` s against a server whose tokens last ``lifetime`` s.

    The server publishes a numbered message every ``interval`` seconds and
    replays a reconnecting client's gap. Everything runs in ``lab`` under
    names starting with ``tokens``, and is closed before this returns.
    """
    signer = TokenSigner(os.urandom(32), lifetime=lifetime)
    app = ReplayServer(lab.timeline, name="tokens-server", gate=Gate(auth=signer))
    server = await start_app(lab, app)
    lab.spawn(app.broadcast_forever(interval), name="tokens-broadcasts")
    clients: dict[str, ReconnectingClient] = {}
    seen: dict[str, set[int]] = {}
    # The summaries read each client's events by its name: a second run in the same lab (a cell run
    # twice) takes new names, or it would count the first run's 401s and expiries as its own.
    taken = {e.source for e in lab.timeline.events}
    run = next(n for n in itertools.count(1) if f"tokens-{n}.1" not in taken)
    names = [f"tokens-{run}.{i + 1}" for i in range(len(STRATEGIES))]
    try:
        for i, strategy in enumerate(STRATEGIES):
            name = names[i]
            options = dict(name=name, timeline=lab.timeline, min_delay=min_delay, jitter="full", seed=seed + i,
                           record_messages=False, ping_interval=None)
            client = clients[strategy] = _client(strategy, server.url, signer, lab, options)
            seen[strategy] = set()
            client.on_message = lambda m, s=seen[strategy]: s.add(m.seq) if isinstance(m, Message) else None
            lab.spawn(client.run(), name=name)
        await asyncio.sleep(duration)
        last = app.next_seq

        def caught_up() -> bool:  # every client still trying is back, and has what was published
            return all(c.gave_up is not None or (max(seen[s], default=-1) >= last - 1 and c.state == "open")
                       for s, c in clients.items())

        # A message counts as missed only if it never arrives: give a client that is between
        # an expiry and its reconnection the time to come back and have its gap replayed.
        with contextlib.suppress(WaitTimeout):
            await wait_until(caught_up, 10.0, "every client back")
        # Each client's run starts with the first message it got (its first connection asks for no replay).
        return [summarize(strategy, lab.timeline.select(source=client.name),
                          published=range(min(seen[strategy], default=last), last), seen=seen[strategy],
                          gave_up=client.gave_up, client=client.name)
                for strategy, client in clients.items()]
    finally:
        for client in clients.values():
            await client.close()
        for name in names + ["tokens-broadcasts", "tokens-server"]:
            await lab.close(name)
