"""A real headless Chromium whose page logs every ``CloseEvent``, as the seed post advises.

The page runs the seed's handler, recording instead of logging::

    websocket.onclose = function (e) {
        closes.push({socket: i, code: e.code, reason: e.reason, wasClean: e.wasClean});
    };

and Python reads what it recorded::

    browser = await launch_browser(lab)
    pages = await serve_page(lab, name="pages")
    page = await browser.new_page(page_url(pages))
    i = await page.open(server.url)          # new WebSocket(url) in the page
    await server.restart()
    await page.wait_close(i)                 # CloseEvent(code=1012, reason='service restart', was_clean=True)

Chromium is found in this order: the ``WSLAB_CHROMIUM`` environment variable,
the Chromium that ``python -m playwright install chromium`` downloaded,
``/usr/bin/chromium`` and ``/usr/bin/chromium-browser`` (Debian and Ubuntu
packages), then the macOS applications. :func:`browser_available` says whether
there is one; :func:`browser_skip_reason` applies the lab's rule for tests:
skip on a laptop without a browser, never skip in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import http
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from .lab import Handler, Lab, LabError, LabServer

__all__ = [
    "CHROMIUM_FLAGS",
    "TEST_HOST",
    "BROWSER_NOTEBOOKS",
    "PAGE",
    "CloseEvent",
    "ScriptError",
    "LabBrowser",
    "ClosePage",
    "find_chromium",
    "browser_available",
    "browser_skip_reason",
    "launch_browser",
    "serve_page",
    "page_url",
]

# Quiet, fast start on a machine without a network or a desktop (see the lab's field notes).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# A host name the browser resolves to 127.0.0.1. Chromium treats 127.0.0.1 and
# localhost as "potentially trustworthy" and lets an https:// page open ws:// to
# them; to see mixed-content blocking as a real site would, use this name instead.
# ``.test`` is reserved for testing (RFC 2606): it never resolves on the internet.
TEST_HOST = "wslab.test"

# Notebooks that drive a browser: pytest skips them with the others when browser_skip_reason() says so.
BROWSER_NOTEBOOKS = ("03-close-codes-in-the-browser",)

HOW_TO_GET_ONE = (
    "no Chromium found for the browser demos: install one with `apt install chromium` (Debian, Ubuntu) "
    "or `python -m playwright install chromium`, or set WSLAB_CHROMIUM to a Chromium or Chrome executable"
)

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

function openSocket(url) {
  let websocket;
  try {
    websocket = new WebSocket(url);
  } catch (e) {          // e.g. SecurityError: ws:// from an https:// page
    return {error: {name: e.name, message: e.message}};
  }
  const i = window.sockets.push(websocket) - 1;
  websocket.onopen = function () { window.opened.push(i); };
  websocket.onclose = function (e) {
    console.log('WebSocket closed: Code:' + e.code + ' Reason:' + e.reason + ' wasClean:' + e.wasClean);
    window.closes.push({socket: i, code: e.code, reason: e.reason, wasClean: e.wasClean});
  };
  return {socket: i};
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


def _candidates() -> list[str]:
    """Where a Chromium may be, in the order they are tried."""
    found = []
    # What `python -m playwright install chromium` downloaded, newest first.
    if os.environ.get("PLAYWRIGHT_BROWSERS_PATH") not in (None, "", "0"):
        roots = [os.environ["PLAYWRIGHT_BROWSERS_PATH"]]
    else:
        roots = [
            os.path.expanduser("~/.cache/ms-playwright"),
            os.path.expanduser("~/Library/Caches/ms-playwright"),
            os.path.join(os.environ.get("LOCALAPPDATA", ""), "ms-playwright"),
        ]
    patterns = [
        "chromium-*/chrome-linux*/chrome",
        "chromium-*/chrome-mac*/*.app/Contents/MacOS/*",
        "chromium-*/chrome-win*/chrome.exe",
    ]
    for root in roots:
        for pattern in patterns:
            found += sorted(glob.glob(os.path.join(root, pattern)), reverse=True)
    found += [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/Applications/Chromium.app/Contents/MacOS/Chromium",
        "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
    ]
    found += [path for cmd in ("chromium", "chromium-browser") if (path := shutil.which(cmd))]
    return found


def find_chromium() -> str | None:
    """The first Chromium executable found (see the module's docstring for the order), or None.

    When ``WSLAB_CHROMIUM`` is set, it is the only candidate.
    """
    env = os.environ.get("WSLAB_CHROMIUM")
    for path in [env] if env else _candidates():
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def browser_available() -> tuple[bool, str]:
    """Whether the browser demos can run here, and why (or why not) in one line."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return False, "the playwright package is missing: pip install -e '.[test]' (or pip install playwright)"
    path = find_chromium()
    if path is None and os.environ.get("WSLAB_CHROMIUM"):
        return False, f"WSLAB_CHROMIUM={os.environ['WSLAB_CHROMIUM']} is not an executable file: fix it or unset it"
    if path is None:
        return False, HOW_TO_GET_ONE
    return True, f"Chromium found at {path}"


def browser_skip_reason() -> str | None:
    """Why browser tests should skip here, or None if they must run.

    On a laptop without a browser they skip with the reason. In CI
    (``CI=true``) they never skip: a missing browser must fail the build.
    """
    available, reason = browser_available()
    if available or os.environ.get("CI", "").lower() == "true":
        return None
    return reason


@dataclass(frozen=True)
class CloseEvent:
    """What the page's ``onclose`` handler received (the browser's ``CloseEvent``)."""

    socket: int
    code: int
    reason: str
    was_clean: bool

    def __str__(self) -> str:
        return f"code={self.code} reason={self.reason!r} wasClean={str(self.was_clean).lower()}"


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
        page.on("console", self._on_console)

    @property
    def timeline(self):
        return self.browser.lab.timeline

    def _on_console(self, message: Any) -> None:
        # Called by Playwright from the event loop: record, never print.
        self.console.append(message.text)
        self.timeline.record(self.name, "console", detail=f"{message.type}: {message.text}")

    async def open(self, url: str, *, timeout: float = 10.0) -> int:
        """Run ``new WebSocket(url)`` in the page; wait until it opens or closes. Returns its index.

        Raises:
            ScriptError: the browser refused to create it (the exception it threw).
            LabError: it neither opened nor closed within ``timeout`` seconds.
        """
        result = await self._evaluate("url => openSocket(url)", url)
        if "error" in result:
            exc = ScriptError(result["error"]["name"], result["error"]["message"])
            self.timeline.record(self.name, "script-error", detail=str(exc))
            raise exc
        i = result["socket"]
        done = await self._wait(
            "i => window.opened.includes(i) || window.closes.some(c => c.socket === i)", i, timeout
        )
        if not done:
            raise LabError(f"the page's WebSocket to {url} neither opened nor closed within {timeout} s")
        if await self._evaluate("i => window.opened.includes(i)", i):
            self.timeline.record(self.name, "open", conn=f"s{i}", detail=url)
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
            self.timeline.record(self.name, "onclose", conn=f"s{socket}", code=event.code, detail=str(event))
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
            self.timeline.record(self.name, "script-error", conn=f"s{socket}", detail=str(exc))
            raise exc

    async def ready_state(self, socket: int) -> int:
        """``ws.readyState``: 0 CONNECTING, 1 OPEN, 2 CLOSING, 3 CLOSED."""
        return await self._evaluate("i => window.sockets[i].readyState", socket)

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


class LabBrowser:
    """A headless Chromium driven by Playwright. ``lab.close()`` closes it.

    Attributes:
        executable: The Chromium that runs.
        version: Its version, as the browser reports it.
        launch_s: Seconds from starting Playwright to a browser ready for pages.
        timeout: The deadline for each browser operation, in seconds.
    """

    def __init__(self, lab: Lab, name: str, playwright: Any, browser: Any, executable: str, timeout: float) -> None:
        self.lab = lab
        self.name = name
        self.playwright = playwright
        self.browser = browser
        self.executable = executable
        self.version = browser.version
        self.timeout = timeout
        self.launch_s = 0.0
        self.pages: list[ClosePage] = []

    async def new_page(
        self, url: str, *, name: str = "page", ignore_https_errors: bool = False, timeout: float | None = None
    ) -> ClosePage:
        """Open ``url`` (a page from :func:`serve_page`) in a new browser context.

        Each page gets its own context: cookies, cache and certificate
        decisions are not shared. ``ignore_https_errors=True`` lets this one
        context accept a certificate from a CA the browser doesn't trust.

        Raises:
            LabError: the page did not load (the browser's one-line error, e.g. net::ERR_CERT_AUTHORITY_INVALID).
        """
        from playwright.async_api import Error as PlaywrightError

        timeout = timeout or self.timeout
        context = await asyncio.wait_for(
            self.browser.new_context(ignore_https_errors=ignore_https_errors), timeout
        )
        page = ClosePage(self, await asyncio.wait_for(context.new_page(), timeout), name)
        try:
            await asyncio.wait_for(page.page.goto(url, timeout=timeout * 1000), timeout + 1)
        except (PlaywrightError, asyncio.TimeoutError) as exc:
            await context.close()
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.lab.timeline.record(name, "load-error", detail=first_line)
            raise LabError(f"the browser could not load {url}: {first_line}") from None
        self.pages.append(page)
        self.lab.timeline.record(name, "loaded", detail=url)
        return page

    async def close(self) -> None:
        """Close the browser and stop Playwright, each within the deadline."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.browser.close(), self.timeout)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.playwright.stop(), self.timeout)
        self.lab.timeline.record(self.name, "closed")

    def __repr__(self) -> str:
        return f"<LabBrowser {self.name}: headless Chromium {self.version}, {len(self.pages)} pages>"


async def launch_browser(
    lab: Lab, *, name: str = "browser", executable: str | None = None, timeout: float = 30.0
) -> LabBrowser:
    """Launch a headless Chromium with Playwright, tracked by ``lab`` under ``name``.

    Playwright gives the browser a fresh, empty profile in a temporary
    directory and deletes it on close. The browser resolves :data:`TEST_HOST`
    to 127.0.0.1.

    Raises:
        LabError: no Chromium (saying how to get one), or it did not start within ``timeout``.
    """
    await lab.close(name)
    ok, reason = browser_available()
    if not ok:
        raise LabError(reason)
    executable = executable or find_chromium()
    assert executable is not None
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import async_playwright

    started = time.monotonic()
    playwright = await asyncio.wait_for(async_playwright().start(), timeout)
    try:
        browser = await asyncio.wait_for(
            playwright.chromium.launch(
                executable_path=executable,
                headless=True,
                args=[*CHROMIUM_FLAGS, f"--host-resolver-rules=MAP {TEST_HOST} 127.0.0.1"],
                timeout=timeout * 1000,
            ),
            timeout + 1,
        )
    except (PlaywrightError, asyncio.TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(playwright.stop(), timeout)
        first_line = str(exc).splitlines()[0] if str(exc) else f"no answer within {timeout} s"
        raise LabError(f"Chromium at {executable} did not start: {first_line}") from None
    lab_browser = LabBrowser(lab, name, playwright, browser, executable, timeout)
    lab_browser.launch_s = time.monotonic() - started
    lab.track(name, lab_browser)
    lab.timeline.record(name, "launched", detail=f"Chromium {lab_browser.version}")
    return lab_browser


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
