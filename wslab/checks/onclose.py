"""Notebook 03's check: your JavaScript ``decide(event)``, called by ``onclose`` in a real Chromium.

The exercise::

    DECIDE = \"\"\"
    function decide(event) {
      return "retry";   // TODO: "retry", "back off" or "stop", from event.code (and event.wasClean)
    }
    \"\"\"

    result = await wslab.checks.check_onclose(DECIDE)
    result            # one line per close: PASS, or FAIL with a hint that names the code

The check loads the lab's page in a real headless Chromium, installs your
function there (:meth:`wslab.clients.page.ClosePage.install_decider`), and
ends real WebSockets in every way the notebook showed: the server closes with
1000, 1001 (it shuts down), 1008, 1011 (its handler raises), 1012 (it
restarts) and 4001, and the fault proxy resets one (1006). Each time, the
page's ``onclose`` asks your function, and its answer is compared with
:func:`wslab.clients.closecodes.after_close`, the one table of what a client
does after each code. A healthy control socket stays open throughout: it must
still be open at the end, and nothing may have been decided for it.

It runs in three steps: :func:`start_page` (setup), :func:`drive_closes`
(run: each close, and what your function answered, recorded), and
:func:`judge` (pass or fail with a hint, from a record alone; no browser).
"""

from __future__ import annotations

from dataclasses import dataclass

from websockets.asyncio.server import ServerConnection

from ..clients.closecodes import AfterClose, after_close, name
from ..clients.page import CloseEvent, ClosePage, Decision, ScriptError, open_page, page_url, serve_page
from ..faults.proxy import FaultProxy, start_proxy
from ..runtime.chromium import launch_browser
from ..runtime.errors import LabError
from ..runtime.lab import Lab, LabServer
from ..runtime.timing import scaled
from .report import Case, Report

__all__ = ["CLOSES", "MEANS", "WHY", "CloseRun", "check_onclose", "drive_closes", "judge", "start_page"]

# The closes the check drives, in order: case name -> the code the page should see.
CLOSES: dict[str, int] = {str(code): code for code in (1000, 1001, 1008, 1011, 1012, 4001, 1006)}

CONTROL = "control"  # the healthy socket's case: nothing closes it

# What each answer means, for the hints.
MEANS = {
    AfterClose.RETRY: "reconnect soon",
    AfterClose.BACK_OFF: "reconnect, waiting longer after each failure",
    AfterClose.STOP: "don't reconnect",
}

# Why, for each code the check drives: what the close says about the server.
WHY = {
    1000: "the server ended the session normally and said nothing about coming back: no restart was announced",
    1001: "the server is going away on purpose (shutting down for a deploy), and another one takes over in a moment",
    1008: "the server refused this connection on purpose (a rule of the application): it will refuse again",
    1011: "the server failed while handling this connection: reconnecting at once may hit the same failure",
    1012: "the server announced a restart: it listens again in a moment",
    4001: "4000-4999 are the application's own codes, for refusals like 'banned': reconnecting repeats them",
    1006: "no close frame came (wasClean is false): a reset or a dead link; the network or server may still be down",
}


@dataclass
class CloseRun:
    """What happened to one socket, as recorded: all :func:`judge` needs.

    Attributes:
        case: The case's name: a close code as text, or ``"control"``.
        code: The close code the check drove (None for the control).
        seen: The ``CloseEvent`` the page's ``onclose`` got; None if it did not fire.
        decision: What ``decide(event)`` answered then; None if it wasn't asked.
        still_open: Whether the socket was still open at the end (the control's test).
        error: Why the case could not run, in one line.
        bound: Seconds ``onclose`` had to fire within.
    """

    case: str
    code: int | None
    seen: CloseEvent | None = None
    decision: Decision | None = None
    still_open: bool = False
    error: str | None = None
    bound: float = 5.0


def _label(code: int) -> str:
    return f"{code} {name(code)}"


def judge(run: CloseRun) -> Case:
    """Pass or fail for one socket, with a hint that names the code and why. Pure: no I/O."""
    if run.error is not None:
        return Case(run.case, False, run.error)
    if run.code is None:
        return _judge_control(run)
    if run.seen is None:
        return Case(run.case, False, f"the page's onclose did not fire within {run.bound:g} s of the {run.code} close")
    if run.seen.code != run.code:
        return Case(run.case, False, f"the check drove a {run.code} close, but the page saw {run.seen}")
    label = _label(run.code)
    expected = after_close(run.seen.code, run.seen.was_clean)
    answer = run.decision
    if answer is None:
        return Case(run.case, False, f"{label}: onclose fired, but decide(event) was not asked")
    if answer.error is not None:
        return Case(run.case, False, f"{label}: decide(event) threw {answer.error}")
    if answer.answer is None:
        return Case(run.case, False,
                    f"{label}: decide(event) returned {answer.returned}: "
                    "return a string, 'retry', 'back off' or 'stop'")
    if answer.answer not in set(AfterClose):
        return Case(run.case, False,
                    f"{label}: decide(event) returned {answer.answer!r}: the answers are exactly "
                    "'retry', 'back off' and 'stop'")
    if answer.answer != expected:
        why = WHY.get(run.code, "")
        return Case(run.case, False,
                    f"{label}: decide(event) answered {answer.answer!r}, expected {expected.value!r} "
                    f"({MEANS[expected]}): {why}")
    return Case(run.case, True, f"{label}, wasClean {str(run.seen.was_clean).lower()}: {expected.value!r}")


def _judge_control(run: CloseRun) -> Case:
    if run.seen is not None or not run.still_open:
        closed = f" ({run.seen})" if run.seen is not None else ""
        return Case(run.case, False,
                    f"the healthy socket, which nothing should close, closed{closed}: "
                    "decide(event) must only answer, not close or open sockets")
    if run.decision is not None:
        return Case(run.case, False, f"something was decided for the healthy socket that is still open: {run.decision}")
    return Case(run.case, True, "the healthy socket stayed open, and nothing was decided for it")


