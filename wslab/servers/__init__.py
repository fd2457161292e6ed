"""Servers: the seed's naive server, the fixed ones, the replaying one and the Redis backplane.

Every one is a :class:`ServerApp`.

:data:`SERVERS` lists every variant by name, in the order of notebook 02's
ablation; ``wslab serve --server NAME`` offers the same list.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ..runtime.timeline import Timeline
from .backplane import BackplaneServer, start_backplane
from .base import ServerApp, SessionServer, start_app
from .fixed import BroadcastServer, FixedServer, Outbox, set_tcp_user_timeout
from .naive import NaiveServer
from .replay import ReplayServer
from .wire import stamp, unstamp

__all__ = [
    "SERVERS",
    "BackplaneServer",
    "BroadcastServer",
    "FixedServer",
    "NaiveServer",
    "Outbox",
    "ReplayServer",
    "ServerApp",
    "SessionServer",
    "make_app",
    "set_tcp_user_timeout",
    "stamp",
    "start_app",
    "start_backplane",
    "unstamp",
]

# Every server variant by name: a factory called as ``factory(timeline=..., name=...)`` (keyword
# options go to it too), and a one-line description.
SERVERS: dict[str, tuple[Callable[..., ServerApp], str]] = {
    "naive": (NaiveServer, "the seed's session map: never removes a session, serial broadcast loop"),
    "removal": (
        functools.partial(FixedServer, keepalive=False, isolation=False),
        "removes a session when its handler ends or a send fails; serial broadcast loop",
    ),
    "keepalive": (
        functools.partial(FixedServer, isolation=False),
        "removal, plus pings that drop a peer whose pong is late; serial broadcast loop",
    ),
    "fixed": (FixedServer, "removal, keepalive, and a bounded outbox per client with a send deadline"),
    "broadcast": (BroadcastServer, "removal, websockets' own keepalive and broadcast(): never waits, never bounds"),
    "replay": (ReplayServer, "numbers broadcasts; replays a reconnecting client's gap from a bounded history"),
    "backplane": (
        BackplaneServer, "fixed, with broadcasts numbered, fanned out and replayed through Redis (--backplane)",
    ),
}


def make_app(variant: str, timeline: Timeline | None = None, name: str | None = None, **options: Any) -> ServerApp:
    """A server app from :data:`SERVERS`: ``make_app("fixed", lab.timeline, ping_interval=0.2)``."""
    try:
        factory, _ = SERVERS[variant]
    except KeyError:
        raise ValueError(f"unknown server {variant!r}: choose one of {', '.join(SERVERS)}") from None
    return factory(timeline=timeline, name=name or variant, **options)
