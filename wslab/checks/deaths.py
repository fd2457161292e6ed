"""Notebook 01's exercise: inflict a death through the fault proxy, then say what the session map holds.

The student writes two functions::

    async def break_link(proxy, link, how):
        ...  # make the client behind proxy connection `link` die: how is "reset" or "vanished"

    def stale_sessions(server):
        ...  # {session_id: "closed: clean" | "closed: FIN" | "closed: RST" | "looks open"}

    result = await wslab.checks.check_deaths(break_link, stale_sessions)

:func:`check_deaths` runs both for real, in two rounds, each in its own lab:

1. **Your deaths.** A naive server behind a fault proxy, three clients. Your
   ``break_link`` resets the first client's link and makes the second one
   vanish; the third is the healthy control, which must keep receiving. The
   check records what the server's side saw, and whether a message the
   server sends afterwards still reaches each client (:func:`break_links`).
2. **Your report.** A fresh naive server and five clients, connected in a
   random order: a healthy control, and four that die the four ways of
   section 2 (inflicted by the check, for real). Once the server has seen the
   three deaths it can see, your ``stale_sessions`` reads its map
   (:func:`report_sessions`).

The verdicts (:func:`judge_link`, :func:`judge_report`) are pure functions of
those records, tested without sockets. The lesson is in the last case: a
vanished client's connection is OPEN, exactly like the healthy one's, so a
report built from the connection's state must say it "looks open". Nothing
tells the server; only a ping that gets no pong can (notebook 02).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from websockets.protocol import State

from ..faults.failures import Victim, connect_victim, inflict
from ..faults.proxy import FaultProxy, start_proxy
from ..runtime.errors import LabError, WaitTimeout
from ..runtime.lab import Lab
from ..runtime.timing import scaled, wait_until
from ..servers.naive import NaiveServer
from .report import Case, Report, describe_error

__all__ = [
    "VERDICTS",
    "LinkRun",
    "ReportRun",
    "break_links",
    "check_deaths",
    "judge_link",
    "judge_report",
    "report_sessions",
]

# The four verdicts stale_sessions() may give a session.
CLEAN, FIN, RST, LOOKS_OPEN = "closed: clean", "closed: FIN", "closed: RST", "looks open"
VERDICTS = (CLEAN, FIN, RST, LOOKS_OPEN)

# Round 2: each client's death, and the verdict a report built from the connection's state must give it.
EXPECTED = {"healthy": LOOKS_OPEN, "clean-close": CLEAN, "killed": FIN, "reset": RST, "vanished": LOOKS_OPEN}

# How long the check waits: for a death the server can see, and for a message that should (not) arrive.
SEE_DEATH = 2.0
DELIVERY = 0.5

KEEPALIVE = "only a ping that gets no pong can tell them apart: that is notebook 02's keepalive"


# -- round 1: the student's deaths -----------------------------------------------------------------


@dataclass
class LinkRun:
    """What happened to one client of round 1, as recorded. All :func:`judge_link` needs.

    Attributes:
        how: ``"reset"`` or ``"vanished"`` (break_link was called for it), or ``"healthy"`` (the control).
        error: What break_link raised on this client, in one line, if it did.
        closed: Whether the server's side of the connection closed.
        cause: The ``__cause__`` of the server's ``ConnectionClosed``, by type name (``"EOFError"``), if any.
        delivered: Whether a message the server sent afterwards reached the client.
        relayed: Whether the proxy still read that message from the server (to pass it on, now or later).
    """

    how: str
    error: str | None = None
    closed: bool = False
    cause: str | None = None
    delivered: bool = False
    relayed: bool = False


def judge_link(run: LinkRun) -> Case:
    """Pass or fail for one client of round 1, with the hint that names what still fails. Pure."""
    name = {"reset": "link:reset", "vanished": "link:vanish"}.get(run.how, "link:healthy")
    if run.error is not None:
        return Case(name, False, run.error)
    seen = f"its connection on the server closed (cause: {run.cause})"
    if run.how == "reset":
        if run.closed and run.cause == "ConnectionResetError":
            return Case(name, True, "the server got an RST: ConnectionResetError, at once")
        if run.closed and run.cause == "EOFError":
            return Case(name, False, "the server got a FIN (EOFError), not an RST: that is the 'close' fault; "
                                     "'reset' closes with SO_LINGER 0, which sends an RST")
        if run.closed:
            return Case(name, False, f"{seen}, but not from an RST: use the 'reset' fault")
        if run.delivered:
            return Case(name, False, "nothing happened to this client's link: "
                                     "await proxy.set_fault(fault, conn=link) with the fault that sends an RST")
        if run.relayed:
            return Case(name, False, "the link only got slow (a delay, 'latency') and the server saw nothing; "
                                     "an RST ends the connection at once: use 'reset'")
        return Case(name, False, "the link went silent and the server saw nothing: that is a stall, "
                                 "a vanished client; an RST ends the connection at once: use 'reset'")
    if run.how == "vanished":
        if run.closed:
            return Case(name, False, f"the server noticed: {seen}. A vanished client sends nothing, "
                                     "no FIN, no RST: stop the link without closing it ('stall')")
        if run.delivered:
            return Case(name, False, "the client still receives what the server sends: its link still carries "
                                     "data. A vanished client's link carries nothing: 'stall' it, with conn=link")
        if run.relayed:
            return Case(name, False, "the proxy still reads what the server sends, to pass it on later: that is a "
                                     "delay ('latency'), and the client is still there. Stop the link: 'stall'")
        return Case(name, True, "the client went silent, and the server saw nothing at all")
    # The healthy control: its link must not be touched.
    if run.closed:
        return Case(name, False, f"the healthy client died too: {seen}. Break "
                                 "only the link you were given: proxy.set_fault(..., conn=link)")
    if not run.delivered:
        return Case(name, False, "the healthy client stopped receiving: your fault hit every connection "
                                 "on the proxy; pass conn=link so it hits only that client's link")
    return Case(name, True, "the healthy client still receives")


async def _call_break_link(break_link: Callable[..., Any], proxy: Any, link: str, how: str) -> str | None:
    """Run the student's break_link; what it raised (or that it hung), in one line."""
    where = f"break_link(proxy, {link!r}, {how!r})"
    try:
        result = break_link(proxy, link, how)
        if inspect.isawaitable(result):
            await asyncio.wait_for(result, scaled(SEE_DEATH))
    except asyncio.TimeoutError:
        return f"{where} did not return within {scaled(SEE_DEATH):g} s"
    except Exception as exc:  # the student's code: any error is reported in one line
        return describe_error(where, exc)
    return None


