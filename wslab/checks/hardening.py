"""Notebook 08's check: your front door (Origin allow-list and token) and your client's fresh token per attempt.

The exercise::

    def admit(origin, token, app_origin, signer):
        return None                  # TODO: 403 for another page's origin, 401 without a valid token

    def url_for_attempt(signer, server_url):
        return server_url            # TODO: a token that is still valid when the attempt is made

    result = await wslab.checks.check_front_door(admit, url_for_attempt)

The check serves a feed whose opening handshake asks your ``admit`` (as its
``process_request``), and knocks on it for real:

- ``app page`` (the control): a page on the app's own origin, in Chromium,
  with a valid token: it must get in and receive;
- ``other page``: a page on another origin (another port), in Chromium, with a
  valid token: the hijack of notebook 08's section 1; must get 403;
- ``no Origin``: a Python client with a valid token and no ``Origin``
  header (not a browser): must get in;
- ``no token``, ``forged`` (a token whose signature was changed), ``expired``: Python clients; must get 401;
- ``refresh``: a :class:`~wslab.clients.reconnect.ReconnectingClient` whose URL is
  your ``url_for_attempt``, against the lab's own server whose tokens live
  0.8 s and which closes a connection with 4401 when its token expires: it must
  stay connected through the expiries, never be refused, and miss nothing.

It runs in two steps: :func:`knock` (run: every case, what happened,
recorded) and :func:`judge` (pass or fail with a hint, from a record alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import InvalidStatus
from websockets.http11 import Request, Response

from ..clients.page import ClosePage, open_page, page_url, serve_page
from ..clients.reconnect import ReconnectingClient
from ..runtime.chromium import launch_browser
from ..runtime.errors import LabError
from ..runtime.lab import Lab
from ..runtime.timing import scaled
from ..servers import Gate, ReplayServer, TokenSigner, start_app, token_of
from .report import Case, Report, describe_error

__all__ = ["CASES", "Knock", "check_front_door", "judge", "knock"]

Admit = Callable[[str | None, str | None, str, TokenSigner], Any]
UrlForAttempt = Callable[[TokenSigner, str], Any]

# Each case, and the answer the front door must give: None lets the handshake in.
CASES: dict[str, int | None] = {
    "app page": None, "other page": 403, "no Origin": None, "no token": 401, "forged": 401, "expired": 401,
    "refresh": None,
}

REFRESH_LIFETIME = 0.8  # seconds a token lives in the refresh case
REFRESH_RUN = 2.8  # seconds the refresh case runs: three expiries


@dataclass
class Knock:
    """One case, as it happened: all :func:`judge` needs.

    Attributes:
        case: Its name (a key of :data:`CASES`).
        answered: What your ``admit`` returned (None: let in), if it was asked.
        asked: Whether your ``admit`` was asked at all.
        error: What your code raised, in one line; or why the case could not run.
        received: Messages the client received (the pages and the Python clients).
        opens, rejected, missed, gave_up: The refresh case: connections opened, handshakes refused,
            messages missed, and why the client stopped.
        origin: The page's origin (the browser cases).
    """

    case: str
    answered: Any = None
    asked: bool = False
    error: str | None = None
    received: int = 0
    opens: int = 0
    rejected: int = 0
    missed: int = 0
    gave_up: str | None = None
    origin: str | None = None


class FrontDoor:
    """The feed under test: its ``process_request`` asks your ``admit``, and records each answer by case."""

    def __init__(self, admit: Admit, app_origin: str, signer: TokenSigner) -> None:
        self.admit = admit
        self.app_origin = app_origin
        self.signer = signer
        self.answers: dict[str, tuple[Any, str | None]] = {}  # case -> (what admit returned, its error)

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        case = request.path.split("case=", 1)[1].split("&")[0] if "case=" in request.path else "?"
        case = case.replace("+", " ").replace("%20", " ")
        try:
            answer = self.admit(request.headers.get("Origin"), token_of(request), self.app_origin, self.signer)
        except Exception as exc:  # noqa: BLE001 - the student's bug: one line in the report, a 500 on the wire
            self.answers[case] = (None, describe_error("admit()", exc))
            return connection.respond(http.HTTPStatus.INTERNAL_SERVER_ERROR, "admit() raised\n")
        self.answers[case] = (answer, None)
        if answer is None:
            return None
        if not isinstance(answer, int) or isinstance(answer, bool) or not 400 <= answer <= 599:
            return connection.respond(http.HTTPStatus.INTERNAL_SERVER_ERROR, "admit() returned no status\n")
        return connection.respond(answer, "refused by admit()\n")

    async def handler(self, ws: ServerConnection) -> None:
        n = 0
        while True:  # the private feed
            await ws.send(f"alice's feed, update {n}")
            n += 1
            await asyncio.sleep(0.05)


def _url(base: str, case: str, token: str | None) -> str:
    query = f"case={case.replace(' ', '+')}" + (f"&token={token}" if token is not None else "")
    return f"{base}/?{query}"


async def _browser_case(page: ClosePage, door: FrontDoor, feed_url: str, case: str, token: str) -> Knock:
    i = await page.open(_url(feed_url, case, token), timeout=scaled(5))
    await asyncio.sleep(0.3)
    answered, error = door.answers.get(case, (None, None))  # what the server answered is what counts
    return Knock(case, answered=answered, asked=case in door.answers, error=error,
                 received=len(await page.messages(i)), origin=page.page.url.rstrip("/"))


async def _python_case(door: FrontDoor, feed_url: str, case: str, token: str | None) -> Knock:
    received = 0
    with contextlib.suppress(InvalidStatus, OSError, asyncio.TimeoutError):
        async with connect(_url(feed_url, case, token), open_timeout=scaled(5), ping_interval=None) as ws:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), scaled(2))
                received = 1
    answered, error = door.answers.get(case, (None, None))
    return Knock(case, answered=answered, asked=case in door.answers, error=error, received=received)


async def _refresh_case(lab: Lab, url_for_attempt: UrlForAttempt) -> Knock:
    signer = TokenSigner(os.urandom(32), lifetime=REFRESH_LIFETIME)
    app = ReplayServer(lab.timeline, name="check-refresh", gate=Gate(auth=signer))
    server = await start_app(lab, app)
    lab.spawn(app.broadcast_forever(0.05), name="check-refresh-broadcasts")
    raised: list[str] = []

    def url() -> str:
        try:
            result = url_for_attempt(signer, server.url)
        except Exception as exc:
            raised.append(describe_error("url_for_attempt()", exc))
            raise LabError(raised[-1]) from None
        if not isinstance(result, str):
            raised.append(f"url_for_attempt() returned {result!r}: return the URL, a str")
            raise LabError(raised[-1])
        return result

    seen: set[int] = set()
    client = ReconnectingClient(url, name="check-client", timeline=lab.timeline, min_delay=0.05,
                                record_messages=False, ping_interval=None)
    client.on_message = lambda m: seen.add(m.seq) if m.seq is not None else None
    lab.spawn(client.run(), name="check-client")
    await asyncio.sleep(REFRESH_RUN)
    last = app.next_seq
    with contextlib.suppress(LabError):
        await asyncio.wait_for(_until_caught_up(client, seen, last), scaled(2))
    await client.close()
    rejected = sum(1 for e in lab.timeline.select(source="check-client", kind="error") if "HTTP 401" in e.detail)
    first = min(seen, default=last)
    return Knock("refresh", asked=True, error=raised[0] if raised else None, opens=client.opens, rejected=rejected,
                 missed=len(set(range(first, last)) - seen), gave_up=client.gave_up, received=len(seen))


async def _until_caught_up(client: ReconnectingClient, seen: set[int], last: int) -> None:
    while client.gave_up is None and not (client.state == "open" and max(seen, default=-1) >= last - 1):
        await asyncio.sleep(0.02)


async def knock(admit: Admit, url_for_attempt: UrlForAttempt) -> list[Knock]:
    """Run: every case of :data:`CASES`, recorded; judges nothing. A case that could not run says why."""
    async with Lab() as lab:
        signer = TokenSigner(os.urandom(32), lifetime=60)
        browser = await launch_browser(lab, name="check-browser", timeout=scaled(15))
        app_pages = await serve_page(lab, name="check-app")
        other_pages = await serve_page(lab, name="check-other")
        app_origin = page_url(app_pages).rstrip("/")
        door = FrontDoor(admit, app_origin, signer)
        feed = await lab.serve(door.handler, name="check-feed", process_request=door.process_request)
        refresh = asyncio.create_task(_refresh_case(lab, url_for_attempt))  # runs meanwhile: 2.8 s
        knocks: list[Knock] = []
        token = signer.mint("alice")
        forged = token.rsplit(".", 1)[0] + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        cases: list[tuple[str, Any]] = [
            ("app page", lambda: _page_case(browser, app_pages, door, feed.url, "app page", token)),
            ("other page", lambda: _page_case(browser, other_pages, door, feed.url, "other page", token)),
            ("no Origin", lambda: _python_case(door, feed.url, "no Origin", token)),
            ("no token", lambda: _python_case(door, feed.url, "no token", None)),
            ("forged", lambda: _python_case(door, feed.url, "forged", forged)),
            ("expired", lambda: _python_case(door, feed.url, "expired", signer.mint("alice", lifetime=-1))),
        ]
        for case, run in cases:
            try:
                knocks.append(await run())
            except Exception as exc:  # noqa: BLE001 - one line in the report, never a traceback
                knocks.append(Knock(case, error=f"could not run: {str(exc).splitlines()[0] if str(exc) else exc!r}"))
        knocks.append(await refresh)
    return knocks


async def _page_case(browser: Any, pages: Any, door: FrontDoor, feed_url: str, case: str, token: str) -> Knock:
    page = await open_page(browser, page_url(pages), name=f"check-{case.replace(' ', '-')}")
    return await _browser_case(page, door, feed_url, case, token)


def judge(k: Knock) -> Case:
    """Pass or fail, with a hint that names what still fails. From the record alone: no I/O."""
    if k.case == "refresh":
        if k.error is not None:
            return Case(k.case, False, k.error)
        if k.rejected and not k.opens:
            return Case(k.case, False, "the client's first handshake was refused with 401: the URL from "
                        "url_for_attempt carries no valid token; put one in (?token=...)")
        if k.rejected:
            return Case(k.case, False, f"the client was refused {k.rejected} time(s) with 401 after its token "
                        "expired: url_for_attempt must mint a new token every time it is called "
                        "(signer.mint(...), or signer.url(server_url, 'alice'))")
        if k.opens < 3 or k.gave_up is not None:
            why = f": it gave up ({k.gave_up})" if k.gave_up else ""
            return Case(k.case, False, f"the client connected {k.opens} time(s) in {REFRESH_RUN} s with tokens "
                        f"that live {REFRESH_LIFETIME} s{why}: put a token in the URL (?token=...)")
        if k.missed:
            return Case(k.case, False, f"the client missed {k.missed} messages: keep the URL's other parts")
        return Case(k.case, True, f"{k.opens} connections, each with a fresh token; never refused, nothing missed")
    if k.error is not None:
        return Case(k.case, False, k.error)
    if not k.asked:
        return Case(k.case, False, "the handshake never reached the server")
    expected, answered = CASES[k.case], k.answered
    if answered is not None and (not isinstance(answered, int) or isinstance(answered, bool)):
        return Case(k.case, False, f"admit() returned {answered!r}: return None to let in, or a status like 403")
    if expected is None:
        if answered is None and (k.received or k.case == "no Origin"):
            where = f"the page on {k.origin}" if k.origin else "the Python client"
            return Case(k.case, True, f"{where} got in and receives the feed")
        if k.case == "app page":
            return Case(k.case, False, f"the app's own page ({k.origin}) was refused with {answered}: "
                        "app_origin's pages, with a valid token, must get in")
        return Case(k.case, False, f"a client that sends no Origin (not a browser) was refused with {answered}: "
                    "origin is None for it; let it in (a script can claim any origin anyway)")
    if answered is None:
        return Case(k.case, False, _LET_IN[k.case].format(origin=k.origin))
    if answered != expected:
        return Case(k.case, False, f"refused, but with {answered}: {_STATUS_HINT[expected]}")
    seen = " (the page saw only onerror and close code 1006)" if k.origin else ""
    return Case(k.case, True, f"refused with {answered}{seen}")


_LET_IN = {
    "other page": "a page on {origin}, another origin, got alice's feed: compare origin with app_origin, "
                  "and return 403 when they differ",
    "no token": "a handshake without a token got in: signer.verify(token) raises TokenError for None",
    "forged": "a token with a forged signature got in: check it with signer.verify(token), don't just "
                    "look for one",
    "expired": "an expired token got in: signer.verify(token) raises TokenError once it expired",
}
_STATUS_HINT = {
    403: "another origin is 403 Forbidden (this page may not), not 401 (who are you?)",
    401: "a missing or bad token is 401 Unauthorized, not 403",
}


async def check_front_door(admit: Admit, url_for_attempt: UrlForAttempt) -> Report:
    """Run ``admit`` as the feed's front door and ``url_for_attempt`` as a client's URL, for real; judge each case.

    Raises:
        LabError: no Chromium here (the message says how to install one).
    """
    for what, fn in (("admit", admit), ("url_for_attempt", url_for_attempt)):
        if not callable(fn):
            return Report([Case(what, False, f"{what} must be a function; this is a {type(fn).__name__}")])
    return Report([judge(k) for k in await knock(admit, url_for_attempt)])
