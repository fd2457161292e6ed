"""Notebook 07's check: your resume decision, inside a real BackplaneServer, against a real Redis.

The student writes the decision a server makes when a client connects, from
the last number the client saw and the numbers the Redis stream holds::

    def decide_resume(last_seq: int | None, oldest: int, newest: int) -> Replay | Resync | None:
        ...

    result = await wslab.checks.check_resume(decide_resume)
    result            # one row per case: PASS, or FAIL with a hint

The check starts a real ``redis-server`` and two BackplaneServers sharing it:
``before``, where the clients were, and ``yours``, which calls your function
(``BackplaneServer(resume=decide_resume)``). Lab ``ReconnectingClient``\\ s
listen on ``before`` through fault proxies. The check cuts each one's link
(a real RST) at its own moment, publishes while they are away, then lets
them reconnect, with ``?last_seq=N``, to ``yours``:

==========  ====================================================================
fresh       control: a new client, no ``last_seq``: it must get live broadcasts only
up-to-date  control: cut with nothing published meanwhile: no replay, no resync
gap         missed :data:`GAP` broadcasts, all still in the stream: replayed, no resync
trimmed     missed :data:`TRIM` broadcasts, more than the stream keeps (``MAXLEN``):
            a resync that names what is lost, then what the stream still holds
future      its ``last_seq`` is from another numbering, ahead of this Redis
            (as after a Redis restart): a resync, then the new numbers
==========  ====================================================================

Each case compares, number by number, what the client received after it came
back with what :func:`~wslab.servers.resume.plan_resume` would have sent it,
and names the difference. Your function raising, or returning something else
than a Replay, a Resync or None, is reported in its case's row, in one line.

As elsewhere in :mod:`wslab.checks`, the run records (:class:`CaseRun`) and
:func:`judge`, a pure function tested without sockets, says PASS or FAIL.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..clients.reconnect import ReconnectingClient
from ..faults.proxy import FaultProxy, start_proxy
from ..runtime.errors import LabError, WaitTimeout
from ..runtime.lab import Lab
from ..runtime.redis import start_redis
from ..runtime.timeline import EventKind
from ..runtime.timing import wait_until
from ..servers.backplane import BackplaneServer, start_backplane
from ..servers.redisbus import WINDOW
from ..servers.resume import plan_resume, resume_steps
from .report import Case, Report, describe_error

__all__ = [
    "CASES", "GAP", "MAXLEN", "TRIM", "Call", "CaseRun", "Item", "Recorder", "check_resume", "describe_story",
    "expected_story", "judge",
]

CASES = ("fresh", "up-to-date", "gap", "trimmed", "future")

MAXLEN = 20  # XADD MAXLEN ~ 20: the stream keeps at least 20 entries, and drops older ones by whole nodes
GAP = 15  # broadcasts the "gap" client misses: fewer than MAXLEN, so the stream holds them all
TRIM = 300  # broadcasts the "trimmed" client misses: far more than the stream keeps, even with "~"
LIVE = 10  # broadcasts published once every client is back
FUTURE_FROM = 5000  # the other numbering the "future" client comes from starts after this
BACK_WITHIN = 3.0  # seconds (scaled) for every client to come back once "yours" lets them in
FUNCTION = "decide_resume"

# What a client saw, in order: ("message", seq) or ("resync", missed, next_seq).
Item = tuple[Any, ...]


@dataclass(frozen=True)
class Call:
    """One call of the student's function: its arguments and what it returned (or the one-line error)."""

    last_seq: int | None
    oldest: int
    newest: int
    returned: Any = None
    error: str | None = None


