"""A web page in the lab's Chromium that opens WebSockets and logs every ``CloseEvent``, as the seed post advises.

The page runs the seed's handler, recording instead of logging::

    websocket.onclose = function (e) {
        closes.push({socket: i, code: e.code, reason: e.reason, wasClean: e.wasClean});
    };

and Python reads what it recorded::

    browser = await launch_browser(lab)
    pages = await serve_page(lab, name="pages")
    page = await open_page(browser, page_url(pages))
    i = await page.open(server.url)          # new WebSocket(url) in the page
    await server.restart()
    await page.wait_close(i)                 # CloseEvent(code=1012, reason='service restart', was_clean=True)

A page can also decide, in JavaScript, what to do after each close: install
a function, and every ``onclose`` calls it with the ``CloseEvent`` and records
its answer (or what it threw)::

    await page.install_decider("function decide(event) { return event.code === 1008 ? 'stop' : 'retry'; }")
    ...                                       # a close happens
    await page.decision(i)                    # Decision(socket=0, answer='stop', returned='string', error=None)
"""

from __future__ import annotations

import asyncio
import http
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from ..runtime.chromium import LabBrowser
from ..runtime.errors import LabError
from ..runtime.lab import Lab
from ..runtime.server import Handler, LabServer
from ..runtime.timeline import EventKind, Timeline

__all__ = ["PAGE", "CloseEvent", "Decision", "ScriptError", "ClosePage", "open_page", "serve_page", "page_url"]

# The page. openSocket() is `new WebSocket(url)` plus the seed's onclose handler,
# recording into window.closes instead of logging to the console.
PAGE = """<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>wslab: CloseEvent</title>
<link rel="icon" href="data:,">
<h1>wslab: CloseEvent</h1>
<script>
window.sockets = [];   // every WebSocket this page opened, by index
window.opened = [];    // indexes whose onopen fired
window.closes = [];    // one {socket, code, reason, wasClean} per onclose
window.decider = null; // the function onclose asks what to do next (installDecider), or null
window.decisions = []; // one {socket, answer, type} or {socket, error} per onclose, once a decider is installed
window.messages = {};  // socket index -> the messages it received (text, or a byte count for binary)
window.errors = [];    // indexes whose onerror fired

function openSocket(url) {
  let websocket;
  try {
    websocket = new WebSocket(url);
  } catch (e) {          // e.g. SecurityError: ws:// from an https:// page
    return {error: {name: e.name, message: e.message}};
  }
  const i = window.sockets.push(websocket) - 1;
  websocket.onopen = function () { window.opened.push(i); };
  websocket.onerror = function () { window.errors.push(i); };  // an Event: no status, no reason, nothing
  websocket.onmessage = function (e) {
    (window.messages[i] = window.messages[i] || []).push(typeof e.data === 'string' ? e.data : e.data.size);
  };
  websocket.onclose = function (e) {
    console.log('WebSocket closed: Code:' + e.code + ' Reason:' + e.reason + ' wasClean:' + e.wasClean);
    if (window.decider !== null) window.decisions.push(askDecider(i, e));
    window.closes.push({socket: i, code: e.code, reason: e.reason, wasClean: e.wasClean});
  };
  return {socket: i};
}

// Run a script that defines the function `name`; from now on onclose asks it what to do.
function installDecider(source, name) {
  let decider;
  try {
    decider = new Function(source + '\\nreturn ' + name + ';')();  // the script runs in its own scope
  } catch (e) {          // e.g. SyntaxError, or ReferenceError: decide is not defined
    return {error: e instanceof Error ? {name: e.name, message: e.message} : {name: 'throw', message: String(e)}};
  }
  if (typeof decider !== 'function') {
    const what = decider === null ? 'null' : typeof decider;
    return {error: {name: 'TypeError', message: name + ' is ' + what + ', not a function'}};
  }
  window.decider = decider;
  return {};
}

function askDecider(i, e) {
  try {
    const answer = window.decider(e);
    return {socket: i, answer: typeof answer === 'string' ? answer : null, type: typeof answer};
  } catch (err) {        // whatever it threw, in one line
    return {socket: i, error: err instanceof Error ? err.name + ': ' + err.message : String(err)};
  }
}

function closeSocket(i, code, reason) {
  try {
    if (code === null) window.sockets[i].close();
    else window.sockets[i].close(code, reason);
  } catch (e) {          // e.g. InvalidAccessError: a script may not send 1011
    return {error: {name: e.name, message: e.message}};
  }
  return {};
}
</script>
</html>
"""


@dataclass(frozen=True)
class CloseEvent:
    """What the page's ``onclose`` handler received (the browser's ``CloseEvent``)."""

    socket: int
    code: int
    reason: str
    was_clean: bool

    def __str__(self) -> str:
        return f"code={self.code} reason={self.reason!r} wasClean={str(self.was_clean).lower()}"


