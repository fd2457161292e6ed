"""pytest plumbing for the notebooks, kept out of the students' notebooks/ folder.

A notebook that needs an external program (Chromium, nginx, ...) skips on a
laptop that lacks it, with the install command as the reason; in CI
(``CI=true``) it runs and fails instead. The rule is one function,
:func:`wslab.runtime.programs.notebook_skip_reason`, shared with tests/.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from wslab.runtime.programs import notebook_skip_reason  # every program is listed there

    for item in items:
        reason = notebook_skip_reason(item.nodeid)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"needs a program: {reason}"))
