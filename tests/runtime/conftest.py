"""Runtime tests run `async def` tests themselves (each in a fresh loop, with a time bound), so
they need no asyncio plugin."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

TEST_TIMEOUT = 20.0


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs: dict[str, Any] = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(asyncio.wait_for(fn(**kwargs), TEST_TIMEOUT))
    return True
