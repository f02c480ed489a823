"""Hooks for hook_calls.sdl: each misbehaves for orders whose id names the misbehaviour, and
each sink records what it was given in SEEN."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, Protocol

P = ParamSpec("P")


class OrderLike(Protocol):
    id: str
    account_id: str
    quantity: int


SEEN: dict[str, list[Any]] = {
    "pair": [],
    "numbered": [],
    "retried": [],
    "decorated": [],
    "plain": [],
}


def reprice(order: OrderLike) -> Any:
    if order.id == "none":
        return None
    if order.id == "dict":
        return {"id": order.id, "account_id": order.account_id, "quantity": order.quantity}
    if order.id == "str":
        return order.id
    if order.id == "bad-field":
        order.quantity = "3"  # type: ignore[assignment]
    if order.id == "exit":
        raise SystemExit(3)
    return order


def account_of(order: OrderLike) -> Any:
    if order.id == "none-key":
        return None
    if order.id == "dict-key":
        return {"a": 1}
    return order.account_id


def quantity_of(order: OrderLike) -> Any:
    if order.id == "float-key":
        return 1.9
    if order.id == "bool-key":
        return True
    return order.quantity


def is_kept(order: OrderLike) -> Any:
    if order.id == "none-kept":
        return None
    return order.quantity > 0


def retry(times: int) -> Callable[[Callable[P, Awaitable[None]]], Callable[P, Awaitable[None]]]:
    """Retries an async function on ConnectionError; the wrapper itself is a plain `def`."""

    def decorate(fn: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Awaitable[None]:
            async def attempts() -> None:
                for attempt in range(times):
                    try:
                        return await fn(*args, **kwargs)
                    except ConnectionError:
                        if attempt == times - 1:
                            raise

            return attempts()

        return wrapper

    return decorate


def record_pair(pair: tuple[str, OrderLike]) -> None:
    key, order = pair
    SEEN["pair"].append((key, order.id))


def record_numbered(pair: tuple[int, OrderLike]) -> None:
    number, order = pair
    SEEN["numbered"].append((number, order.id))


@retry(3)
async def _record(order: OrderLike) -> None:
    await asyncio.sleep(0)
    if order.id == "interrupt":
        raise KeyboardInterrupt
    SEEN["retried"].append(order.id)


def record_retried(order: OrderLike) -> Awaitable[None]:
    """A plain `def` handing back what the retry decorator's wrapper returns: a coroutine."""
    return _record(order)


@retry(3)
async def record_decorated(order: OrderLike) -> None:
    """An `async def` under a decorator: what a call returns is the decorator's business."""
    await asyncio.sleep(0)
    SEEN["decorated"].append(order.id)


def record_plain(order: OrderLike) -> None:
    SEEN["plain"].append(order.id)
