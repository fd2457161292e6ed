"""Notebook 05's check: your full-jitter delay function, in a real herd of 200 clients.

The student writes one pure function, the delay before reconnection attempt
``attempt`` (0, 1, 2, ... since the connection was lost)::

    def full_jitter(attempt: int, base: float, cap: float, rng: random.Random) -> float:
        ...  # seconds to wait

    result = await wslab.checks.check_full_jitter(full_jitter)
    result            # one row per case: PASS, or FAIL with a hint

Four cases call the function directly, thousands of times, with the notebook's
schedule (:data:`BASE` 0.1 s, :data:`CAP` 2 s); the fifth puts it in a real herd:

=======  ===========================================================================
range    every delay is a number between 0 and the cap
growth   the delays grow with the attempt: the mean at attempt 5 (past the cap) is
         several times the mean at attempt 0, which stays within ``base``
seeded   the control: two generators seeded alike give the same delays, so a run can
         be replayed (and each client's delays come from its own generator)
cap      far past the cap (attempt 30), the delays of 1,000 clients still spread over
         [0, cap]: not all the cap, not clipped to it, not only its upper half
herd     :data:`HERD_CLIENTS` real clients lose their server (it restarts, down for
         :data:`HERD_DOWNTIME` s) and reconnect with your delays, plugged into
         :func:`~wslab.studies.herd.herd_member` by :class:`FunctionBackoff`. The same
         herd runs first with no jitter. Passes when your herd's busiest 100 ms once
         the server is back holds at most :data:`MAX_PEAK_RATIO` of no jitter's, and
         every client is back
=======  ===========================================================================

The herd uses its own schedule, :data:`HERD_BASE` 1.5 s and :data:`HERD_CAP` 3 s:
the server is back before a no-jitter client's first retry is due, so the
no-jitter herd knocks all at once, however busy the machine is. The server
admits everyone: the check measures how the herd knocks, not what the server
can take. Attempts count when they were due (see :mod:`wslab.studies.herd`). If
the no-jitter herd did not knock together after all (a machine far too busy),
the herd case says so instead of judging.

The function raising, returning something that is not a delay, or taking
long enough to block the event loop is reported in one line, and the herd
does not run until the function returns delays. Like every check in
:mod:`wslab.checks`, the verdicts (``judge_*``) are pure functions of what was
recorded, tested without sockets.
"""

from __future__ import annotations

import inspect
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..runtime.errors import LabError
from ..runtime.lab import Lab
from ..runtime.timing import scaled
from ..studies.herd import run_herd
from ..studies.simulate import client_seed
from .report import Case, Report, describe_error

__all__ = [
    "BASE", "CAP", "HERD_BASE", "HERD_CAP", "HERD_CLIENTS", "HERD_DOWNTIME", "MAX_PEAK_RATIO", "FunctionBackoff",
    "HerdRun", "Samples", "check_full_jitter", "judge_cap", "judge_growth", "judge_herd", "judge_range",
    "judge_seeded", "sample",
]

DelayFunction = Callable[[int, float, float, random.Random], Any]

BASE, CAP = 0.1, 2.0  # seconds: notebook 05's schedule, for the cases that call the function directly
ATTEMPTS = 31  # attempts 0 to 30 in the range case: far past the cap (0.1 s x 2**5 > 2 s)
SEEDS = 50  # generators in the range case
DRAWS = 1000  # draws per attempt in the growth and cap cases, each from its own generator
PAST_THE_CAP = 30  # the attempt the cap case looks at
GROWTH_AT = 5  # the first attempt whose ceiling is the cap: 0.1 x 2**5 = 3.2 > 2
MIN_GROWTH = 4.0  # full jitter: mean 1 s at attempt 5 against 0.05 s at attempt 0, 20 times
AT_CAP_SHARE = 0.05  # more draws than this exactly at the cap: clipped in step
SPREAD = 0.10  # at least this share below a quarter of the cap, and above three quarters
SLOW_CALL = 0.01  # seconds: a herd calls it 200 times at once on the loop; slower blocks every client
SLOW_STRIKES = 3  # calls slower than SLOW_CALL before the function counts as blocking (one may be the machine)
SLOW_TOTAL = 3.0  # seconds all the direct calls may take together (some 5,600 calls: microseconds each)

