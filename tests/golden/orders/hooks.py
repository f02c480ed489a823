"""Hooks for samples/orders.sdl: plain, typed, stdlib-only Python.

The record classes and the Event type live in the generated worker package and its runtime,
so the hooks describe what they need with Protocols: any object with those attributes will
do, and the generated `Order` and the runtime's `Event` have them. Processors are generic over
the record type so they give back exactly what they receive.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Protocol, TypeVar


class OrderLike(Protocol):
    account_id: str
    amount: float
    language: str | None
    client: str | None


class WithdrawalLike(Protocol):
    account_id: str
    amount: float
    country: str
    atm: bool


OrderT = TypeVar("OrderT", bound=OrderLike)
WithdrawalT = TypeVar("WithdrawalT", bound=WithdrawalLike)
ValueT_co = TypeVar("ValueT_co", covariant=True)


class MessageLike(Protocol):
    """Where an event came from (the runtime's message has more: timestamp, headers, ...)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


class EventLike(Protocol[ValueT_co]):
    """What `events` hands a sink: decoded key and value, the raw message, and manual ack."""

    @property
    def key(self) -> str: ...
    @property
    def value(self) -> ValueT_co: ...
    @property
    def message(self) -> MessageLike: ...
    async def ack(self) -> None: ...
    async def __aenter__(self) -> object: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


# Where a real shop would ask a service; a dict keeps the sample fast and offline.
_CLIENTS = {"acct-1": "web", "acct-2": "ios"}
_HOME_COUNTRY = "NL"


def add_default_language(order: OrderT) -> OrderT:
    """A processor: orders without a language are in US English (as in Faust's docs)."""
    if not order.language:
        order.language = "US"
    return order


async def add_client_info(order: OrderT) -> OrderT:
    """An async processor: look up which client the account uses."""
    await asyncio.sleep(
        0
    )  # stands in for an HTTP call; yields to the loop, never waits
    order.client = _CLIENTS.get(order.account_id, "unknown")
    return order


def account_of(withdrawal: WithdrawalT) -> str:
    """A key function for group_by."""
    return withdrawal.account_id


def is_suspicious(withdrawal: WithdrawalT) -> bool:
    """A filter: big withdrawals abroad."""
    return withdrawal.amount > 1_000 and withdrawal.country != _HOME_COUNTRY


def print_batch(batch: list[OrderT]) -> None:
    """A sink for `take`'s batches."""
    # `take` cuts batches from the agent's whole stream: one batch mixes partitions, and so
    # accounts, even after `group_by account_id`.
    total = sum(order.amount for order in batch)
    accounts = ", ".join(sorted({order.account_id for order in batch}))
    print(f"batch of {len(batch)} orders ({accounts}): {total:.2f}")


def print_numbered(number: int, withdrawal: WithdrawalT) -> None:
    """A sink after `enumerate 1`: the tuple arrives as two arguments."""
    print(
        f"suspicious withdrawal #{number}: {withdrawal.account_id} {withdrawal.amount:.2f}"
    )


def show_withdrawal(key: str, withdrawal: WithdrawalT) -> None:
    """A sink after `items`: key and value as two arguments."""
    print(f"cash withdrawal on {key}: {withdrawal.amount:.2f} in {withdrawal.country}")


async def handle_refund(event: EventLike[OrderLike]) -> None:
    """A sink after `events`: the raw message is at hand, and we ack by hand."""
    message = event.message
    if event.value.amount <= 0:
        await event.ack()  # nothing to book: ack at once
        return
    async with event:  # acked when the block ends, even if the body raises
        print(
            f"refund {event.key} of {event.value.amount:.2f} "
            f"from {message.topic}[{message.partition}]@{message.offset}"
        )


def log_raw(value: bytes) -> None:
    """A sink for a topic without a value type: the bytes as they came."""
    print(f"raw event: {len(value)} bytes")
