"""Notebook 06's check: your ping interval, for a chain of real proxies that cut idle connections.

The student writes one pure function::

    def choose_ping_interval(idle_timeouts: list[float]) -> float | None:
        ...  # seconds between the client's pings, or None for no pings

    result = await wslab.checks.check_ping_interval(choose_ping_interval)
    result            # one row per chain: PASS, or FAIL with a hint

``idle_timeouts`` are the idle timeouts of the intermediaries on the path,
client side first. For each chain below the check builds the chain for real
(wslab fault proxies with ``idle-timeout``, and nginx where it is installed),
asks the function for an interval, connects a websockets client with that
``ping_interval`` through the chain, and watches the idle connection for
:data:`TIMEOUTS_WATCHED` times the smallest timeout. All chains at once:

============  ====================================================================
nginx+proxy   a corporate proxy (2.5 s) in front of nginx's ``proxy_read_timeout`` (1.2 s)
three hops    2.0 s, 0.9 s and 1.5 s: the smallest is not the first
mobile link   a hop that delays every chunk 0.15 s each way, then a 1.2 s timeout
control       the healthy control: a plain relay, nothing cuts idle connections:
              ``idle_timeouts`` is ``[]``
============  ====================================================================

A chain passes when the connection is still open at the end, and the
interval is not absurd: at most :data:`MAX_PINGS_PER_TIMEOUT` pings per
smallest timeout (every ping wakes every radio and proxy on the path), at
least :data:`MIN_IDLE_INTERVAL` s where nothing cuts idle connections. An
exception, or an answer that is not an interval, is reported in the chain's
row, in one line. A case runs in two steps: the run records a
:class:`ChainRun`, and :func:`judge`, pure, says PASS or FAIL with the hint.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection

from ..faults.proxy import start_proxy
from ..runtime.errors import LabError
from ..runtime.lab import Lab
from ..runtime.nginx import NGINX, start_nginx
from .report import Case, Report, describe_error

__all__ = [
    "CHAINS", "MAX_PINGS_PER_TIMEOUT", "MIN_IDLE_INTERVAL", "TIMEOUTS_WATCHED", "Chain", "ChainRun",
    "check_ping_interval", "judge",
]

Choose = Callable[[list[float]], Any]

# Each connection must survive this many times the smallest timeout on its path.
TIMEOUTS_WATCHED = 3
# More pings than this per smallest timeout is absurd: half the timeout is enough.
MAX_PINGS_PER_TIMEOUT = 10
# With no idle timeout on the path, pinging more often than this is absurd too.
MIN_IDLE_INTERVAL = 1.0
# Seconds watched on the path without an idle timeout.
CONTROL_WATCH = 2.0


@dataclass(frozen=True)
class Chain:
    """A path of intermediaries: ``hops`` from the client side, each ``("idle", seconds)``,
    ``("nginx", seconds)``, ``("latency", seconds)`` or ``("relay", 0)``; ``timeouts`` is what the
    student's function gets."""

    name: str
    hops: tuple[tuple[str, float], ...]
    description: str

    @property
    def timeouts(self) -> list[float]:
        return [seconds for kind, seconds in self.hops if kind in ("idle", "nginx")]

    @property
    def delay(self) -> float:
        """Seconds of latency each way, added by the chain's latency hops."""
        return sum(seconds for kind, seconds in self.hops if kind == "latency")


CHAINS = (
    Chain("nginx+proxy", (("idle", 2.5), ("nginx", 1.2)), "a corporate proxy (2.5 s) in front of nginx (1.2 s)"),
    Chain("three hops", (("idle", 2.0), ("idle", 0.9), ("idle", 1.5)), "idle timeouts 2.0 s, 0.9 s, 1.5 s"),
    Chain("mobile link", (("latency", 0.15), ("idle", 1.2)), "0.15 s each way, then a 1.2 s idle timeout"),
    Chain("control", (("relay", 0.0),), "a plain relay: nothing cuts idle connections"),
)


@dataclass
class ChainRun:
    """What happened on one chain, as recorded: all :func:`judge` needs.

    Attributes:
        chain: The chain.
        answer: What the function returned (None: no pings).
        error: What went wrong calling it, in one line.
        watched: Seconds the connection was watched.
        lived: Seconds it lived, if it was cut; None if still open at the end.
        front: What stood for nginx: ``"nginx"``, or a fault proxy where nginx is not installed.
        setup_error: The check could not build the chain (one line).
    """

    chain: Chain
    answer: float | None = None
    error: str | None = None
    watched: float = 0.0
    lived: float | None = None
    front: str = "nginx"
    setup_error: str | None = None
    measured: dict[str, Any] = field(default_factory=dict)


def _interval(choose: Choose, timeouts: list[float]) -> tuple[float | None, str | None]:
    """Call the function once: ``(interval, None)``, or ``(None, the one-line error)``."""
    call = f"choose_ping_interval({timeouts})"
    try:
        answer = choose(list(timeouts))
    except Exception as exc:
        return None, describe_error(call, exc)
    if inspect.isawaitable(answer):
        if inspect.iscoroutine(answer):
            answer.close()  # never awaited: close it, so Python doesn't warn later
        return None, f"{call} is async: make it a plain def that returns the interval"
    if answer is None:
        return None, None
    if isinstance(answer, bool) or not isinstance(answer, (int, float)) or not math.isfinite(answer) or answer <= 0:
        return None, f"{call} returned {answer!r}: return seconds between pings (a number above 0), or None"
    return float(answer), None