HERD_CLIENTS = 200
HERD_DOWNTIME = 0.8  # seconds the server stays down (the clients notice at once: it closes with 1012)
HERD_BASE, HERD_CAP = 1.5, 3.0  # seconds: back before the first retry is due, so no jitter knocks at once
HERD_RATE = 100_000.0  # the server admits everyone: only how the herd knocks is measured
MAX_PEAK_RATIO = 0.25
HERD_SEED = 5
BASELINE_DEADLINE = 4.0  # seconds from the outage: the no-jitter herd is back at about 2 s
HERD_DEADLINE = 7.0  # seconds from the outage: full jitter's last client is due by 1.5 + 3 s


@dataclass
class Samples:
    """What the function returned when called directly, for the four cases that need no sockets.

    Attributes:
        by_attempt: ``by_attempt[n]``: the delays at attempt ``n`` from
            :data:`SEEDS` generators seeded 0, 1, 2, ...
        growth: ``{attempt: delays}`` at attempts 0 and :data:`GROWTH_AT`, one
            draw from each of :data:`DRAWS` generators.
        replay: Two lists of delays at attempts 0 to 20, each from a generator seeded 7.
        first: One draw at attempt 0 from each of :data:`DRAWS` generators (does anything vary at all?).
        past_cap: One draw at attempt :data:`PAST_THE_CAP` from each of those generators.
        errors: For each case whose calls went wrong (raised, returned something
            other than a number, or blocked), what happened, in one line.
        base, cap: The schedule the function was called with.
    """

    by_attempt: list[list[float]] = field(default_factory=list)
    growth: dict[int, list[float]] = field(default_factory=dict)
    replay: tuple[list[float], list[float]] = ([], [])
    first: list[float] = field(default_factory=list)
    past_cap: list[float] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    base: float = BASE
    cap: float = CAP


class _Broken(Exception):
    """The student's function did something no delay function may do: the message says what."""


class _Caller:
    """Calls the student's function, checks what it returns, and notices when it blocks."""

    def __init__(self, delay: DelayFunction) -> None:
        self.delay = delay
        self.slow = 0  # calls longer than SLOW_CALL: one may be the machine, SLOW_STRIKES are the function
        self.spent = 0.0

    def __call__(self, attempt: int, base: float, cap: float, rng: random.Random) -> float:
        where = f"full_jitter({attempt}, {base:g}, {cap:g}, rng)"
        started = time.perf_counter()
        try:
            value = self.delay(attempt, base, cap, rng)
        except Exception as exc:
            raise _Broken(describe_error(where, exc)) from None
        took = time.perf_counter() - started
        self.spent += took
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()  # never awaited: close it, so Python doesn't warn later
            raise _Broken(f"{where} is async: make it a plain def that returns the delay (the client does the waiting)")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Broken(f"{where} returned {value!r}: return the delay in seconds, a number")
        if not math.isfinite(value):
            raise _Broken(f"{where} returned {value!r}: return a finite number of seconds")
        self.slow += took > SLOW_CALL
        if self.slow >= SLOW_STRIKES or self.spent > SLOW_TOTAL:
            raise _Broken(f"{where} took {took * 1000:.0f} ms: 200 clients call it at once on one event loop, so it "
                          "must return at once; don't sleep or compute at length in it, return the delay")
        return float(value)


def sample(delay: DelayFunction, *, base: float = BASE, cap: float = CAP) -> Samples:
    """Call ``delay`` as the four direct cases need. Never raises: a broken call becomes its case's error."""
    samples = Samples(base=base, cap=cap)
    call = _Caller(delay)

    def by_attempt() -> None:
        rngs = [random.Random(seed) for seed in range(SEEDS)]
        samples.by_attempt = [[call(n, base, cap, rng) for rng in rngs] for n in range(ATTEMPTS)]

    def growth() -> None:
        for n in (0, GROWTH_AT):
            samples.growth[n] = [call(n, base, cap, random.Random(1000 + i)) for i in range(DRAWS)]

    def replay() -> None:
        a, b = random.Random(7), random.Random(7)
        samples.replay = ([call(n, base, cap, a) for n in range(21)], [call(n, base, cap, b) for n in range(21)])

    def past_cap() -> None:
        clients = [random.Random(client_seed(3, i)) for i in range(DRAWS)]
        samples.first = [call(0, base, cap, rng) for rng in clients]
        samples.past_cap = [call(PAST_THE_CAP, base, cap, rng) for rng in clients]

    for case, run in (("range", by_attempt), ("growth", growth), ("seeded", replay), ("cap", past_cap)):
        try:
            run()
        except _Broken as exc:
            samples.errors[case] = str(exc)
            if call.slow >= SLOW_STRIKES or call.spent > SLOW_TOTAL:
                for rest in ("range", "growth", "seeded", "cap"):  # don't wait for a slow function four times
                    samples.errors.setdefault(rest, str(exc))
                break
    return samples