class Recorder:
    """The student's function as the server calls it: every call recorded; an error raised to the server."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.calls: list[Call] = []

    def __call__(self, last_seq: int | None, oldest: int, newest: int) -> Any:
        where = f"{FUNCTION}({last_seq}, {oldest}, {newest})"
        try:
            answer = self.function(last_seq, oldest, newest)
        except Exception as exc:
            self.calls.append(Call(last_seq, oldest, newest, error=describe_error(where, exc)))
            raise
        if inspect.isawaitable(answer):
            if inspect.iscoroutine(answer):
                answer.close()  # never awaited: close it, so Python doesn't warn later
            error = f"{FUNCTION}() is async: make it a plain def that returns the answer at once"
            self.calls.append(Call(last_seq, oldest, newest, error=error))
            raise TypeError(error)
        try:
            resume_steps(answer, oldest, newest)  # the server's own check of the answer's type
        except TypeError as exc:
            self.calls.append(Call(last_seq, oldest, newest, answer, f"{where} {exc}"))
            raise
        self.calls.append(Call(last_seq, oldest, newest, answer))
        return answer


@dataclass
class CaseRun:
    """What happened to one case's client, as recorded: all :func:`judge` needs.

    Attributes:
        case: One of :data:`CASES`.
        last_seq: The last number the client had when its link was cut (None: the fresh client).
        oldest: The oldest number the stream held when the client came back.
        newest: The last number published when it came back.
        live: The numbers published after every client was back.
        story: What the client received after it came back, in order.
        calls: Your function's calls for this client.
        came_back: The client connected to ``yours`` within :data:`BACK_WITHIN` seconds.
        setup_error: The case could not be run (one line).
    """

    case: str
    last_seq: int | None = None
    oldest: int = 0
    newest: int = 0
    live: list[int] = field(default_factory=list)
    story: list[Item] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    came_back: bool = True
    setup_error: str | None = None


def expected_story(last_seq: int | None, oldest: int, newest: int, live: Sequence[int]) -> list[Item]:
    """What the client should receive after it came back: :func:`plan_resume`'s answer, carried out."""
    steps = resume_steps(plan_resume(last_seq, oldest, newest), oldest, newest)
    story: list[Item] = []
    if steps.resync is not None:
        story.append(("resync", steps.resync.missed, steps.resync.next_seq))
    if steps.replay is not None:
        story += [("message", seq) for seq in range(steps.replay[0], steps.replay[1] + 1)]
    return story + [("message", seq) for seq in live]


def describe_story(story: Sequence[Item]) -> str:
    """``resync 1-180 from 181, then 181-325 (145), then 326-335 (10)``: consecutive numbers as ranges."""
    parts: list[str] = []
    run: list[int] = []

    def flush() -> None:
        if run:
            parts.append(f"{run[0]}" if len(run) == 1 else f"{_span(run[0], run[-1])} ({len(run)})")
            run.clear()

    for item in story:
        if item[0] == "resync":
            flush()
            missed = "-".join(map(str, item[1])) if item[1] else "nothing"
            parts.append(f"resync (missed {missed}, go on from {item[2]})")
        elif run and item[1] == run[-1] + 1:
            run.append(item[1])
        else:
            flush()
            run.append(item[1])
    flush()
    return ", then ".join(parts) or "nothing"


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def _hint(run: CaseRun, got: list[Item], expected: list[Item]) -> str:
    """What differs, named for the mistake that makes it, with the fix."""
    last, oldest, newest = run.last_seq, run.oldest, run.newest
    resyncs = [item for item in got if item[0] == "resync"]
    numbers = [item[1] for item in got if item[0] == "message"]
    if run.case == "fresh":
        if resyncs:
            return "a client without last_seq has missed nothing: send it no resync, return None"
        old = [n for n in numbers if n <= newest]
        if old:
            return (f"it got {len(old)} old broadcasts ({old[0]}-{old[-1]}) it never asked for: a client "
                    "without last_seq (None) has nothing to catch up on: return None")
    assert last is not None or run.case == "fresh"
    if run.case in ("up-to-date", "gap") and last is not None:
        if resyncs:
            return (f"the stream holds {oldest}-{newest}, and the client missed {last + 1}-{newest} at most: "
                    "nothing is lost, so no resync: replay the gap")
        if last in numbers:
            return (f"it got {last} again: the client has last_seq ({last}) already: the replay starts at "
                    "last_seq + 1")
        missing = [n for n in range(last + 1, newest + 1) if n not in numbers]
        if missing:
            return (f"it never got {_span(missing[0], missing[-1])}, which the stream still held: replay from "
                    "last_seq + 1 up to newest, both included")
    if run.case == "trimmed" and last is not None:
        lost = (last + 1, oldest - 1)
        if not resyncs:
            return (f"the stream starts at {oldest}, after the gap began at {last + 1}: {lost[0]}-{lost[1]} can't "
                    "be replayed, and without a resync the client never learns they are lost: "
                    "Resync((last_seq + 1, oldest - 1), oldest)")
        _, missed, next_seq = resyncs[0]
        if missed is None or tuple(missed) != lost:
            return f"the resync said it missed {missed}: what is lost is (last_seq + 1, oldest - 1) = {lost}"
        if next_seq != oldest:
            return (f"the resync said go on from {next_seq}, but the stream still held {oldest}-{newest}: go on "
                    "from oldest, and the server replays what the stream holds")
    if run.case == "future" and last is not None:
        if not resyncs:
            return (f"last_seq {last} is beyond newest ({newest}): a number this Redis never gave out, so the "
                    f"numbering started again; without a resync the client takes {newest + 1}, {newest + 2}, ... "
                    "for numbers it already has: Resync(None, newest + 1)")
        _, missed, next_seq = resyncs[0]
        if missed is not None:
            return (f"the resync said it missed {missed}, but no number of this numbering was missed: "
                    "the client must reload everything: Resync(None, newest + 1)")
        if next_seq != newest + 1:
            return f"the resync said go on from {next_seq}: the next number given out is newest + 1 = {newest + 1}"
    return f"it should have got {describe_story(expected)}"


