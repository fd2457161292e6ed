"""Notebook 04's check: your reconnect decisions, inside the real client, through real faults.

The student writes one pure function, the decision a reconnecting client
makes after every close and every failed attempt::

    def decide(close_code: int | None, attempt: int) -> float | None:
        ...  # seconds to wait before reconnecting, or None to stop

    result = await wslab.checks.check_reconnect_policy(decide)
    result            # one row per case: PASS, or FAIL with a hint

The check plugs ``decide`` into :class:`~wslab.clients.reconnect.ReconnectingClient`
in place of its :class:`~wslab.clients.policy.ReconnectPolicy` (the client is
the I/O, the policy the decisions: either can be swapped), and runs four
clients at once, each against its own real server:

=========  ================================================================
healthy    the server keeps the connection open: it must never be reconnected
refused    the fault proxy refuses connections for 1.5 s, then lets them through
restart    the server restarts for real (close 1012, down 1 s, listening again)
1008       the server closes every connection with 1008 (policy violation)
=========  ================================================================

A case fails on a retry storm (more than :data:`MAX_ATTEMPTS_PER_SECOND`
connection attempts within one second), on any reconnection after 1008, on
giving up after 1012 or after a refused connect, and on coming back later
than :data:`BACK_WITHIN` seconds after the server did. ``decide`` raising,
returning something that is not a delay, or blocking the loop is reported
in its case's row, in one line.

As elsewhere in :mod:`wslab.checks`, a case runs in two steps: the run
records what happened (:class:`CaseRun`), and :func:`judge`, a pure function
tested without sockets, says PASS or FAIL with the hint.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection

from ..clients.policy import CloseEvent, Decision, GiveUp, Retry
from ..clients.reconnect import ReconnectingClient
from ..faults.proxy import start_proxy
from ..runtime.errors import LabError, WaitTimeout
from ..runtime.lab import Lab
from ..runtime.timeline import EventKind
from ..runtime.timing import scaled, wait_until
from .report import Case, Report, describe_error

__all__ = [
    "BACK_WITHIN", "CASES", "MAX_ATTEMPTS_PER_SECOND", "Call", "CaseRun", "FunctionPolicy", "check_reconnect_policy",
    "judge", "peak_attempts",
]

Decide = Callable[[int | None, int], Any]

CASES = ("healthy", "refused", "restart", "1008")

# A retry storm, as this check counts it: more connection attempts than this within any one second.
# ReconnectingWebSocket's defaults make 1 a second at first; an immediate retry makes thousands.
MAX_ATTEMPTS_PER_SECOND = 10
# Once the server accepts connections again, the client must be back within this many seconds (scaled).
BACK_WITHIN = 2.0
REFUSED_FOR = 1.5  # seconds the proxy refuses connections in the "refused" case
DOWNTIME = 1.0  # seconds the server is down in the "restart" case
WATCH_1008 = 1.5  # seconds the "1008" case watches for reconnections
# ``attempt`` starts again at 1 after a connection that stayed up this long (ReconnectPolicy's min_uptime).
MIN_UPTIME = 0.5
# The check stops a client after this many decisions: a storm is cut short, not run for the whole case.
MAX_DECISIONS = 100
# decide() is called on the event loop: longer than this, and it blocks every connection on it.
SLOW_DECIDE = 0.1


@dataclass(frozen=True)
class Call:
    """One call of ``decide``: its arguments and what it returned (or the one-line error)."""

    close_code: int | None
    attempt: int
    returned: Any = None
    error: str | None = None


class FunctionPolicy:
    """:class:`~wslab.clients.policy.ReconnectPolicy`'s interface, with a plain function deciding.

    ``decide(close_code, attempt)`` gets the close code (None when the attempt
    failed to connect) and the retry number since the last connection that
    stayed up ``min_uptime`` seconds; it returns a delay in seconds, or None to
    stop. Every call is recorded. A call that raises, returns something else,
    or takes longer than :data:`SLOW_DECIDE` stops the client, and so does the
    :data:`MAX_DECISIONS`-th call.
    """

    def __init__(self, decide: Decide, *, min_uptime: float = MIN_UPTIME, max_decisions: int = MAX_DECISIONS) -> None:
        self.function = decide
        self.min_uptime = min_uptime
        self.max_decisions = max_decisions
        self.retries = 0
        self.calls: list[Call] = []
        self.error: str | None = None  # what went wrong in decide(), in one line
        self.cut_short = False  # the check stopped a storm

    def decide(self, outcome: CloseEvent | BaseException, uptime: float = 0.0) -> Decision:
        code = None
        if isinstance(outcome, CloseEvent):
            code = outcome.code
            if uptime >= self.min_uptime:
                self.retries = 0
        attempt = self.retries + 1
        if len(self.calls) >= self.max_decisions:
            self.cut_short = True
            return GiveUp(f"the check stopped the client after {self.max_decisions} decisions")
        started = time.perf_counter()
        try:
            answer = self.function(code, attempt)
        except Exception as exc:
            return self._stop(Call(code, attempt, error=describe_error(f"decide({code}, {attempt})", exc)))
        took = time.perf_counter() - started
        if inspect.isawaitable(answer):
            if inspect.iscoroutine(answer):
                answer.close()  # never awaited: close it, so Python doesn't warn later
            return self._stop(Call(code, attempt, error="decide() is async: make it a plain def that returns "
                                                        "the delay at once (the client does the waiting)"))
        if took > SLOW_DECIDE:
            return self._stop(Call(code, attempt, answer, f"decide({code}, {attempt}) took {took:.2f} s: it blocks "
                                   "every connection on the loop; don't sleep in it, return the delay"))
        if answer is None:
            self.calls.append(Call(code, attempt, None))
            return GiveUp(f"decide({code}, {attempt}) returned None")
        if isinstance(answer, bool) or not isinstance(answer, (int, float)) or not math.isfinite(answer) or answer < 0:
            return self._stop(Call(code, attempt, answer, f"decide({code}, {attempt}) returned {answer!r}: "
                                   "return a delay in seconds (a number, 0 or more) or None to stop"))
        self.calls.append(Call(code, attempt, float(answer)))
        self.retries += 1
        return Retry(float(answer), self.retries)

    def _stop(self, call: Call) -> GiveUp:
        self.calls.append(call)
        self.error = call.error
        return GiveUp(call.error or "")


@dataclass
class CaseRun:
    """What happened to one case's client, as recorded: all :func:`judge` needs.

    Attributes:
        case: One of :data:`CASES`.
        calls: Every call of ``decide``, in order.
        attempt_times: When each connection attempt started (seconds, timeline clock).
        opens: How many connections opened.
        close_codes: The code of each connection's close, in order.
        error: What went wrong in ``decide``, in one line.
        cut_short: The check stopped the client after too many decisions.
        back_after: Seconds from the server accepting connections again to the
            client's connection; None if it did not come back in time.
        setup_error: The case could not be run (one line).
    """

    case: str
    calls: list[Call] = field(default_factory=list)
    attempt_times: list[float] = field(default_factory=list)
    opens: int = 0
    close_codes: list[int] = field(default_factory=list)
    error: str | None = None
    cut_short: bool = False
    back_after: float | None = None
    setup_error: str | None = None


def peak_attempts(times: Sequence[float], window: float = 1.0) -> int:
    """The most attempts that started within any ``window`` seconds."""
    times = sorted(times)
    peak, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= window:
            first += 1
        peak = max(peak, last - first + 1)
    return peak


def _storm(run: CaseRun, during: str) -> str | None:
    """The hint for a retry storm, if there was one."""
    peak = peak_attempts(run.attempt_times)
    if peak <= MAX_ATTEMPTS_PER_SECOND and not run.cut_short:
        return None
    delays = [c.returned for c in run.calls if isinstance(c.returned, float)]
    cut = f" (the check stopped it after {len(run.calls)} decisions)" if run.cut_short else ""
    return (f"retry storm: {during} your code made {peak} connection attempts within one second{cut}, "
            f"at most {MAX_ATTEMPTS_PER_SECOND} allowed; its delays were {_few(delays)} s: wait before each "
            "retry, and longer after each failed attempt (backoff: e.g. 0.1 s x 2 ** (attempt - 1))")


def _few(values: Sequence[Any], n: int = 4) -> str:
    shown = ", ".join(f"{v:g}" if isinstance(v, float) else repr(v) for v in values[:n])
    return f"[{shown}{', ...' if len(values) > n else ''}]"


def _gave_up_on_refused(run: CaseRun, during: str) -> str | None:
    for call in run.calls:
        if call.close_code is None and call.returned is None and call.error is None:
            return (f"{during} a connect was refused and your code gave up (returned None) at attempt {call.attempt}: "
                    "a refused connect is what a restarting server looks like; retry it, with backoff")
    return None


def _too_slow(run: CaseRun, bound: float, what: str) -> str:
    delays = [c.returned for c in run.calls if isinstance(c.returned, float)]
    longest = max(delays, default=0.0)
    return (f"{what}, but your client was not back within {bound:g} s (longest delay returned: {longest:g} s): "
            f"cap the delay; this lab's timings are scaled down, so a cap of about 1 s is plenty here")


def judge(run: CaseRun, back_within: float = BACK_WITHIN) -> Case:
    """PASS or FAIL for one case, with the hint that names what still fails. Pure: no I/O.

    ``back_within`` is the bound the client had to come back within (for the hint).
    """
    name = run.case
    if run.setup_error is not None:
        return Case(name, False, f"the check could not run this case: {run.setup_error}")
    if run.error is not None:
        return Case(name, False, run.error)
    measured = {"attempts": len(run.attempt_times), "peak_per_second": peak_attempts(run.attempt_times),
                "back_after": run.back_after, "decisions": len(run.calls)}

    if name == "healthy":
        if run.calls or len(run.attempt_times) != 1 or run.opens != 1:
            return Case(name, False, f"a connection that stayed up was reconnected: {len(run.attempt_times)} attempts, "
                                     f"{run.opens} opens, decide() called {len(run.calls)} times", measured)
        return Case(name, True, "stayed connected: 1 attempt, decide() never called", measured)

    if name == "1008":
        retried = [c for c in run.calls if c.close_code == 1008 and c.returned is not None]
        reconnects = max(run.opens - 1, 0)
        if retried or reconnects:
            return Case(name, False, (
                f"after 1008 your code reconnected {reconnects} times (decide(1008, n) returned "
                f"{_few([c.returned for c in retried])}): 1008 means policy violation, and the server will say it "
                "again on every connection: stop (return None)"), measured)
        return Case(name, True, "stopped after the first 1008", measured)

    if name == "refused":
        hint = _storm(run, "while connects were refused") or _gave_up_on_refused(run, "before the server was up,")
        if hint:
            return Case(name, False, hint, measured)
        if run.back_after is None:
            return Case(name, False, _too_slow(run, back_within, "the proxy let connections through again"), measured)
        return Case(name, True, f"{len(run.attempt_times) - 1} attempts while refused (peak: "
                                f"{measured['peak_per_second']} in one second), connected {run.back_after:.2f} s "
                                "after the proxy let connections through", measured)

    if name == "restart":
        gave_up_1012 = [c for c in run.calls if c.close_code == 1012 and c.returned is None]
        if gave_up_1012:
            return Case(name, False, "after 1012 your code gave up (returned None): 1012 means service restart, "
                                     "the server will be back in a moment: reconnect, with backoff", measured)
        hint = _storm(run, "while the server restarted") or _gave_up_on_refused(run, "while the server restarted,")
        if hint:
            return Case(name, False, hint, measured)
        if run.back_after is None:
            return Case(name, False, _too_slow(run, back_within, "the server listened again"), measured)
        code = run.close_codes[0] if run.close_codes else "?"
        return Case(name, True, f"closed with {code}, {len(run.attempt_times) - 2} attempts while down (peak: "
                                f"{measured['peak_per_second']} in one second), back {run.back_after:.2f} s after "
                                "the server", measured)

    raise ValueError(f"unknown case {name!r}: choose one of {', '.join(CASES)}")


# -- running the cases ---------------------------------------------------------------


async def _hold(ws: ServerConnection) -> None:
    await ws.wait_closed()


async def _ban(ws: ServerConnection) -> None:
    await ws.close(1008, "policy violation")


def _client(lab: Lab, url: str, case: str, decide: Decide) -> tuple[ReconnectingClient, FunctionPolicy]:
    policy = FunctionPolicy(decide)
    client = ReconnectingClient(url, name=f"check-{case}", timeline=lab.timeline, policy=policy,
                                open_timeout=0.5, record_messages=False)
    lab.spawn(client.run(), name=f"check-{case}")
    return client, policy


def _record(run: CaseRun, lab: Lab, client: ReconnectingClient, policy: FunctionPolicy) -> CaseRun:
    run.calls = list(policy.calls)
    run.error = policy.error
    run.cut_short = policy.cut_short
    run.opens = client.opens
    run.attempt_times = [e.t for e in lab.timeline.select(source=client.name, kind=EventKind.CONNECTING)]
    run.close_codes = [e.code for e in lab.timeline.select(source=client.name, kind=EventKind.CLOSE)
                       if e.code is not None]
    return run


async def _until(predicate: Callable[[], object], timeout: float, what: str) -> bool:
    """Wait for ``predicate``; False (not an error) when it does not happen in time."""
    with contextlib.suppress(WaitTimeout):
        await wait_until(predicate, timeout, what)
        return True
    return False


def _stopped(client: ReconnectingClient) -> bool:
    return client.state == "closed"


async def _refused(lab: Lab, decide: Decide) -> CaseRun:
    run = CaseRun("refused")
    server = await lab.serve(_hold, name="refused-server")
    proxy = await start_proxy(lab, server, name="refused-proxy")
    await proxy.set_fault("refuse")
    client, policy = _client(lab, proxy.url, "refused", decide)
    await asyncio.sleep(REFUSED_FOR)
    await proxy.set_fault("pass")
    up_at = lab.timeline.now()
    if await _until(lambda: client.opens >= 1 or _stopped(client), BACK_WITHIN, "the client connecting"):
        if client.opens >= 1:
            run.back_after = lab.timeline.now() - up_at
    return _record(run, lab, client, policy)


async def _restart(lab: Lab, decide: Decide) -> CaseRun:
    run = CaseRun("restart")
    server = await lab.serve(_hold, name="restart-server")
    client, policy = _client(lab, server.url, "restart", decide)
    try:
        await client.wait_open(timeout=2.0)
    except LabError as exc:
        run.setup_error = f"the client never connected to a healthy server ({exc})"
        return _record(run, lab, client, policy)
    await asyncio.sleep(MIN_UPTIME)  # long enough that the restart starts attempt over at 1
    restart = await server.restart(downtime=DOWNTIME)
    if await _until(lambda: client.opens >= 2 or _stopped(client), BACK_WITHIN, "the client reconnecting"):
        if client.opens >= 2:
            reopened = [e.t for e in lab.timeline.select(source=client.name, kind=EventKind.OPEN)][1]
            run.back_after = max(0.0, reopened - restart.up_at)
    return _record(run, lab, client, policy)


async def _policy_violation(lab: Lab, decide: Decide) -> CaseRun:
    run = CaseRun("1008")
    server = await lab.serve(_ban, name="1008-server")
    client, policy = _client(lab, server.url, "1008", decide)
    await _until(lambda: _stopped(client), WATCH_1008, "the client stopping")
    return _record(run, lab, client, policy)


async def _healthy(lab: Lab, decide: Decide, others: asyncio.Future[Any]) -> CaseRun:
    run = CaseRun("healthy")
    server = await lab.serve(_hold, name="healthy-server")
    client, policy = _client(lab, server.url, "healthy", decide)
    await asyncio.wait([others])  # stay connected for as long as the other cases run
    return _record(run, lab, client, policy)


async def check_reconnect_policy(decide: Decide) -> Report:
    """Run ``decide`` inside a real :class:`ReconnectingClient` through the four cases of :data:`CASES`.

    Args:
        decide: Your ``decide(close_code, attempt)``: ``close_code`` is the code
            the connection closed with, or None when an attempt failed to
            connect; ``attempt`` is 1 for the first retry after a connection
            that stayed up at least 0.5 s, then 2, 3, ... It returns the delay
            in seconds before the next attempt, or None to stop.
    """
    if not callable(decide):
        raise LabError(f"check_reconnect_policy needs your function decide(close_code, attempt), "
                       f"not {type(decide).__name__}")
    async with Lab() as lab:
        others = asyncio.gather(_safely("refused", _refused(lab, decide)), _safely("restart", _restart(lab, decide)),
                                _safely("1008", _policy_violation(lab, decide)))
        healthy = await _safely("healthy", _healthy(lab, decide, others))
        runs = [healthy, *(await others)]
    return Report([judge(run, scaled(BACK_WITHIN)) for run in runs])


async def _safely(case: str, running: Coroutine[Any, Any, CaseRun]) -> CaseRun:
    """Run one case; a problem of the check's own (a busy port, a deadline) becomes the case's one line."""
    try:
        return await running
    except (LabError, OSError) as exc:
        return CaseRun(case, setup_error=f"{type(exc).__name__}: {exc}")