# -- the four direct cases: pure verdicts ------------------------------------------------------


def judge_range(samples: Samples) -> Case:
    """Every delay is a number between 0 and the cap."""
    if "range" in samples.errors:
        return Case("range", False, samples.errors["range"])
    flat = [(n, d) for n, row in enumerate(samples.by_attempt) for d in row]
    low = min(flat, key=lambda p: p[1])
    high = max(flat, key=lambda p: p[1])
    if low[1] < 0:
        return Case("range", False, (
            f"negative delays: {low[1]:.3g} s at attempt {low[0]}: asyncio.sleep() returns at once for a negative "
            "delay, so those clients retry without waiting; draw between 0 and the ceiling: "
            "rng.uniform(0, min(cap, base * 2 ** attempt))"))
    if high[1] > samples.cap * (1 + 1e-9):
        return Case("range", False, (
            f"delays above the cap: {high[1]:.3g} s at attempt {high[0]}, the cap is {samples.cap:g} s: "
            "cap the ceiling, min(cap, base * 2 ** attempt), then draw below it"))
    return Case("range", True, f"{len(flat):,} delays at attempts 0 to {len(samples.by_attempt) - 1}, "
                               f"all within [0, {samples.cap:g}] s")


def judge_growth(samples: Samples) -> Case:
    """The delays grow with the attempt: a long first wait, or none that grows, both fail."""
    if "growth" in samples.errors:
        return Case("growth", False, samples.errors["growth"])
    first, later = (float(np.mean(samples.growth[n])) for n in (0, GROWTH_AT))
    measured = {"mean_first": first, "mean_later": later}
    if first > samples.base * (1 + 1e-9):
        return Case("growth", False, (
            f"the first delays average {first:.3g} s, longer than base ({samples.base:g} s): attempt 0's ceiling is "
            "base itself, and it doubles with each attempt: base * 2 ** attempt"), measured)
    if later < MIN_GROWTH * first or later == 0:
        return Case("growth", False, (
            f"the delays don't grow with the attempt: their mean is {first:.3g} s at attempt 0 and {later:.3g} s "
            f"at attempt {GROWTH_AT}: the ceiling doubles with each attempt, base * 2 ** attempt, up to the cap"),
            measured)
    return Case("growth", True, f"mean delay {first:.3g} s at attempt 0, {later:.3g} s at attempt {GROWTH_AT}",
                measured)


def judge_seeded(samples: Samples) -> Case:
    """The control: the same seed gives the same delays (the function draws only from the rng it's given)."""
    if "seeded" in samples.errors:
        return Case("seeded", False, samples.errors["seeded"])
    a, b = samples.replay
    for n, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            return Case("seeded", False, (
                f"two generators seeded alike gave different delays ({x:.3g} s and {y:.3g} s at attempt {n}): draw "
                "only from the rng you're given (rng.uniform), not from the random module or a generator of your "
                "own, so a run can be replayed"))
    return Case("seeded", True, f"two generators seeded alike gave the same {len(a)} delays")


