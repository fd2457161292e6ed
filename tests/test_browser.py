"""A real headless Chromium sees the close codes the lab's servers send, and blocks mixed content.

Without a Chromium these tests skip, with the reason, on a laptop; in CI
(``CI=true``) they run anyway and fail: a missing browser must never turn a
build green. The rule lives in :meth:`wslab.runtime.programs.Program.skip_reason`.
"""

from __future__ import annotations

import asyncio
import ssl

import pytest
import trustme

from wslab import Lab, LabError
from wslab.clients.page import Decision, ScriptError, open_page, page_url, serve_page
from wslab.faults.proxy import start_proxy
from wslab.runtime.chromium import TEST_HOST, launch_browser
from wslab.runtime.programs import CHROMIUM, Program
from wslab.runtime.timing import scaled, wait_until

SKIP_REASON = CHROMIUM.skip_reason()
needs_browser = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


async def _closed_on_server(lab: Lab, source: str, since: int, deadline: float = 10.0):
    """The first 'closed' event ``source`` recorded after event number ``since``, within ``deadline`` s (scaled)."""

    def closed() -> list:
        return [e for e in lab.timeline.events[since:] if e.source == source and e.kind == "closed"]

    await wait_until(closed, deadline, f"{source} recording a closed connection")
    return closed()[0]


