"""A real headless Chromium, started by the lab and driven by Playwright.

Chromium is found in this order: the ``WSLAB_CHROMIUM`` environment variable,
the Chromium that ``python -m playwright install chromium`` downloaded,
``/usr/bin/chromium`` and ``/usr/bin/chromium-browser`` (Debian and Ubuntu
packages), then the macOS applications. :data:`~wslab.runtime.programs.CHROMIUM`
is its :class:`~wslab.runtime.programs.Program`: it says whether there is one,
and applies the lab's rule for tests: skip on a laptop without a browser, never
skip in CI. The pages the notebooks open live in :mod:`wslab.clients.page`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from .errors import LabError
from .lab import Lab
from .programs import CHROMIUM
from .timeline import EventKind

__all__ = [
    "CHROMIUM",
    "CHROMIUM_FLAGS",
    "TEST_HOST",
    "LabBrowser",
    "launch_browser",
]

# Quiet, fast start on a machine without a network or a desktop.
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
        self.pages = 0  # pages opened so far

    async def new_page(
        self, url: str, *, name: str = "page", ignore_https_errors: bool = False, timeout: float | None = None
    ) -> Any:
        """Open ``url`` in a new browser context; return the Playwright ``Page``.

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
        page = await asyncio.wait_for(context.new_page(), timeout)
        try:
            await asyncio.wait_for(page.goto(url, timeout=timeout * 1000), timeout + 1)
        except (PlaywrightError, asyncio.TimeoutError) as exc:
            await context.close()
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.lab.timeline.record(name, EventKind.LOAD_ERROR, detail=first_line)
            raise LabError(f"the browser could not load {url}: {first_line}") from None
        self.pages += 1
        self.lab.timeline.record(name, EventKind.LOADED, detail=url)
        return page

    async def close(self) -> None:
        """Close the browser and stop Playwright, each within the deadline."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.browser.close(), self.timeout)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.playwright.stop(), self.timeout)
        self.lab.timeline.record(self.name, EventKind.CLOSED)

    def __repr__(self) -> str:
        return f"<LabBrowser {self.name}: headless Chromium {self.version}, {self.pages} pages>"


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
    found = CHROMIUM.require()  # Playwright and a Chromium, or a one-line LabError that says how to get them
    executable = executable or found
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
    await lab.track(name, lab_browser)
    lab.timeline.record(name, EventKind.LAUNCHED, detail=f"Chromium {lab_browser.version}")
    return lab_browser