def judge(run: CaseRun) -> Case:
    """PASS or FAIL for one case, with the hint that names what still fails. Pure: no I/O."""
    if run.setup_error is not None:
        return Case(run.case, False, f"the check could not run this case: {run.setup_error}")
    errors = [call.error for call in run.calls if call.error is not None]
    if errors:
        return Case(run.case, False, f"{errors[0]} (the server closed the connection with 1011, resume failed)")
    if not run.came_back:
        return Case(run.case, False, f"the client did not come back within {BACK_WITHIN:g} s")
    expected = expected_story(run.last_seq, run.oldest, run.newest, run.live)
    got = run.story
    measured = {"last_seq": run.last_seq, "oldest": run.oldest, "newest": run.newest,
                "received": len([item for item in got if item[0] == "message"])}
    if got == expected:
        return Case(run.case, True, f"last_seq {run.last_seq}, the stream held {run.oldest}-{run.newest}: "
                                    f"it got {describe_story(got)}", measured)
    answer = f"{FUNCTION}({run.last_seq}, {run.oldest}, {run.newest})"
    if run.calls:
        answer += f" returned {run.calls[-1].returned!r}"
    return Case(run.case, False, f"{answer}: {_hint(run, got, expected)}; it got {describe_story(got)}", measured)


# -- running the cases ---------------------------------------------------------------------------


def _story(lab: Lab, client: ReconnectingClient) -> list[Item]:
    """What ``client`` received after its last connection opened, in order, from the timeline."""
    events = lab.timeline.select(source=client.name)
    opened = [i for i, event in enumerate(events) if event.kind == EventKind.OPEN]
    story: list[Item] = []
    for event in events[opened[-1] + 1:] if opened else []:
        if event.kind == EventKind.MESSAGE and event.data.get("seq") is not None:
            story.append(("message", event.data["seq"]))
        elif event.kind == EventKind.RESYNC:
            missed = event.data.get("missed")
            story.append(("resync", tuple(missed) if missed is not None else None, event.data.get("next_seq")))
    return story


async def _until(predicate: Callable[[], object], timeout: float, what: str) -> bool:
    """Wait for ``predicate``; False (not an error) when it does not happen in time."""
    with contextlib.suppress(WaitTimeout):
        await wait_until(predicate, timeout, what)
        return True
    return False


async def _publish(app: BackplaneServer, count: int) -> list[int]:
    numbers = []
    for n in range(count):
        seq = await app.publish(f"broadcast {n} from {app.name}")
        if seq is None:
            raise LabError(f"{app.name} could not publish: Redis did not answer")
        numbers.append(seq)
    return numbers


class _Listener:
    """One case's ReconnectingClient: on ``before`` (or ``old``) through its own proxy, then on ``yours``."""

    def __init__(self, lab: Lab, case: str, link: FaultProxy, gate: FaultProxy) -> None:
        self.case, self.link = case, link
        self.client = ReconnectingClient(link.url, name=f"check-{case}", timeline=lab.timeline, min_delay=0.05,
                                         max_delay=0.2, open_timeout=1.0)
        # The link is cut for good: from then on the client tries the gate in front of "yours".
        self.client.on_close = lambda _: setattr(self.client, "url", gate.url)
        lab.spawn(self.client.run(), name=self.client.name)
        self.last_seq: int | None = None

    async def cut(self, having: int) -> None:
        """Once it has broadcast number ``having``, reset its link (an RST each way); note the last number it had."""
        await wait_until(lambda: self.client.last_seq == having, 5, f"{self.client.name} receiving number {having}")
        await self.link.set_fault("reset")
        await wait_until(lambda: self.client.opens == 1 and self.client.state != "open", 5,
                         f"{self.client.name} noticing its link was cut")
        self.last_seq = self.client.last_seq