def judge_cap(samples: Samples) -> Case:
    """Far past the cap, the delays of many clients still spread over [0, cap]."""
    if "cap" in samples.errors:
        return Case("cap", False, samples.errors["cap"])
    cap = samples.cap
    drawn = np.asarray(samples.past_cap)
    at = PAST_THE_CAP
    measured = {"distinct": int(np.unique(drawn).size), "at_cap": float(np.mean(drawn == cap)),
                "low": float(np.mean(drawn < cap / 4)), "high": float(np.mean(drawn > 3 * cap / 4))}
    highest = float(np.max(drawn))
    if highest > cap * (1 + 1e-9):
        return Case("cap", False, (
            f"at attempt {at} the delays reach {highest:.3g} s, beyond the cap ({cap:g} s): cap the ceiling, "
            "then draw below it: rng.uniform(0, min(cap, base * 2 ** attempt))"), measured)
    if np.unique(drawn).size == 1:
        value = float(drawn[0])
        if np.unique(samples.first).size > 1:  # jittered at first, in step at the cap
            return Case("cap", False, (
                f"at attempt {at} all {drawn.size:,} clients wait exactly {value:g} s: the jitter vanished at the "
                "cap, so the herd retries in step again (Socket.IO's mistake: jitter first, then cap). Cap the "
                "ceiling first, then draw: rng.uniform(0, min(cap, base * 2 ** attempt))"), measured)
        return Case("cap", False, (
            f"no jitter: every client waits the same delay ({value:g} s at attempt {at}, the same at attempt 0), "
            "so the whole herd retries at the same moment. Draw each delay at random from the rng you're given, "
            "between 0 and the ceiling: rng.uniform(0, min(cap, base * 2 ** attempt))"), measured)
    if measured["at_cap"] > AT_CAP_SHARE:
        return Case("cap", False, (
            f"{measured['at_cap']:.0%} of the delays at attempt {at} are exactly the cap ({cap:g} s): those clients "
            "retry in step. The draw is clipped by the cap; cap the ceiling instead, then draw below it: "
            "rng.uniform(0, min(cap, base * 2 ** attempt))"), measured)
    if measured["low"] < SPREAD or measured["high"] < SPREAD:
        lo, hi = float(np.min(drawn)), float(np.max(drawn))
        return Case("cap", False, (
            f"at attempt {at} the delays spread over only [{lo:.2f}, {hi:.2f}] s of [0, {cap:g}]: full jitter draws "
            "over the whole range, from 0 up to the ceiling" + (
                " (never less than half the ceiling is equal jitter)" if lo >= cap / 2 * 0.999 else "")), measured)
    return Case("cap", True, (
        f"at attempt {at}, {measured['distinct']:,} different delays from {drawn.size:,} clients, "
        f"{measured['low']:.0%} below a quarter of the cap, {measured['high']:.0%} above three quarters"), measured)


# -- the herd ----------------------------------------------------------------------------------


class FunctionBackoff:
    """A :class:`~wslab.clients.backoff.Delays` whose delays come from a function, for a herd member.

    ``next()`` returns ``delay(attempt, base, cap, rng)`` and counts one more
    attempt; ``reset()`` starts again from attempt 0, as :class:`Backoff` does.
    The first error the function raises is kept in ``error`` (one line), then raised.
    """

    def __init__(self, delay: DelayFunction, *, base: float, cap: float, rng: random.Random) -> None:
        self.delay = delay
        self.base = base
        self.cap = cap
        self.rng = rng
        self.attempt = 0
        self.error: str | None = None

    def next(self) -> float:
        try:
            value = float(self.delay(self.attempt, self.base, self.cap, self.rng))
        except Exception as exc:
            self.error = self.error or describe_error(f"full_jitter({self.attempt}, ...)", exc)
            raise
        self.attempt += 1
        return value

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class HerdRun:
    """The two herds, as measured: all :func:`judge_herd` needs.

    Attributes:
        peak: The busiest 100 ms of attempts due once the server was back, with your delays.
        baseline: The same, with no jitter (the check's own run, just before yours).
        back: Clients of yours that reconnected, out of ``n``.
        n: Clients in each herd.
        attempts: Your herd's reconnection attempts.
        deadline: Seconds from the outage your clients had to be back within.
        error: What your function raised inside the herd (one line), if it did.
        setup_error: The herd could not be run (one line).
    """

    peak: int = 0
    baseline: int = 0
    back: int = 0
    n: int = HERD_CLIENTS
    attempts: int = 0
    deadline: float = HERD_DEADLINE
    error: str | None = None
    setup_error: str | None = None


