"""Run ``async def`` tests on a fresh event loop, each with a deadline.

A few lines instead of a plugin: every async test here is a plain coroutine,
and a deadline turns a hang (the bug this lab is about) into a failure.
"""

from __future__ import annotations

import asyncio
import inspect

import pytest

from wslab.runtime.timing import scaled

ASYNC_TEST_DEADLINE = 60.0  # seconds (scaled by WSLAB_TIMEOUT_FACTOR); generous on a loaded 2-core machine


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    deadline = pyfuncitem.get_closest_marker("deadline")
    seconds = scaled(deadline.args[0] if deadline else ASYNC_TEST_DEADLINE)

    async def run():
        await asyncio.wait_for(pyfuncitem.obj(**arguments), seconds)

    asyncio.run(run())
    return True


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "deadline(seconds): fail an async test that runs longer than this (scaled)")
