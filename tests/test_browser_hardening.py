"""In a real Chromium: a page on another origin hijacks a WebSocket with the victim's cookie, until an
Origin allow-list refuses it; and a message over max_size closes the page's socket with 1009.

Skipped on a laptop without Chromium (with the install command); run, never skipped, in CI.
"""

from __future__ import annotations

import pytest

from wslab import Lab
from wslab.clients.page import open_page, page_url, serve_page
from wslab.runtime.chromium import TEST_HOST, launch_browser
from wslab.runtime.programs import CHROMIUM
from wslab.runtime.timing import scaled, wait_until
from wslab.servers import FixedServer, Gate, start_app
from wslab.studies.hijack import hijack

SKIP_REASON = CHROMIUM.skip_reason()
needs_browser = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


@needs_browser
@pytest.mark.deadline(120)
async def test_a_page_on_another_origin_reads_the_victims_feed_until_an_allow_list_refuses_it():
    async with Lab() as lab:
        browser = await launch_browser(lab, timeout=scaled(30))
        attempts = await hijack(lab, browser)
    naive = [a for a in attempts if not a.allow_list]
    guarded = [a for a in attempts if a.allow_list]
    assert len(naive) == len(guarded) == 3  # the app's page, another port, another site
    # Without an allow-list: the app's page and the page on another port both get alice's data.
    same_site = [a for a in naive if a.cookie_sent]
    assert len(same_site) == 2 and all(a.status == 101 and a.messages >= 1 for a in same_site)
    assert all(a.first is not None and a.first.startswith("alice's account") for a in same_site)
    # The other *site* (wslab.test): Chromium's default SameSite=Lax keeps the cookie home; the feed says 1008.
    other_site = next(a for a in naive if TEST_HOST in a.page)
    assert other_site.cookie_sent is False and other_site.code == 1008 and other_site.messages == 0
    # With the allow-list: the app's own page still gets in; every other origin gets 403...
    own = [a for a in guarded if a.status == 101]
    refused = [a for a in guarded if a.status != 101]
    assert len(own) == 1 and own[0].messages >= 1
    assert len(refused) == 2 and all(a.status == 403 for a in refused)
    # ... and all the page's script learns is onerror and a 1006, never the status.
    for a in refused:
        assert (a.opened, a.messages, a.onerror, a.code, a.reason, a.was_clean) == (False, 0, True, 1006, "", False)
        assert "403" in a.console  # only DevTools' console says why


@needs_browser
async def test_a_message_over_max_size_closes_the_pages_socket_with_1009():
    async with Lab() as lab:
        browser = await launch_browser(lab, timeout=scaled(30))
        page = await open_page(browser, page_url(await serve_page(lab, name="pages")))
        app = FixedServer(lab.timeline, keepalive=False, gate=Gate(max_size=1024))
        server = await start_app(lab, app)
        i = await page.open(server.url, timeout=scaled(10))
        healthy = await page.open(server.url, timeout=scaled(10))
        await page.send(i, "x" * 1025)
        event = await page.wait_close(i, timeout=scaled(10))
        assert event is not None and (event.code, event.was_clean) == (1009, True)
        assert "exceeds limit of 1024 bytes" in event.reason
        await app.broadcast("still here")
        await wait_until(lambda: page.messages(healthy), 5.0, "the other socket receiving")
        assert await page.ready_state(healthy) == 1
        assert [e.data["sent"] for e in lab.timeline.select(source="fixed", kind="closed")] == [1009]