@dataclass(frozen=True)
class Decision:
    """What the page's installed ``decide(event)`` answered in one ``onclose``.

    Attributes:
        socket: The WebSocket's index.
        answer: The string it returned; None if it returned anything else, or threw.
        returned: What it returned, as JavaScript's ``typeof`` says: ``"string"``, ``"undefined"``...
        error: What it threw, in one line (``"TypeError: ..."``), or None.
    """

    socket: int
    answer: str | None
    returned: str | None = None
    error: str | None = None

    def __str__(self) -> str:
        if self.error is not None:
            return f"threw {self.error}"
        return repr(self.answer) if self.answer is not None else f"returned {self.returned}, not a string"


class ScriptError(Exception):
    """An exception the browser threw in the page's script, e.g. ``SecurityError``.

    Attributes:
        name: The DOMException's name, e.g. ``"InvalidAccessError"``.
        message: The browser's own message, unchanged.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


class ClosePage:
    """A page that opens WebSockets and records each ``CloseEvent``. Make one with :meth:`LabBrowser.new_page`."""

    def __init__(self, browser: LabBrowser, page: Any, name: str) -> None:
        self.browser = browser
        self.page = page  # the Playwright Page, for anything else
        self.name = name
        self.console: list[str] = []  # the page's console messages, Chromium's warnings included
        self._reported: set[int] = set()
        page.on(EventKind.CONSOLE, self._on_console)

    @property
    def timeline(self) -> Timeline:
        return self.browser.lab.timeline

    def _on_console(self, message: Any) -> None:
        # Called by Playwright from the event loop: record, never print.
        self.console.append(message.text)
        self.timeline.record(self.name, EventKind.CONSOLE, detail=f"{message.type}: {message.text}")

    async def open(self, url: str, *, timeout: float = 10.0) -> int:
        """Run ``new WebSocket(url)`` in the page; wait until it opens or closes. Returns its index.

        Raises:
            ScriptError: the browser refused to create it (the exception it threw).
            LabError: it neither opened nor closed within ``timeout`` seconds; the page then closes it.
        """
        result = await self._evaluate("url => openSocket(url)", url)
        if "error" in result:
            exc = ScriptError(result["error"]["name"], result["error"]["message"])
            self.timeline.record(self.name, EventKind.SCRIPT_ERROR, detail=str(exc))
            raise exc
        i: int = result["socket"]
        done = await self._wait(
            "i => window.opened.includes(i) || window.closes.some(c => c.socket === i)", i, timeout
        )
        if not done:
            # Still CONNECTING: the TCP connection is up (or being made), but nothing answered
            # the opening handshake. Close it, so no half-open socket outlives the error.
            await self._evaluate("i => closeSocket(i, null)", i)
            raise LabError(
                f"the page's WebSocket to {url} got no answer to its opening handshake within {timeout} s: "
                "is a fault proxy on the way stalled? (a stall lasts, for new connections too, until 'pass')"
            )
        if await self._evaluate("i => window.opened.includes(i)", i):
            self.timeline.record(self.name, EventKind.OPEN, conn=f"s{i}", detail=url)
        return i

    async def wait_close(self, socket: int, *, timeout: float = 10.0) -> CloseEvent | None:
        """The ``CloseEvent`` of WebSocket ``socket``, or None if ``onclose`` did not fire within ``timeout``."""
        found = await self._wait("i => window.closes.some(c => c.socket === i)", socket, timeout)
        if not found:
            return None
        raw = await self._evaluate("i => window.closes.find(c => c.socket === i)", socket)
        event = CloseEvent(raw["socket"], raw["code"], raw["reason"], raw["wasClean"])
        if socket not in self._reported:
            self._reported.add(socket)
            self.timeline.record(self.name, EventKind.ONCLOSE, conn=f"s{socket}", code=event.code, detail=str(event))
        return event

    async def close_socket(self, socket: int, code: int | None = None, reason: str = "") -> None:
        """Run ``ws.close(code, reason)`` in the page.

        Raises:
            ScriptError: the browser refused (scripts may only send 1000 and 3000-4999).
        """
        result = await self._evaluate("([i, code, reason]) => closeSocket(i, code, reason)",
                                      [socket, code, reason])
        if "error" in result:
            exc = ScriptError(result["error"]["name"], result["error"]["message"])
            self.timeline.record(self.name, EventKind.SCRIPT_ERROR, conn=f"s{socket}", detail=str(exc))
            raise exc

    async def install_decider(self, source: str, *, name: str = "decide") -> None:
        """Run the JavaScript ``source``, which defines the function ``name``; then every ``onclose`` calls it.

        ``name(event)`` gets the browser's ``CloseEvent``; what it returns, or
        throws, is recorded for :meth:`decision`. Installing again replaces it.

        Raises:
            ScriptError: ``source`` did not run (e.g. ``SyntaxError``) or defines no function ``name``.
        """
        if not isinstance(source, str):
            raise LabError(f"install_decider needs JavaScript source as a str, not {type(source).__name__}")
        if not name.isidentifier():
            raise LabError(f"{name!r} is not a JavaScript function name")
        result = await self._evaluate("([source, name]) => installDecider(source, name)", [source, name])
        if "error" in result:
            exc = ScriptError(result["error"]["name"], result["error"]["message"])
            self.timeline.record(self.name, EventKind.SCRIPT_ERROR, detail=str(exc))
            raise exc

    async def decision(self, socket: int) -> Decision | None:
        """What ``decide(event)`` answered when WebSocket ``socket`` closed; None if it wasn't asked (yet)."""
        raw = await self._evaluate("i => window.decisions.find(d => d.socket === i) || null", socket)
        if raw is None:
            return None
        return Decision(raw["socket"], raw.get("answer"), raw.get("type"), raw.get("error"))

    async def send(self, socket: int, data: str) -> None:
        """Run ``ws.send(data)`` in the page (a text message)."""
        await self._evaluate("([i, data]) => window.sockets[i].send(data)", [socket, data])

    async def messages(self, socket: int) -> list[str | int]:
        """What WebSocket ``socket`` received so far: each text message, or a binary message's size."""
        received: list[str | int] = await self._evaluate("i => window.messages[i] || []", socket)
        return received

    async def opened(self, socket: int) -> bool:
        """Whether ``onopen`` fired for WebSocket ``socket``."""
        fired: bool = await self._evaluate("i => window.opened.includes(i)", socket)
        return fired

    async def errored(self, socket: int) -> bool:
        """Whether ``onerror`` fired for WebSocket ``socket`` (the page learns nothing more from it)."""
        fired: bool = await self._evaluate("i => window.errors.includes(i)", socket)
        return fired

    async def ready_state(self, socket: int) -> int:
        """``ws.readyState``: 0 CONNECTING, 1 OPEN, 2 CLOSING, 3 CLOSED."""
        state: int = await self._evaluate("i => window.sockets[i].readyState", socket)
        return state

    async def _evaluate(self, expression: str, arg: Any = None) -> Any:
        return await asyncio.wait_for(self.page.evaluate(expression, arg), self.browser.timeout)

    async def _wait(self, predicate: str, arg: Any, timeout: float) -> bool:
        """Poll ``predicate(arg)`` in the page every 20 ms; False if it stays false for ``timeout`` s."""
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        try:
            await asyncio.wait_for(
                self.page.wait_for_function(predicate, arg=arg, polling=20, timeout=timeout * 1000),
                timeout + self.browser.timeout,
            )
        except PlaywrightTimeout:
            return False
        return True

    def __repr__(self) -> str:
        return f"<ClosePage {self.name} {self.page.url}>"


