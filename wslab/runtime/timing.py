"""Deadlines: one knob to scale them, one way to wait, one way to close.

Nothing in the lab waits without a deadline. Three helpers make that cheap:

- :func:`wait_until` polls a condition until it holds or its deadline passes;
- :func:`close_within` closes a WebSocket connection, and aborts its TCP
  connection if the closing handshake takes longer than :data:`CLOSE_DEADLINE`;
- :func:`abort_all` aborts connections whose peers are known to be dead.

**One timing knob.** A slow or busy laptop runs everything later. Set the
environment variable ``WSLAB_TIMEOUT_FACTOR`` (default 1) to multiply every
deadline :func:`wait_until` waits and every timing bound the tests and the
notebooks assert, through :func:`scaled`::

    WSLAB_TIMEOUT_FACTOR=3 python3 tasks.py test

Measured values never change with it: only how long the lab is willing to
wait for them, and how far from the expected value they may land.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from websockets.frames import CloseCode

from .errors import LabError, WaitTimeout

__all__ = [
    "CLOSE_DEADLINE",
    "TIMEOUT_FACTOR",
    "POLL",
    "scaled",
    "wait_until",
    "close_within",
    "abort_all",
    "Closable",
]


def _factor() -> float:
    text = os.environ.get("WSLAB_TIMEOUT_FACTOR") or "1"  # set but empty: the default, like unset
    try:
        value = float(text)
    except ValueError:
        raise LabError(f"WSLAB_TIMEOUT_FACTOR={text!r} is not a number: set it to e.g. 2, or unset it") from None
    if not value >= 1:
        raise LabError(f"WSLAB_TIMEOUT_FACTOR={text!r} must be 1 or more: it only ever makes deadlines longer")
    return value


# Every deadline and timing bound is multiplied by this (environment variable WSLAB_TIMEOUT_FACTOR).
TIMEOUT_FACTOR = _factor()

# How long closing anything may take before the lab aborts its TCP connection.
CLOSE_DEADLINE = 1.0

# Seconds between two checks of a condition: short next to every deadline in the lab.
POLL = 0.01


def scaled(seconds: float) -> float:
    """``seconds`` times :data:`TIMEOUT_FACTOR`: use it for every deadline and timing bound you assert."""
    return seconds * TIMEOUT_FACTOR


async def wait_until(
    predicate: Callable[[], object | Awaitable[object]], timeout: float, what: str, *, poll: float = POLL
) -> None:
    """Wait until ``predicate()`` is true, at most ``scaled(timeout)`` seconds.

    ``predicate`` may be a plain function or a coroutine function. Its result
    counts as true the way ``if`` sees it: a non-empty list of events is true.

    Raises:
        WaitTimeout: ``"<what> did not happen within <timeout> s"``.
    """
    loop = asyncio.get_running_loop()
    deadline = scaled(timeout)
    end = loop.time() + deadline
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() >= end:
            raise WaitTimeout(f"{what} did not happen within {deadline:g} s")
        await asyncio.sleep(poll)


class Closable(Protocol):
    """A websockets connection, client or server side: what :func:`close_within` needs."""

    @property
    def transport(self) -> asyncio.Transport: ...

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None: ...

    async def wait_closed(self) -> None: ...


async def close_within(
    ws: Closable, deadline: float = CLOSE_DEADLINE, code: int = CloseCode.NORMAL_CLOSURE, reason: str = ""
) -> None:
    """Close ``ws`` with ``code``; abort the TCP connection if that takes longer than ``deadline``.

    A ``send()`` blocked on a peer that stopped reading holds the connection:
    ``close()`` then ignores websockets' ``close_timeout`` (it queues the close
    frame behind the stuck bytes). Only ``transport.abort()`` frees it.
    """
    try:
        await asyncio.wait_for(ws.close(code, reason), deadline)
    except (asyncio.TimeoutError, Exception):
        ws.transport.abort()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(ws.wait_closed(), deadline)


def abort_all(connections: Iterable[Closable]) -> int:
    """Abort every connection in ``connections`` now, without a closing handshake. Returns how many.

    For connections whose peers are known to be dead (an experiment's victims):
    a closing handshake would only wait out its deadline.
    """
    count = 0
    for ws in list(connections):
        ws.transport.abort()
        count += 1
    return count