async def _run_cases(lab: Lab, recorder: Recorder) -> list[CaseRun]:
    redis = await start_redis(lab, name="check-redis")
    options: dict[str, Any] = {"backplane": redis.url, "prefix": "check", "maxlen": MAXLEN}
    before = BackplaneServer(lab.timeline, "before", **options)
    yours = BackplaneServer(lab.timeline, "yours", resume=recorder, **options)
    old = BackplaneServer(lab.timeline, "old", **{**options, "prefix": "check-old"})
    await redis.client().set("check-old:seq", FUTURE_FROM)  # its numbering is far ahead of this one's
    servers = {app.name: await start_backplane(lab, app) for app in (before, yours, old)}
    gate = await start_proxy(lab, servers["yours"], name="gate")
    await gate.set_fault("refuse")  # "yours" takes nobody until every gap is made

    listeners = {}
    for case in CASES[1:]:
        link = await start_proxy(lab, servers["old" if case == "future" else "before"], name=f"link-{case}")
        listeners[case] = _Listener(lab, case, link, gate)
    await wait_until(lambda: all(listener.client.state == "open" for listener in listeners.values()), 5,
                     "the clients connecting to the server they start on")
    published = await _publish(before, 5)
    await listeners["future"].cut((await _publish(old, 3))[-1])
    await listeners["trimmed"].cut(published[-1])
    published = await _publish(before, TRIM)
    await listeners["gap"].cut(published[-1])
    published = await _publish(before, GAP)
    await listeners["up-to-date"].cut(published[-1])

    await gate.set_fault("pass")
    fresh = ReconnectingClient(gate.url, name="check-fresh", timeline=lab.timeline, min_delay=0.05, max_delay=0.2,
                               open_timeout=1.0)
    lab.spawn(fresh.run(), name=fresh.name)
    clients = {"fresh": fresh, **{case: listener.client for case, listener in listeners.items()}}
    wanted = {case: 1 if case == "fresh" else 2 for case in clients}
    await _until(lambda: all(clients[c].opens >= wanted[c] for c in clients), BACK_WITHIN, "every client back")
    # Once every replay is read, publishing more trims the stream without changing what they got.
    await _until(lambda: yours.resuming == 0, 2.0, "the replays read")

    # The window the server judged them against: nothing was published since they came back.
    oldest, newest = map(int, await redis.client().register_script(WINDOW)(keys=[yours.counter, yours.stream]))
    live = await _publish(before, LIVE)

    def everyone_has_the_last() -> bool:
        return all(any(item == ("message", live[-1]) for item in _story(lab, client)) for client in clients.values())

    await _until(everyone_has_the_last, 2.0, "every client receiving the live broadcasts")
    runs = []
    for case, client in clients.items():
        last_seq = None if case == "fresh" else listeners[case].last_seq
        calls = [call for call in recorder.calls if call.last_seq == last_seq]
        runs.append(CaseRun(case, last_seq, oldest, newest, live, _story(lab, client), calls,
                            came_back=client.opens >= wanted[case]))
    return runs


async def check_resume(decide_resume: Callable[[int | None, int, int], Any]) -> Report:
    """Run ``decide_resume`` inside a real BackplaneServer, through the five cases of :data:`CASES`.

    Args:
        decide_resume: Your ``decide_resume(last_seq, oldest, newest)``: ``last_seq`` is the last
            number the client saw (None for a new client); the stream holds ``oldest`` to ``newest``
            (``newest`` is the last number given out). It returns ``Replay(first, last)``,
            ``Resync(missed, next_seq)`` or None (from :mod:`wslab.servers.resume`).
    """
    if not callable(decide_resume):
        raise LabError(f"check_resume needs your function {FUNCTION}(last_seq, oldest, newest), "
                       f"not {type(decide_resume).__name__}")
    recorder = Recorder(decide_resume)
    async with Lab() as lab:
        try:
            runs = await _run_cases(lab, recorder)
        except (LabError, OSError) as exc:
            runs = [CaseRun(case, setup_error=f"{type(exc).__name__}: {exc}") for case in CASES]
    return Report([judge(run) for run in runs])

