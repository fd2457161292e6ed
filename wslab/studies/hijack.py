"""Cross-site WebSocket hijacking, in a real Chromium: a page on another origin uses the victim's cookie.

The same-origin policy keeps a page from *reading* another site's HTTP
responses, but a WebSocket is not covered by it: any page may open one to
any server, and the browser attaches the server's cookies to the handshake.
A server that trusts its session cookie alone streams the victim's data to
whichever page asked. The handshake carries one clue: ``Origin``, the page
that opened the socket, which a page cannot forge. An allow-list of origins
(websockets' ``origins=``, ``FixedServer(origins=...)``) refuses the others
with HTTP 403.

:func:`hijack` plays it out with three lab servers on 127.0.0.1:

- the **app** (``login``): the site the victim logged in to; its page sets
  the session cookie ``session=...`` (no ``SameSite`` attribute: Chromium
  then treats it as ``Lax``);
- the **account feed** (:class:`AccountFeed`, a :class:`~wslab.servers.base.SessionServer`):
  the WebSocket the app's page uses; it streams private data to any handshake
  that carries a valid session cookie, and records each handshake's
  ``Origin`` and cookie;
- the **other page** (``evil``), on another port: another origin. Opened as
  ``http://127.0.0.1:PORT`` it is the same *site* as the app (ports do not
  count for sites, nor for cookies); opened as ``http://wslab.test:PORT`` it
  is another site.

Every result comes from the run: what the server saw, and what the page's
script could see (:class:`Attempt`).
"""

from __future__ import annotations

import asyncio
import http
import secrets
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from ..clients.page import PAGE, ClosePage, page_url, serve_page
from ..runtime.chromium import TEST_HOST, LabBrowser
from ..runtime.lab import Lab
from ..runtime.server import LabServer
from ..runtime.timeline import Timeline
from ..runtime.timing import close_within
from ..servers import Gate, SessionServer, start_app

__all__ = ["AccountFeed", "Attempt", "Handshake", "hijack", "serve_login"]

HANDSHAKE = "handshake"  # the feed's timeline event: one per handshake, with its Origin and whether a cookie came


@dataclass(frozen=True)
class Handshake:
    """What the account feed saw of one opening handshake."""

    origin: str | None
    cookie: bool  # the session cookie came with it
    status: int  # what the server answered: 101, or 403 from the allow-list


class AccountFeed(SessionServer):
    """Streams each logged-in user's private data; who is logged in, it learns from the session cookie.

    Args:
        timeline: Where to record handshakes and sessions.
        sessions_by_cookie: Session cookie value -> user name: the app's login records.
        gate: Put ``Gate(origins=[the app's origin])`` here to refuse other pages.
        interval: Seconds between two messages to each client.
    """

    def __init__(self, timeline: Timeline, users: dict[str, str], *, name: str = "feed", gate: Gate | None = None,
                 interval: float = 0.05) -> None:
        super().__init__(timeline, name, gate=gate)
        self.users = users
        self.interval = interval
        self.handshakes: list[Handshake] = []

    def record_handshake(self, connection: ServerConnection, request: Request, response: Response) -> None:
        """websockets' ``process_response``: note the Origin and the cookie of every handshake, and the answer."""
        handshake = Handshake(request.headers.get("Origin"), self.user_of(request) is not None, response.status_code)
        self.handshakes.append(handshake)
        self.timeline.record(self.name, HANDSHAKE, detail=f"Origin {handshake.origin}, "
                             f"cookie {'yes' if handshake.cookie else 'no'} -> {handshake.status}",
                             origin=handshake.origin, cookie=handshake.cookie, status=handshake.status)

    def user_of(self, request: Request) -> str | None:
        for part in request.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == "session" and value in self.users:
                return self.users[value]
        return None

    async def handler(self, ws: ServerConnection) -> None:
        user = self.user_of(ws.request) if ws.request is not None else None
        if user is None:
            await close_within(ws, code=1008, reason="log in first")
            return
        session_id = self.register(ws)
        try:
            n = 0
            while True:  # the private data: what only the logged-in user should see
                await ws.send(f"{user}'s account: balance 1,234.56 EUR (update {n})")
                self.sent += 1
                n += 1
                await asyncio.sleep(self.interval)
        finally:
            self.remove(session_id, f"connection closed ({ws.close_code})")