def _cause(victim: Victim) -> str | None:
    ws = victim.server_ws
    if ws.state is not State.CLOSED:
        return None
    cause = ws.close_exc.__cause__
    return None if cause is None else type(cause).__name__


def _bytes_relayed(proxy: FaultProxy, link: str | None) -> int | None:
    """Bytes the proxy has read from the server on ``link`` so far (None once the link is closed)."""
    with contextlib.suppress(KeyError):
        return proxy.connection(link).bytes_down if link else None
    return None


async def _probe(proxy: FaultProxy, victim: Victim, timeout: float) -> tuple[bool, bool]:
    """Send a message from the server now: did it reach the client within ``timeout`` s, did the proxy read it?"""
    if victim.server_ws.state is not State.OPEN:
        return False, False
    before = _bytes_relayed(proxy, victim.proxy_conn)
    delivered = False
    with contextlib.suppress(Exception):
        await victim.server_ws.send("are you there?")  # a short message: send() returns at once, even on a stall
        await asyncio.wait_for(victim.client.recv(), timeout)
        delivered = True
    after = _bytes_relayed(proxy, victim.proxy_conn)
    return delivered, before is not None and after is not None and after > before


async def break_links(break_link: Callable[..., Any]) -> list[LinkRun]:
    """Round 1 (setup and run): three clients behind a fault proxy; break_link resets one and makes one vanish."""
    async with Lab() as lab:
        app = NaiveServer(lab.timeline, name="check-naive")
        server = await lab.serve(app.handler, name="check-naive")
        proxy = await start_proxy(lab, server, name="check-proxy")
        victims = {how: await connect_victim(lab, server, "reset", proxy=proxy, name=f"check-{how}")
                   for how in ("reset", "vanished", "healthy")}
        runs = {how: LinkRun(how) for how in victims}
        for how in ("reset", "vanished"):
            link = victims[how].proxy_conn
            assert link is not None  # connect_victim went through the proxy: it knows the link's label
            runs[how].error = await _call_break_link(break_link, proxy, link, how)
        # An RST (or a FIN) reaches the server at once on loopback: give it a generous moment.
        with contextlib.suppress(WaitTimeout):
            await wait_until(lambda: victims["reset"].server_ws.state is State.CLOSED, SEE_DEATH, "the reset")
        probes = await asyncio.gather(*(_probe(proxy, v, scaled(DELIVERY)) for v in victims.values()))
        for (how, victim), (delivered, relayed) in zip(victims.items(), probes, strict=True):
            runs[how].delivered, runs[how].relayed = delivered, relayed
            runs[how].closed = victim.server_ws.state is State.CLOSED
            runs[how].cause = _cause(victim)
        server.abort_connections()  # the clients are dead or done: no handshakes to wait for
    return list(runs.values())