def test_ci_never_skips_the_browser_tests(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert CHROMIUM.skip_reason() is None
    monkeypatch.setenv("CI", "")
    available, reason = CHROMIUM.availability()
    assert (CHROMIUM.skip_reason() is None) == available
    assert reason


def test_a_missing_browser_says_how_to_get_one(monkeypatch):
    monkeypatch.setattr(Program, "find", lambda self: None)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("WSLAB_CHROMIUM", raising=False)
    available, reason = CHROMIUM.availability()
    assert not available
    assert "apt install chromium" in reason and "playwright install chromium" in reason
    assert CHROMIUM.skip_reason() == reason

    async def launch():
        async with Lab() as lab:
            await launch_browser(lab)

    with pytest.raises(LabError, match="apt install chromium"):
        asyncio.run(launch())


@needs_browser
async def test_the_page_sees_1000_1012_and_1006():
    async def handler(ws):
        if ws.request.path == "/close":
            await ws.close(1000, "done")
        else:
            await ws.wait_closed()

    async with Lab() as lab:
        browser = await launch_browser(lab, timeout=scaled(30))
        pages = await serve_page(lab, name="pages")
        page = await open_page(browser, page_url(pages))
        server = await lab.serve(handler, name="server")
        proxy = await start_proxy(lab, server, name="proxy")

        since = len(lab.timeline)
        i = await page.open(server.url + "/close", timeout=scaled(10))
        event = await page.wait_close(i, timeout=scaled(10))
        assert (event.code, event.reason, event.was_clean) == (1000, "done", True)
        assert (await _closed_on_server(lab, "server", since)).code == 1000

        since = len(lab.timeline)
        i = await page.open(server.url + "/wait", timeout=scaled(10))
        await server.restart()
        event = await page.wait_close(i, timeout=scaled(10))
        assert (event.code, event.reason, event.was_clean) == (1012, "service restart", True)
        assert (await _closed_on_server(lab, "server", since)).code == 1012

        since = len(lab.timeline)
        i = await page.open(proxy.url + "/wait", timeout=scaled(10))
        await proxy.set_fault("reset")
        event = await page.wait_close(i, timeout=scaled(10))
        assert (event.code, event.reason, event.was_clean) == (1006, "", False)
        seen = await _closed_on_server(lab, "server", since)
        assert seen.code == 1006 and seen.data["rcvd"] is None and seen.data["sent"] is None

        # A script may only send 1000 or 3000-4999: the browser throws, the socket stays open.
        i = await page.open(server.url + "/wait", timeout=scaled(10))
        with pytest.raises(ScriptError) as raised:
            await page.close_socket(i, 1011)
        assert raised.value.name == "InvalidAccessError"
        assert await page.ready_state(i) == 1
        assert "browser" in lab.names
    assert "browser" not in lab.names


async def _hold(ws):
    await ws.wait_closed()


@needs_browser
async def test_onclose_asks_the_installed_decider_and_records_its_answer_or_error_per_socket():
    async def handler(ws):
        match ws.request.path:
            case "/1008":
                await ws.close(1008, "not allowed")
            case "/1000":
                await ws.close(1000, "done")
            case _:
                await ws.wait_closed()

    async with Lab() as lab:
        browser = await launch_browser(lab, timeout=scaled(30))
        page = await open_page(browser, page_url(await serve_page(lab, name="pages")))
        server = await lab.serve(handler, name="server")

        # Before a decider is installed, onclose decides nothing.
        i = await page.open(server.url + "/1000", timeout=scaled(10))
        assert (await page.wait_close(i, timeout=scaled(10))).code == 1000
        assert await page.decision(i) is None

        # A script that doesn't run, or defines no function of that name, is refused in one line.
        for source, error in [("function decide(event) {", "SyntaxError"),
                              ("function other(event) {}", "ReferenceError: decide is not defined"),
                              ("const decide = 3;", "TypeError: decide is number, not a function"),
                              ("throw 'no'", "throw: no")]:
            with pytest.raises(ScriptError) as raised:
                await page.install_decider(source)
            assert str(raised.value).startswith(error) and "\n" not in str(raised.value)
        with pytest.raises(LabError, match="not a JavaScript function name"):
            await page.install_decider("", name="de cide")

        # The script runs in its own scope: helpers and constants beside the function are fine.
        await page.install_decider(
            "const STOP = [1008];\n"
            "function decide(event) {\n"
            "  if (event.code === 1000) return undefined;\n"
            "  if (event.code === 1006) throw new RangeError('no close frame');\n"
            "  return STOP.includes(event.code) && event.wasClean ? 'stop' : 'retry';  // a comment last\n"
            "}"
        )
        healthy = await page.open(server.url + "/wait", timeout=scaled(10))
        policy = await page.open(server.url + "/1008", timeout=scaled(10))
        assert (await page.wait_close(policy, timeout=scaled(10))).code == 1008
        assert await page.decision(policy) == Decision(policy, "stop", "string", None)
        normal = await page.open(server.url + "/1000", timeout=scaled(10))
        await page.wait_close(normal, timeout=scaled(10))
        assert str(await page.decision(normal)) == "returned undefined, not a string"
        proxy = await start_proxy(lab, server, name="proxy")
        reset = await page.open(proxy.url + "/wait", timeout=scaled(10))
        await proxy.set_fault("reset")
        assert (await page.wait_close(reset, timeout=scaled(10))).code == 1006
        assert (await page.decision(reset)).error == "RangeError: no close frame"
        # The healthy socket is still open, and nothing was decided for it.
        assert await page.ready_state(healthy) == 1 and await page.decision(healthy) is None


@needs_browser
async def test_the_vanished_server_cells_run_again_and_again():
    # Notebook 03, section 5: open a WebSocket through the proxy, stall that link, see
    # that the page notices nothing; then reset, and onclose fires. A student re-runs
    # the stall cell, or both cells, in any order: each run must find a healthy proxy.
    async with Lab() as lab:
        browser = await launch_browser(lab, timeout=scaled(30))
        page = await open_page(browser, page_url(await serve_page(lab, name="pages")))
        server = await lab.serve(_hold, name="server")
        proxy = await start_proxy(lab, server, name="proxy")

        async def stall_cell() -> int:
            since = len(lab.timeline)
            i = await page.open(proxy.url + "/wait", timeout=scaled(10))
            await proxy.set_fault("stall", conn=proxy.connections[-1])  # this link only: new ones pass
            assert await page.wait_close(i, timeout=scaled(1)) is None
            assert await page.ready_state(i) == 1
            assert [e for e in lab.timeline.events[since:] if e.source == "server" and e.kind == "closed"] == []
            return i

        async def reset_cell(i: int) -> None:
            await proxy.set_fault("reset")
            seen = await page.wait_close(i, timeout=scaled(10))
            assert seen is not None and (seen.code, seen.was_clean) == (1006, False)

        first = await stall_cell()
        second = await stall_cell()  # the stall cell, run twice in a row
        await reset_cell(second)
        assert (await page.wait_close(first, timeout=scaled(10))).code == 1006  # the reset ended both links
        await reset_cell(await stall_cell())  # and both cells once more, after the reset
        assert proxy.fault == "pass"


@needs_browser
async def test_a_page_websocket_through_a_stalled_proxy_fails_in_one_clear_line_and_is_closed():
    # What re-running the vanished-server cell ran into while it stalled the whole proxy:
    # stall is a state, it lasts for new connections too, so the page's new WebSocket
    # never got an answer to its opening handshake.
    async with Lab() as lab:
        browser = await launch_browser(lab, timeout=scaled(30))
        page = await open_page(browser, page_url(await serve_page(lab, name="pages")))
        server = await lab.serve(_hold, name="server")
        proxy = await start_proxy(lab, server, name="proxy")
        await proxy.set_fault("stall")
        with pytest.raises(LabError, match=r"got no answer to its opening handshake .*stalled\? .*until 'pass'"):
            await page.open(proxy.url + "/wait", timeout=scaled(1))
        hung = await page.wait_close(0, timeout=scaled(10))  # the page closed it: nothing left CONNECTING
        assert hung is not None and hung.code == 1006
        await proxy.set_fault("pass")
        i = await page.open(proxy.url + "/wait", timeout=scaled(10))
        assert await page.ready_state(i) == 1


@needs_browser
async def test_an_https_page_may_not_open_ws_but_may_open_wss():
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", TEST_HOST).configure_cert(server_context)

    async def handler(ws):
        await ws.close(1000, "done")

    async with Lab() as lab:
        browser = await launch_browser(lab, timeout=scaled(30))
        plain = await lab.serve(handler, name="plain")
        secure = await serve_page(lab, name="secure", handler=handler, ssl=server_context)
        assert secure.url.startswith("wss://")

        # The browser doesn't trust the lab's CA unless told to for this context.
        with pytest.raises(LabError, match="ERR_CERT_AUTHORITY_INVALID"):
            await open_page(browser, page_url(secure, host=TEST_HOST), name="strict")
        page = await open_page(browser, page_url(secure, host=TEST_HOST), ignore_https_errors=True)

        with pytest.raises(ScriptError) as raised:
            await page.open(f"ws://{TEST_HOST}:{plain.port}/", timeout=scaled(10))
        assert raised.value.name == "SecurityError"
        assert any(m.startswith("Mixed Content:") and "blocked" in m for m in page.console)

        i = await page.open(f"wss://{TEST_HOST}:{secure.port}/", timeout=scaled(10))
        event = await page.wait_close(i, timeout=scaled(10))
        assert (event.code, event.reason, event.was_clean) == (1000, "done", True)

        # Python checks certificates too: trust the CA explicitly.
        with pytest.raises(LabError, match="TLS certificate verification failed"):
            await lab.connect(secure.url, name="python")
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        ws = await lab.connect(secure.url, name="python", ssl=client_context)
        assert (await asyncio.wait_for(ws.wait_closed(), scaled(10))) is None
        assert ws.close_code == 1000


def test_a_wrong_wslab_chromium_is_reported_not_ignored(monkeypatch):
    monkeypatch.setenv("WSLAB_CHROMIUM", "/nonexistent/chromium")
    available, reason = CHROMIUM.availability()
    assert not available and "WSLAB_CHROMIUM" in reason