async def _actions(ws: ServerConnection) -> None:
    """The server under test: the close the page asks for in the URL's path."""
    # A handler runs after the handshake, so request is set; websockets types it as optional.
    match ws.request.path if ws.request else "":
        case "/1000":
            await ws.close(1000, "done")
        case "/1008":
            await ws.close(1008, "not allowed")
        case "/1011":
            raise RuntimeError("a bug in the handler")  # websockets closes with 1011
        case "/4001":
            await ws.close(4001, "banned")
        case _:
            await ws.wait_closed()  # until the server stops or restarts, or the proxy resets


async def start_page(lab: Lab, source: str, *, name: str = "decide") -> tuple[ClosePage, LabServer, FaultProxy, int]:
    """Setup: Chromium, the page with ``source`` installed, the server under test behind a fault proxy.

    Returns the page, the server, the proxy, and the healthy control socket
    (open to the page's own server, which nothing in the check closes).

    Raises:
        ScriptError: ``source`` did not load in the page.
    """
    browser = await launch_browser(lab, name="check-browser", timeout=scaled(10))
    pages = await serve_page(lab, name="check-pages")
    page = await open_page(browser, page_url(pages), name="check-page")
    await page.install_decider(source, name=name)
    server = await lab.serve(_actions, name="check-server")
    proxy = await start_proxy(lab, server, name="check-proxy")
    control = await page.open(pages.url + "/control", timeout=scaled(5))
    return page, server, proxy, control


async def _one_close(
    page: ClosePage, server: LabServer, proxy: FaultProxy, case: str, code: int, bound: float
) -> CloseRun:
    if code == 1006:
        socket = await page.open(proxy.url + "/wait", timeout=bound)
        await proxy.set_fault("reset")  # RST both ways: no close frame anywhere
    elif code in (1001, 1012):
        socket = await page.open(server.url + "/wait", timeout=bound)
        if code == 1001:
            await server.stop()  # close frames with 1001 "going away", then stop listening
            await server.start()
        else:
            await server.restart()  # close frames with 1012 "service restart", listen again
    else:
        socket = await page.open(f"{server.url}/{code}", timeout=bound)
    seen = await page.wait_close(socket, timeout=bound)
    return CloseRun(case, code, seen=seen, decision=await page.decision(socket), bound=bound)


async def drive_closes(
    page: ClosePage, server: LabServer, proxy: FaultProxy, control: int, *, within: float = 5.0
) -> list[CloseRun]:
    """Run: end one socket per case in :data:`CLOSES`, then look at the control. Records; judges nothing.

    A case whose socket could not even be opened or closed records why, in one
    line. If the page stops answering (a ``decide`` that never returns blocks
    the page), the remaining cases are not run.
    """
    bound = scaled(within)
    runs: list[CloseRun] = []
    stuck: str | None = None
    for case, code in CLOSES.items():
        if stuck is not None:
            runs.append(CloseRun(case, code, error=f"not run: {stuck}", bound=bound))
            continue
        try:
            runs.append(await _one_close(page, server, proxy, case, code, bound))
        except TimeoutError:
            stuck = "the page stopped answering: does decide(event) loop forever?"
            runs.append(CloseRun(case, code, error=stuck, bound=bound))
        except Exception as exc:  # noqa: BLE001 - e.g. a decide() that reloads the page: one line, never a traceback
            runs.append(CloseRun(case, code, error=_one_line(exc), bound=bound))
    if stuck is not None:
        runs.insert(0, CloseRun(CONTROL, None, error=f"not run: {stuck}", bound=bound))
        return runs
    try:
        seen = await page.wait_close(control, timeout=0.05)
        still_open = await page.ready_state(control) == 1
        control_run = CloseRun(CONTROL, None, seen=seen, decision=await page.decision(control),
                               still_open=still_open, bound=bound)
    except Exception as exc:  # noqa: BLE001
        control_run = CloseRun(CONTROL, None, error=_one_line(exc), bound=bound)
    return [control_run, *runs]


def _one_line(exc: BaseException) -> str:
    """A lab error as it is; anything else as its type and first line."""
    if isinstance(exc, (LabError, ScriptError)):
        return str(exc).splitlines()[0]
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


async def check_onclose(source: str, *, name: str = "decide", within: float = 5.0) -> Report:
    """Install ``source`` (JavaScript defining ``function decide(event)``) in a real page; drive real closes.

    Each case passes when ``decide(event)`` answered what
    :func:`wslab.clients.closecodes.after_close` says for the close the page
    saw: ``"retry"``, ``"back off"`` or ``"stop"``. The control passes when
    the healthy socket is still open and nothing was decided for it. ``within``
    (scaled by ``WSLAB_TIMEOUT_FACTOR``) bounds each open and each close.

    Raises:
        LabError: no Chromium here (the message says how to install one).
    """
    if not isinstance(source, str):
        return Report([Case("javascript", False,
                            "pass the JavaScript as a string, DECIDE = \"\"\"function decide(event) { ... }\"\"\"; "
                            f"this is of type {type(source).__name__}")])
    async with Lab() as lab:
        try:
            page, server, proxy, control = await start_page(lab, source, name=name)
        except ScriptError as exc:
            return Report([Case("javascript", False, f"your JavaScript did not load: {exc}")])
        except TimeoutError:
            return Report([Case("javascript", False, "your JavaScript did not finish loading: does it loop forever?")])
        runs = await drive_closes(page, server, proxy, control, within=within)
    return Report([judge(run) for run in runs])
