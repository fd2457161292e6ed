"""Notebook 09's experiments on a real Tomcat, and the analyses of what Tomcat logged.

Two kinds of run feed notebook 09:

- a vanish run (:func:`wslab.faults.netns.run_vanish`): clients vanish for
  real, in a network namespace. The functions below read its log: how long
  from the fault to an exception or to a removal (:func:`after_fault`), how
  many log lines each endpoint writes per second (:func:`log_rate`), and
  which leaked session each failed broadcast was for (:func:`failures_per_session`);
- :func:`tomcat_deaths`: notebook 01's deaths, inflicted by the lab's fault
  proxy between a Python client and Tomcat, on both endpoints at once: a
  clean close, a FIN, an RST, and a stall. Each :class:`Death` says what
  Tomcat logged for the broken endpoint (which has no ``@OnError``, so Tomcat
  logs the exception with its stack trace), and when the fixed endpoint
  removed its session.

The analyses are pure functions of a :class:`~wslab.runtime.javalog.TomcatLog`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..faults.netns import VanishRun
from ..faults.proxy import FaultProxy, start_proxy
from ..runtime.errors import LabError
from ..runtime.javalog import LogRecord, TomcatLog
from ..runtime.lab import Lab
from ..runtime.timing import wait_until
from ..runtime.tomcat import Tomcat
from ..servers.java import MapChange, map_changes

__all__ = [
    "DEATHS", "Death", "after_fault", "endpoint_records", "failures_per_session", "log_rate", "map_over_time",
    "IdleRun", "idle_run", "tomcat_deaths", "vanished_for_real",
]

# The broadcast loop's failure line in Broken.java: "broadcast to session [3] failed".
_FAILED = re.compile(r"^broadcast to session \[(?P<id>[^\]]+)\] failed")


# -- analyses of a log ------------------------------------------------------------------------------


def endpoint_records(log: TomcatLog, endpoint: str) -> list[LogRecord]:
    """The records an endpoint (``"Broken"``, ``"Fixed"``) caused: its own lines, and Tomcat's
    "No error handling configured for [lab.Broken]" for its sessions."""
    return [r for r in log.records if r.at is not None
            and (r.source.startswith(f"lab.{endpoint}.") or f"[lab.{endpoint}]" in r.message)]


def log_rate(log: TomcatLog, endpoint: str, start: float, end: float, step: float = 0.5) -> list[tuple[float, float]]:
    """Log lines per second that ``endpoint`` caused, in windows of ``step`` seconds from ``start`` to ``end``.

    Returns ``(window's start - start, lines per second)`` pairs. A record counts all its lines: the header
    and every line of its stack trace, as they fill the log file.
    """
    windows = max(1, round((end - start) / step))
    lines = [0] * windows
    for record in endpoint_records(log, endpoint):
        assert record.at is not None
        index = int((record.at - start) // step)
        if 0 <= index < windows:
            lines[index] += len(record.lines)
    return [(i * step, count / step) for i, count in enumerate(lines)]


def map_over_time(log: TomcatLog, endpoint: str) -> list[tuple[float, int]]:
    """``(time, sessions in the map)`` after each open and removal ``endpoint`` logged, counted from the events.

    Not the sizes the lines print: sessions removed at the same moment on different threads
    may print theirs out of order (each reads the size after its own removal).
    """
    size, sizes = 0, []
    for change in sorted(map_changes(log, endpoint), key=lambda c: c.at):
        size += 1 if change.change == "opened" else -1
        sizes.append((change.at, size))
    return sizes


def failures_per_session(log: TomcatLog, start: float, end: float) -> dict[str, int]:
    """How many failed broadcasts Broken logged for each session id in ``[start, end)``."""
    counts: Counter[str] = Counter()
    for record in log.records:
        if record.at is not None and start <= record.at < end:
            match = _FAILED.match(record.message)
            if match:
                counts[match["id"]] += 1
    return dict(counts)


def after_fault(log: TomcatLog, text: str, fault_at: float, *, endpoint: str | None = None) -> list[float]:
    """Seconds from ``fault_at`` to each record containing ``text`` (of ``endpoint``'s, if given)."""
    records = endpoint_records(log, endpoint) if endpoint else log.records
    return [r.at - fault_at for r in records if r.at is not None and r.at >= fault_at and r.contains(text)]


# -- the deaths, through the fault proxy ------------------------------------------------------------


@dataclass
class Death:
    """One death, as Tomcat saw it.

    Attributes:
        name: Notebook 01's name for it, e.g. ``"killed (FIN)"``.
        how: What the lab did: ``"client: close()"`` or ``"proxy: reset"``.
        exception: The exception Tomcat logged for the broken endpoint's session (None: none logged);
            for the stall, which only the fixed endpoint suffers, the one its failed send logged.
        thrown_at: Where it was thrown: its innermost frame, e.g. ``NioEndpoint$NioSocketWrapper.fillReadBuffer``.
        logged_after: Seconds from the fault to that record.
        removal: How the fixed endpoint's session left the map, e.g. ``onError java.io.EOFException``.
        removed_after: Seconds from the fault to that removal (None: still in the map).
        record: Tomcat's whole record of the exception (its trace too), None if none.
    """

    name: str
    how: str
    exception: str | None = None
    thrown_at: str | None = None
    logged_after: float | None = None
    removal: str | None = None
    removed_after: float | None = None
    record: LogRecord | None = field(default=None, repr=False)

    def row(self) -> dict[str, Any]:
        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f} s"

        return {"death": self.name, "how": self.how, "Tomcat logged": self.exception or "nothing",
                "thrown at": self.thrown_at or "-", "after": seconds(self.logged_after),
                "Fixed: removed by": self.removal or "still in the map", "removed after": seconds(self.removed_after)}


# Name, what the lab does, what Broken's record says (any of these; none: don't wait for one), seconds it may take.
# A FIN can show up as a reset: if a broadcast writes to the closed connection before Tomcat reads the FIN,
# the proxy's kernel answers with an RST, and the read meets that instead.
DEATHS: tuple[tuple[str, str, tuple[str, ...], float], ...] = (
    ("clean close", "client: close()", (), 5.0),
    ("killed (FIN)", "proxy: close", ("java.io.EOFException", "Connection reset"), 5.0),
    ("reset (RST)", "proxy: reset", ("Connection reset",), 5.0),  # on the read, or "... by peer" on a write
    ("vanished (stall)", "proxy: stall", ("Write timeout",), 30.0),  # Fixed only: see tomcat_deaths
)


async def _read_all(ws: Any, received: list[float]) -> None:
    async for _ in ws:
        received.append(time.time())


# One client at a time opens a session on a given Tomcat, so that the next "opened" line is its own:
# the log is the only place that says which session id a connection got.
_OPENING: weakref.WeakKeyDictionary[Tomcat, asyncio.Lock] = weakref.WeakKeyDictionary()


async def _open(lab: Lab, tomcat: Tomcat, proxy: FaultProxy, path: str, name: str,
                **options: Any) -> tuple[Any, str, str, list[float]]:
    """A Python client on ``path`` through the proxy: its connection, its proxy link, its session id, and the
    times it received each message (a background task reads every broadcast: only a fault stops it)."""
    endpoint = path.strip("/").partition("?")[0].capitalize()

    def opened() -> list[MapChange]:  # only the opens: removals of other sessions may come in between
        return [c for c in map_changes(tomcat.log(), endpoint) if c.change == "opened"]

    async with _OPENING.setdefault(tomcat, asyncio.Lock()):
        before, links = len(opened()), {c.label for c in proxy.connections}
        ws = await lab.connect(f"wss://127.0.0.1:{proxy.port}{path}", name=name, ssl=tomcat.ssl_context(),
                               compression=None, max_size=None, **options)  # real bytes: no compression
        received: list[float] = []
        lab.spawn(_read_all(ws, received), name=f"{name}-reader")
        await wait_until(lambda: len(opened()) > before, 10, f"{endpoint}'s @OnOpen", poll=0.05)
        session = opened()[before].session
    link = next(c.label for c in proxy.connections if c.label not in links)
    return ws, link, session, received


def _removal(log: TomcatLog, session: str) -> MapChange | None:
    """Fixed's line for the removal of ``session``, if it logged one."""
    return next((c for c in map_changes(log, "Fixed") if c.session == session and c.change.startswith("removed")),
                None)


def _failure(log: TomcatLog, texts: tuple[str, ...], since: float) -> LogRecord | None:
    """The first record of a session failing with one of ``texts``: Tomcat's for a Broken session (the
    exception or its cause, with the trace), or Fixed's failed send (``send to session [4] failed: ...``)."""
    for record in log.records:
        if record.at is None or record.at < since:
            continue
        trace = record.trace if "[lab.Broken]" in record.message else None
        if trace is not None and any(trace.contains(text) for text in texts):
            return record
        if record.source == "lab.Fixed.broadcast" and any(text in record.message for text in texts):
            return record
    return None


async def _one_death(lab: Lab, tomcat: Tomcat, proxy: FaultProxy, death: Death, texts: tuple[str, ...],
                     timeout: float) -> Death:
    key = death.name.split()[0]
    paths = ("/fixed?payloadBytes=262144",) if key == "vanished" else ("/broken", "/fixed")
    opened = [await _open(lab, tomcat, proxy, path, f"{key}-{path[1:7]}") for path in paths]
    fault_at = time.time()
    for ws, link, _, _ in opened:
        if death.how.startswith("client"):
            await ws.close()
        else:
            await proxy.set_fault(death.how.removeprefix("proxy: "), conn=link)
    fixed_session = opened[-1][2]
    try:
        await wait_until(lambda: _removal(tomcat.log(), fixed_session) is not None, timeout,
                         f"Fixed removing the session after a {key}", poll=0.05)
        if texts:
            await wait_until(lambda: _failure(tomcat.log(), texts, fault_at) is not None, timeout,
                             f"Tomcat logging {' or '.join(map(repr, texts))}", poll=0.05)
    except LabError:
        pass  # the row then says what did not happen
    await asyncio.sleep(0.3)  # the rest of the last record: its frames
    log = tomcat.log()
    change = _removal(log, fixed_session)
    if change is not None:
        death.removal, death.removed_after = change.change.removeprefix("removed by "), change.at - fault_at
    record = _failure(log, texts, fault_at) if texts else None
    if record is not None and record.at is not None:
        death.record, death.logged_after = record, record.at - fault_at
        if record.trace is not None:  # Tomcat's record for Broken: the exception, thrown at its innermost frame
            death.exception = record.trace.exception
            frame = record.trace.frames[0] if record.trace.frames else None
            death.thrown_at = f"{frame.short_class}.{frame.method}" if frame else None
        else:  # Fixed's own line: "send to session [4] failed: java.io.IOException: ..."
            death.exception = record.message.partition("failed: ")[2]
            death.thrown_at = "sendText, in Fixed.broadcast"
    return death


async def tomcat_deaths(lab: Lab, tomcat: Tomcat) -> list[Death]:
    """Notebook 01's deaths, through the fault proxy, on Tomcat's two endpoints at once. Takes a few seconds.

    For each death, one Python client connects to ``/broken`` and one to ``/fixed``, both through
    the proxy; then both die the same way. The messages are small (4 bytes), so that the broadcast
    seldom writes at the very moment of the fault: the read, not a write, meets the error first,
    as in the seed. The stall is different: it hits ``/fixed`` only, with 256 KiB messages
    (``/fixed?payloadBytes=262144``), so that the stalled link's buffers fill within seconds.
    On ``/broken`` a stall would block the broadcast for Tomcat's default 20 s, holding up every
    other Broken session meanwhile.
    """
    proxy = await start_proxy(lab, tomcat.port, name="tomcat-proxy")
    return [await _one_death(lab, tomcat, proxy, Death(name, how), texts, timeout)
            for name, how, texts, timeout in DEATHS]


def vanished_for_real(run: VanishRun) -> Death:
    """The same row for a vanish run (:func:`~wslab.faults.netns.run_vanish` on both endpoints): its
    first Broken session to fail with ``Connection timed out``, and its first Fixed session removed."""
    death = Death("vanished (for real)", f"namespace: DROP, kill -9 (tcp_retries2={run.tcp_retries2})")
    record = _failure(run.log, (run.until,), run.fault_at)
    if record is not None and record.at is not None and record.trace is not None:
        frame = record.trace.frames[0] if record.trace.frames else None
        death.exception, death.logged_after = record.trace.exception, record.at - run.fault_at
        death.record = record
        death.thrown_at = f"{frame.short_class}.{frame.method}" if frame else None
    removed = [c for c in map_changes(run.log, "Fixed") if c.change.startswith("removed") and c.at >= run.fault_at]
    if removed:
        death.removal, death.removed_after = removed[0].change.removeprefix("removed by "), removed[0].at - run.fault_at
    return death


# -- idle timeouts, through the fault proxy ----------------------------------------------------------


@dataclass
class IdleRun:
    """Sessions with idle timeouts, some of whose clients vanished (a stall: nothing comes from them).

    Attributes:
        removed_after: For each vanishing client's path, seconds from the stall to each removal.
        watched: Seconds from the stall to the end of the run.
        healthy_received: Messages the healthy client received from the stall to the end.
    """

    removed_after: dict[str, list[float]]
    watched: float
    healthy_received: int


async def idle_run(lab: Lab, tomcat: Tomcat, vanishing: Sequence[str], healthy: str, *, expect: int,
                   ping: float = 0.5, watch: float = 1.0, timeout: float = 20.0, name: str = "idle") -> IdleRun:
    """Python clients on the ``vanishing`` paths and one on ``healthy``, all through a fault proxy,
    each pinging every ``ping`` s. Then the vanishing ones stall: the proxy stops relaying their
    links, so Tomcat reads nothing more from them, not even a ping, while its broadcasts to them still
    go out into the proxy's buffers. Waits until ``expect`` of them left Fixed's map (at most
    ``timeout`` s, scaled), then ``watch`` seconds more.
    """
    proxy = await start_proxy(lab, tomcat.port, name=f"{name}-proxy")
    # ping_timeout=None: the client itself must never give up; only Tomcat's timeouts are measured
    options = {"ping_interval": ping, "ping_timeout": None}
    clients = [await _open(lab, tomcat, proxy, path, f"{name}-{i}", **options) for i, path in enumerate(vanishing)]
    steady = await _open(lab, tomcat, proxy, healthy, f"{name}-healthy", **options)
    await asyncio.sleep(0.5)  # pings and broadcasts flow
    stall_at = time.time()
    for _, link, _, _ in clients:
        await proxy.set_fault("stall", conn=link)
    sessions = {session: path for (_, _, session, _), path in zip(clients, vanishing, strict=True)}

    def removed() -> list[MapChange]:
        return [c for c in map_changes(tomcat.log(), "Fixed")
                if c.session in sessions and c.change.startswith("removed")]

    with contextlib.suppress(LabError):  # fewer removals than expected: the result says so
        await wait_until(lambda: len(removed()) >= expect, timeout, f"{expect} idle sessions removed", poll=0.1)
    await asyncio.sleep(watch)
    end = time.time()
    removed_after: dict[str, list[float]] = {path: [] for path in vanishing}
    for change in removed():
        removed_after[sessions[change.session]].append(change.at - stall_at)
    return IdleRun(removed_after, end - stall_at, sum(1 for at in steady[3] if at >= stall_at))