def judge_herd(run: HerdRun, ratio: float = MAX_PEAK_RATIO) -> Case:
    """PASS when your herd's peak is at most ``ratio`` of no jitter's, and every client came back."""
    if run.setup_error is not None:
        return Case("herd", False, f"the herd did not run: {run.setup_error}")
    if run.error is not None:
        return Case("herd", False, f"in the herd, {run.error}")
    measured = {"peak": run.peak, "baseline": run.baseline, "back": run.back, "attempts": run.attempts}
    if run.baseline < run.n / 2:  # the server is back before the first retry: no jitter's must knock at once
        return Case("herd", False, (
            f"not measured: the check's own no-jitter herd had only {run.baseline} of {run.n} attempts due in its "
            "busiest 100 ms, so there was no herd to compare with (a machine far too busy?): run the check again"),
            measured)
    allowed = ratio * run.baseline
    what = (f"busiest 100 ms once the server was back: {run.peak} attempts due with your delays, "
            f"{run.baseline} with no jitter")
    if run.peak > allowed:
        return Case("herd", False, (
            f"{what}; at most {allowed:.0f} ({ratio:.0%}) allowed: your clients still knock together. Spread each "
            "delay over the whole [0, ceiling]"), measured)
    if run.back < run.n:
        return Case("herd", False, (
            f"{what}, but only {run.back} of {run.n} clients were back within {run.deadline:g} s of the outage: "
            f"are some delays far too long?"), measured)
    return Case("herd", True, f"{what} ({run.peak / max(run.baseline, 1):.0%}); all {run.n} back, "
                              f"{run.attempts} attempts", measured)


async def _herds(delay: DelayFunction) -> HerdRun:
    """No jitter's herd, then the student's: the same server, downtime and schedule."""
    run = HerdRun(deadline=scaled(HERD_DEADLINE))
    options: dict[str, Any] = {"downtime": HERD_DOWNTIME, "accept_rate": HERD_RATE, "burst": float(HERD_CLIENTS),
                               "seed": HERD_SEED}
    made: list[FunctionBackoff] = []

    def yours(i: int) -> FunctionBackoff:
        made.append(FunctionBackoff(delay, base=HERD_BASE, cap=HERD_CAP,
                                    rng=random.Random(client_seed(HERD_SEED, i))))
        return made[-1]

    async with Lab() as lab:
        try:
            plain = await run_herd(lab, HERD_CLIENTS, {"min_delay": HERD_BASE, "max_delay": HERD_CAP,
                                                       "factor": 2.0, "jitter": "none"},
                                   name="no-jitter-herd", deadline=scaled(BASELINE_DEADLINE), **options)
            mine = await run_herd(lab, HERD_CLIENTS, yours, name="your-herd", deadline=run.deadline, **options)
        except (LabError, OSError) as exc:
            run.setup_error = f"{type(exc).__name__}: {exc}"
            return run
    run.baseline = plain.peak_attempts()
    run.peak = mine.peak_attempts()
    run.back = sum(1 for t in mine.reconnected if not math.isnan(t))
    run.attempts = mine.total_attempts
    run.error = next((b.error for b in made if b.error is not None), None)
    return run


async def check_full_jitter(full_jitter: DelayFunction) -> Report:
    """Put ``full_jitter`` through the five cases: four direct, then a real herd against no jitter's.

    Args:
        full_jitter: Your ``full_jitter(attempt, base, cap, rng)``: ``attempt`` is
            0 for the first retry since the connection was lost, then 1, 2, ...;
            ``base`` the first ceiling and ``cap`` the longest delay, in seconds;
            ``rng`` the client's own ``random.Random``. Returns the delay in seconds.
    """
    if not callable(full_jitter):
        raise LabError(f"check_full_jitter needs your function full_jitter(attempt, base, cap, rng), "
                       f"not {type(full_jitter).__name__}")
    samples = sample(full_jitter)
    cases = [judge_range(samples), judge_growth(samples), judge_seeded(samples), judge_cap(samples)]
    if samples.errors:
        cases.append(Case("herd", False, "not run: your function must return delays first (see above)"))
    else:
        cases.append(judge_herd(await _herds(full_jitter)))
    return Report(cases)