async def open_page(
    browser: LabBrowser, url: str, *, name: str = "page", ignore_https_errors: bool = False,
    timeout: float | None = None,
) -> ClosePage:
    """Open ``url`` (a page from :func:`serve_page`) in a new browser context, as a :class:`ClosePage`."""
    page = await browser.new_page(url, name=name, ignore_https_errors=ignore_https_errors, timeout=timeout)
    return ClosePage(browser, page, name)


async def _hold_open(ws: ServerConnection) -> None:
    await ws.wait_closed()


def _page_or_websocket(connection: ServerConnection, request: Request) -> Response | None:
    """Answer a plain HTTP GET with the page; let WebSocket upgrades through."""
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return None
    if request.path.split("?")[0] != "/":
        return connection.respond(http.HTTPStatus.NOT_FOUND, "Not found\n")
    response = connection.respond(http.HTTPStatus.OK, PAGE)
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    response.headers["Cache-Control"] = "no-store"
    return response


async def serve_page(lab: Lab, *, name: str, handler: Handler | None = None, **options: Any) -> LabServer:
    """Serve :data:`PAGE` at ``/`` from a lab WebSocket server on 127.0.0.1.

    The same server accepts WebSockets too, running ``handler`` (default: hold
    the connection open until the other side closes). Pass ``ssl=`` a server
    context to serve the page over HTTPS and WebSockets over wss://.
    Open the page with :func:`page_url`.
    """
    return await lab.serve(handler or _hold_open, name=name, process_request=_page_or_websocket, **options)


def page_url(server: LabServer, *, host: str = "127.0.0.1") -> str:
    """``http://127.0.0.1:PORT/`` (``https://`` for a server with ``ssl=``); ``host`` may be :data:`TEST_HOST`."""
    scheme = "https" if server.options.get("ssl") else "http"
    return f"{scheme}://{host}:{server.port}/"