# -- round 2: the student's report ------------------------------------------------------------------


@dataclass
class ReportRun:
    """Round 2, as recorded: which session each client got, and what stale_sessions returned.

    All that :func:`judge_report` needs.

    Attributes:
        sessions: Each client's death (``"healthy"``, ``"clean-close"``, ...) -> its session id.
        report: What stale_sessions(server) returned (None if it raised).
        error: What it raised, in one line, if it did.
        setup_error: Why the check could not set the round up (one line), if so: not the student's fault.
    """

    sessions: dict[str, int] = field(default_factory=dict)
    report: Any = None
    error: str | None = None
    setup_error: str | None = None


def _looks_like(verdict: str) -> str:
    return {CLEAN: "a clean close", FIN: "a FIN", RST: "an RST", LOOKS_OPEN: "an open connection"}.get(verdict, verdict)


# What to fix, per client, when its verdict is wrong: {death: {given verdict: hint}}; "*" for any other.
HINTS: dict[str, dict[str, str]] = {
    "healthy": {
        "*": "the healthy client's connection is OPEN: a session is stale only when ws.state is State.CLOSED",
    },
    "clean-close": {
        LOOKS_OPEN: "this connection is CLOSED (ws.state is State.CLOSED) but still in the map: a stale session. "
                    "It closed cleanly: report 'closed: clean'",
        "*": "a clean close has a close frame both ways (ConnectionClosedOK, close_code 1000) "
             "and no __cause__: report 'closed: clean'",
    },
    "killed": {
        LOOKS_OPEN: "this connection is CLOSED (ws.state is State.CLOSED) but still in the map: a stale session. "
                    "Read why it closed in ws.close_exc.__cause__",
        RST: "the killed process's kernel sent a FIN, not an RST: the cause is EOFError, not ConnectionResetError",
        "*": "no close frame came (close_code 1006) and ws.close_exc.__cause__ is EOFError: "
             "the peer's kernel sent a FIN: report 'closed: FIN'",
    },
    "reset": {
        LOOKS_OPEN: "this connection is CLOSED (ws.state is State.CLOSED) but still in the map: a stale session. "
                    "Read why it closed in ws.close_exc.__cause__",
        FIN: "the cause is ConnectionResetError: the connection was reset (an RST), not closed with a FIN",
        "*": "no close frame came (close_code 1006) and ws.close_exc.__cause__ is ConnectionResetError: "
             "report 'closed: RST'",
    },
    "vanished": {
        "*": "this client vanished, but its connection is still OPEN, like the healthy one: nothing told "
             f"the server. By its state it 'looks open'; {KEEPALIVE}",
    },
}

PASSED = {
    "healthy": "the healthy client looks open",
    "clean-close": "closed cleanly, still in the map",
    "killed": "closed by a FIN (EOFError), still in the map",
    "reset": "closed by an RST (ConnectionResetError), still in the map",
    "vanished": f"looks open, exactly like the healthy client: nothing tells the server; {KEEPALIVE}",
}

# A mistake common enough to get its own hint: reading close_exc before the connection is closed.
NOT_CLOSED_YET = "connection isn't closed yet"