async def serve_login(lab: Lab, cookie: str, *, name: str = "login") -> LabServer:
    """The app's site: its page (:data:`~wslab.clients.page.PAGE`) sets ``session=<cookie>``, as a login would."""

    def login(connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        response = connection.respond(http.HTTPStatus.OK, PAGE)
        response.headers["Content-Type"] = "text/html; charset=utf-8"
        response.headers["Set-Cookie"] = f"session={cookie}; Path=/; HttpOnly"  # no SameSite: Chromium says Lax
        return response

    async def hold(ws: ServerConnection) -> None:
        await ws.wait_closed()

    return await lab.serve(hold, name=name, process_request=login)


@dataclass(frozen=True)
class Attempt:
    """One page's attempt to open the feed, as the server saw it and as the page's script saw it.

    Attributes:
        page: Which page (its origin).
        allow_list: Whether the feed had an Origin allow-list.
        cookie_sent: The browser attached the session cookie to the handshake.
        status: The server's answer: 101 (accepted), 403 (refused), None (never reached it).
        opened: ``onopen`` fired in the page.
        messages: How many messages the page's script received in ``listen`` seconds.
        first: The first of them, if any.
        onerror: ``onerror`` fired (it carries nothing: no status, no text).
        code, reason, was_clean: The ``CloseEvent`` the script got, if the socket closed.
        console: What Chromium wrote in the console about it (DevTools shows it; the script can't read it).
    """

    page: str
    allow_list: bool
    cookie_sent: bool | None
    status: int | None
    opened: bool
    messages: int
    first: str | None
    onerror: bool
    code: int | None
    reason: str | None
    was_clean: bool | None
    console: str

    def row(self) -> dict[str, Any]:
        return {
            "page": self.page, "allow-list": "yes" if self.allow_list else "no",
            "cookie sent": {True: "yes", False: "no", None: "-"}[self.cookie_sent],
            "server answered": self.status if self.status is not None else "-",
            "page: onopen": "yes" if self.opened else "no", "page: messages": self.messages,
            "page: onerror": "yes" if self.onerror else "no",
            "page: close code": self.code if self.code is not None else "-",
            "page: wasClean": "-" if self.was_clean is None else str(self.was_clean).lower(),
        }


async def _attempt(lab: Lab, browser: LabBrowser, context: Any, page_origin: str, feed: AccountFeed,
                   feed_server: LabServer, allow_list: bool, listen: float) -> Attempt:
    """Open ``page_origin``'s page in the victim's browser context; from it, open the feed; see what happens."""
    playwright_page = await asyncio.wait_for(context.new_page(), browser.timeout)
    try:
        await asyncio.wait_for(playwright_page.goto(page_origin, timeout=browser.timeout * 1000), browser.timeout + 1)
        page = ClosePage(browser, playwright_page, f"page {page_origin}")
        seen = len(feed.handshakes)
        i = await page.open(feed_server.url, timeout=browser.timeout)
        await asyncio.sleep(listen)
        received = await page.messages(i)
        close = await page.wait_close(i, timeout=0.5)
        handshake = feed.handshakes[seen] if len(feed.handshakes) > seen else None
        console = next((line for line in page.console if "WebSocket" in line and "failed" in line), "")
        return Attempt(
            page=page_origin, allow_list=allow_list, cookie_sent=handshake.cookie if handshake else None,
            status=handshake.status if handshake else None,
            opened=await page.opened(i), messages=len(received),
            first=str(received[0]) if received else None, onerror=await page.errored(i),
            code=close.code if close else None, reason=close.reason if close else None,
            was_clean=close.was_clean if close else None, console=console,
        )
    finally:
        await asyncio.wait_for(playwright_page.close(), browser.timeout)


async def hijack(lab: Lab, browser: LabBrowser, *, listen: float = 0.5) -> list[Attempt]:
    """The victim logs in, then pages from three origins open the account feed, with and without an allow-list.

    The pages: the app's own (the control), another port on 127.0.0.1 (same
    site, another origin), and :data:`~wslab.runtime.chromium.TEST_HOST` on
    that port (another site). Each page opens in the victim's browser
    context, where the session cookie is set. Returns one :class:`Attempt`
    per page and feed.
    """
    cookie = secrets.token_urlsafe(16)
    login = await serve_login(lab, cookie, name="hijack-login")
    evil = await serve_page(lab, name="hijack-evil")
    app_origin = page_url(login).rstrip("/")
    context = await asyncio.wait_for(browser.browser.new_context(), browser.timeout)
    attempts = []
    try:
        victim = await asyncio.wait_for(context.new_page(), browser.timeout)
        await asyncio.wait_for(victim.goto(page_url(login), timeout=browser.timeout * 1000), browser.timeout + 1)
        pages = [page_url(login), page_url(evil), page_url(evil, host=TEST_HOST)]
        for allow_list in (False, True):
            gate = Gate(origins=[app_origin]) if allow_list else None
            feed = AccountFeed(lab.timeline, {cookie: "alice"}, name="hijack-feed", gate=gate)
            feed_server = await start_app(lab, feed, process_response=feed.record_handshake)
            for origin in pages:
                attempts.append(await _attempt(lab, browser, context, origin.rstrip("/"), feed, feed_server,
                                               allow_list, listen))
            await lab.close("hijack-feed")
    finally:
        await asyncio.wait_for(context.close(), browser.timeout)
        for name in ("hijack-login", "hijack-evil", "hijack-feed"):
            await lab.close(name)
    return attempts
