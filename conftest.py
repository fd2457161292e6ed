"""pytest plumbing for the notebooks, kept out of the students' notebooks/ folder.

A notebook that needs an external program (Chromium, nginx, ...) skips on a
laptop that lacks it, with the install command as the reason; in CI
(``CI=true``) it runs and fails instead. The rule is one function,
:func:`wslab.runtime.programs.notebook_skip_reason`, shared with tests/.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import wslab.faults.netns  # noqa: F401  (registers Java, Tomcat, iptables, unshare)
    import wslab.runtime.chromium  # noqa: F401  (registers the programs the notebooks need)
    import wslab.runtime.nginx  # noqa: F401
    import wslab.runtime.redis  # noqa: F401
    from wslab.runtime.programs import notebook_skip_reason

    for item in items:
        reason = notebook_skip_reason(item.nodeid)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"needs a program: {reason}"))