def judge(run: ChainRun) -> Case:
    """PASS or FAIL for one chain, with the hint that names what still fails. Pure: no I/O."""
    chain, name = run.chain, run.chain.name
    if run.setup_error is not None:
        return Case(name, False, f"the check could not build this chain: {run.setup_error}")
    if run.error is not None:
        if not chain.timeouts:
            return Case(name, False, f"{run.error}: nothing on this path cuts idle connections (the list is "
                                     "empty); return None (no pings needed) or websockets' default, 20 s")
        return Case(name, False, run.error)
    interval, timeouts = run.answer, chain.timeouts
    shown = "no pings" if interval is None else f"a ping every {interval:g} s"
    measured = {"interval": interval, "lived": run.lived, "watched": run.watched, **run.measured}
    if not timeouts:  # the control
        if interval is not None and interval < MIN_IDLE_INTERVAL:
            return Case(name, False, f"{shown} on a path where nothing cuts idle connections: more than one ping a "
                                     f"second for nothing; return None or websockets' default, 20 s", measured)
        return Case(name, True, f"{shown}: alive after {run.watched:.1f} s with nothing to cut it, as it should be",
                    measured)
    smallest = min(timeouts)
    if interval is not None and interval < smallest / MAX_PINGS_PER_TIMEOUT:
        return Case(name, False, f"{shown} is {smallest / interval:.0f} pings per {smallest:g} s timeout, more than "
                                 f"{MAX_PINGS_PER_TIMEOUT}: every ping wakes every radio and proxy on the path; "
                                 "half the smallest timeout is enough", measured)
    if run.lived is None:
        ratio = f"{interval / smallest:.2f}x the smallest timeout" if interval is not None else ""
        return Case(name, True, f"{shown} ({ratio}): alive after {run.watched:.1f} s, "
                                f"{TIMEOUTS_WATCHED} x the {smallest:g} s timeout", measured)
    cut = f"cut after {run.lived:.2f} s"
    if interval is None:
        return Case(name, False, f"{cut} with no pings: None means no keepalive, and the {smallest:g} s idle "
                                 "timeout cuts a quiet connection; return an interval below the smallest timeout",
                    measured)
    if math.isclose(interval, smallest, rel_tol=0.01):
        return Case(name, False, f"{cut}: {shown} races the {smallest:g} s timeout and loses, every time: the "
                                 "proxy's timer starts before your client's first ping is due; ping at half the "
                                 "smallest timeout", measured)
    if interval >= smallest:
        below = [t for t in timeouts if interval < t]
        which = f"below {below} but not below" if below else "not below"
        return Case(name, False, f"{cut}: {shown} is {which} the smallest idle timeout on the path, {smallest:g} s "
                                 f"(of {timeouts}): the smallest cuts first; ping at half of it", measured)
    delay = f" (here {chain.delay:g} s each way)" if chain.delay else ""
    return Case(name, False, f"{cut} although {shown} is below the {smallest:g} s timeout: delays on the path"
                             f"{delay} make the first ping reach the proxy late; leave room, ping at half the "
                             "smallest timeout", measured)


# -- running the chains -------------------------------------------------------------------------


async def _hold(ws: ServerConnection) -> None:
    await ws.wait_closed()


async def _chain(lab: Lab, choose: Choose, k: int, chain: Chain) -> ChainRun:
    run = ChainRun(chain)
    run.answer, run.error = _interval(choose, chain.timeouts)
    if run.error is not None:
        return run
    server = await lab.serve(_hold, name=f"chain{k}-server")
    upstream: Any = server
    for i, (kind, seconds) in reversed(list(enumerate(chain.hops))):  # built from the server out
        name = f"chain{k}-hop{i}"
        if kind == "nginx" and NGINX.find() is not None:
            upstream = await start_nginx(lab, upstream, name=name, read_timeout=seconds)
            continue
        proxy = await start_proxy(lab, upstream, name=name)
        if kind == "nginx":
            run.front = "a fault proxy standing in for nginx (not installed)"
        if kind == "latency":
            await proxy.set_fault("latency", delay=seconds)
        elif kind in ("idle", "nginx"):
            await proxy.set_fault("idle-timeout", timeout=seconds)
        upstream = proxy
    run.watched = TIMEOUTS_WATCHED * min(chain.timeouts) if chain.timeouts else CONTROL_WATCH
    ws = await lab.connect(upstream.url, name=f"chain{k}-client", ping_interval=run.answer, ping_timeout=5,
                           proxy=None)
    opened = time.monotonic()
    try:
        await asyncio.wait_for(ws.wait_closed(), run.watched)
        run.lived = time.monotonic() - opened
    except asyncio.TimeoutError:
        pass  # alive at the end of the watch
    run.measured["front"] = run.front
    return run


async def check_ping_interval(choose: Choose) -> Report:
    """Put ``choose``'s ping interval through each chain of :data:`CHAINS`, for real, all at once.

    Args:
        choose: Your ``choose_ping_interval(idle_timeouts)``: the idle timeouts (s) of the
            intermediaries on the path, client side first (possibly none); it returns the
            seconds between the client's pings, or None for no pings.
    """
    if not callable(choose):
        raise LabError(f"check_ping_interval needs your function choose_ping_interval(idle_timeouts), "
                       f"not {type(choose).__name__}")
    async with Lab() as lab:
        runs = await asyncio.gather(*(_safely(chain, _chain(lab, choose, k, chain)) for k, chain in enumerate(CHAINS)))
    return Report([judge(run) for run in runs])


async def _safely(chain: Chain, running: Coroutine[Any, Any, ChainRun]) -> ChainRun:
    """Run one chain; a problem of the check's own (a busy port, a deadline) becomes the chain's one line."""
    try:
        return await running
    except (LabError, OSError) as exc:
        return ChainRun(chain, setup_error=f"{type(exc).__name__}: {exc}")