def judge_report(run: ReportRun) -> list[Case]:
    """Pass or fail for each client of round 2, with the hint that names what still fails. Pure."""
    names = [f"map:{'clean' if death == 'clean-close' else death}" for death in EXPECTED]
    if run.setup_error is not None:
        return [Case(name, False, f"the check could not set up: {run.setup_error}") for name in names]
    if run.error is not None:
        message = run.error
        if NOT_CLOSED_YET in run.error:
            message += ": ws.close_exc exists only once ws.state is State.CLOSED; check the state first"
        return [Case(name, False, message) for name in names]
    if not isinstance(run.report, Mapping):
        got = type(run.report).__name__
        return [Case(name, False, f"stale_sessions(server) returned a {got}: return a dict {{session_id: verdict}}")
                for name in names]
    cases = []
    for name, (death, expected) in zip(names, EXPECTED.items(), strict=True):
        session_id = run.sessions[death]
        if session_id not in run.report:
            cases.append(Case(name, False, "a session is missing from your report: "
                                           "give every session in server.sessions a verdict"))
            continue
        given = run.report[session_id]
        if given == expected:
            cases.append(Case(name, True, PASSED[death]))
        elif given not in VERDICTS:
            cases.append(Case(name, False, f"{given!r} is not a verdict: use one of {', '.join(map(repr, VERDICTS))}"))
        else:
            hints = HINTS[death]
            cases.append(Case(name, False, f"reported {_looks_like(given)}: " + hints.get(given, hints["*"])))
    return cases


async def report_sessions(stale_sessions: Callable[[Any], Any]) -> ReportRun:
    """Round 2 (setup and run): five clients in a random order, four deaths inflicted, then stale_sessions(server)."""
    run = ReportRun()
    deaths = list(EXPECTED)
    random.shuffle(deaths)  # the session ids say nothing about who died how
    async with Lab() as lab:
        app = NaiveServer(lab.timeline, name="check-naive")
        server = await lab.serve(app.handler, name="check-naive")
        proxy = await start_proxy(lab, server, name="check-proxy")
        victims: dict[str, Victim] = {}
        try:
            for death in deaths:
                mode = "vanished" if death == "healthy" else death  # the healthy one goes through the proxy too
                victims[death] = await connect_victim(lab, server, mode, proxy=proxy, name=f"check-{death}")
            await wait_until(lambda: len(app.sessions) == len(deaths), SEE_DEATH, "every session in the map")
            for death, victim in victims.items():
                if death != "healthy":
                    await inflict(lab, victim)
            await wait_until(
                lambda: all(victims[d].server_ws.state is State.CLOSED for d in ("clean-close", "killed", "reset")),
                SEE_DEATH, "the server seeing the clean close, the kill and the reset",
            )
        except LabError as exc:
            run.setup_error = str(exc)
            return run
        by_ws = {ws: session_id for session_id, ws in app.sessions.items()}
        run.sessions = {death: by_ws[victim.server_ws] for death, victim in victims.items()}
        try:
            run.report = stale_sessions(app)
        except Exception as exc:  # the student's code: any error is reported in one line
            run.error = describe_error("stale_sessions(server)", exc)
        server.abort_connections()
    return run


async def check_deaths(break_link: Callable[..., Any], stale_sessions: Callable[[Any], Any]) -> Report:
    """Run notebook 01's exercise for real: your deaths (round 1), then your report on the map (round 2).

    Args:
        break_link: ``async def break_link(proxy, link, how)``: make the
            client behind the proxy connection labelled ``link`` die, and no
            other: ``how`` is ``"reset"`` (the server gets an RST) or
            ``"vanished"`` (nothing gets through, no FIN, no RST).
        stale_sessions: ``def stale_sessions(server)``: for the naive server
            ``server``, a dict ``{session_id: verdict}`` with one of
            :data:`VERDICTS` for every session in ``server.sessions``.

    Returns:
        A :class:`~wslab.checks.report.Report`: one case per client, PASS or
        FAIL with a hint. It never raises for a mistake in your code.
    """
    if not callable(break_link) or not callable(stale_sessions):
        raise LabError("check_deaths(break_link, stale_sessions) takes your two functions, in that order")
    links = await break_links(break_link)
    report = await report_sessions(stale_sessions)
    return Report([judge_link(run) for run in links] + judge_report(report))
