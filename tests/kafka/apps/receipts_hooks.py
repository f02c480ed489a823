"""Hooks for receipts.sdl: the sink appends each order id to the file named by RECEIPTS_FILE."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable
from typing import ParamSpec, Protocol

P = ParamSpec("P")


class OrderLike(Protocol):
    id: str


def retry(fn: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
    """Three attempts on OSError; the wrapper is a plain `def` returning a coroutine."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Awaitable[None]:
        async def attempts() -> None:
            for attempt in range(3):
                try:
                    return await fn(*args, **kwargs)
                except OSError:
                    if attempt == 2:
                        raise

        return attempts()

    return wrapper


def _write_line(text: str) -> None:
    with open(os.environ["RECEIPTS_FILE"], "a", encoding="utf-8") as out:
        out.write(text + "\n")


@retry
async def _append(order: OrderLike) -> None:
    await asyncio.sleep(0)  # stands in for a call to a receipts service
    _write_line(order.id)


def write_receipt(order: OrderLike) -> Awaitable[None]:
    """The sink: hands back the retried coroutine."""
    return _append(order)
