"""nbval items of the browser notebook skip without a Chromium on a laptop, and never in CI.

The decision is :func:`wslab.browser.browser_skip_reason`: one copy, shared
with tests/test_browser.py and tests/conftest.py.
"""

from __future__ import annotations

import pytest

from wslab.browser import BROWSER_NOTEBOOKS, browser_skip_reason


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    hits = [item for item in items if any(stem in item.nodeid for stem in BROWSER_NOTEBOOKS)]
    reason = browser_skip_reason() if hits else None
    if reason is None:
        return
    for item in hits:
        item.add_marker(pytest.mark.skip(reason=f"browser notebook: {reason}"))
