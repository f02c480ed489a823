"""Record types of orders.sdl, decoded and validated by msgspec."""

import msgspec
from streamc_runtime import Record, Time


class Customer(Record, kw_only=True):
    """Record Customer of orders.sdl."""

    id: str
    country: str | None = None


class Order(Record, kw_only=True):
    """Record Order of orders.sdl."""

    id: str
    account_id: str
    amount: float
    currency: str = "EUR"
    language: str | None = None
    client: str | None = None
    tags: list[str] = msgspec.field(default_factory=list)
    customer: Customer | None = None


class AccountTotals(Record, kw_only=True):
    """Record AccountTotals of orders.sdl."""

    account_id: str
    orders: int
    amount: float


class AccountMinute(Record, kw_only=True):
    """Record AccountMinute of orders.sdl."""

    account_id: str
    window_start: Time
    window_end: Time
    orders: int
    amount: float


class Account(Record, kw_only=True):
    """Record Account of orders.sdl."""

    account_id: str
    tier: str
    country: str


class EnrichedOrder(Record, kw_only=True):
    """Record EnrichedOrder of orders.sdl."""

    id: str
    account_id: str
    amount: float
    tier: str | None = None


class Payment(Record, kw_only=True):
    """Record Payment of orders.sdl."""

    order_id: str
    amount: float


class PaidOrder(Record, kw_only=True):
    """Record PaidOrder of orders.sdl."""

    id: str
    account_id: str
    amount: float
    paid: float


class Withdrawal(Record, kw_only=True):
    """Record Withdrawal of orders.sdl."""

    account_id: str
    amount: float
    country: str
    atm: bool = False


class TotalsByAccountState(Record, kw_only=True):
    """The accumulators of table totals_by_account: totals_by_account { account_id = key, orders = count(), amount = sum(amount) }"""

    orders: int = 0
    amount: float = 0.0


class MinutesByAccountState(Record, kw_only=True):
    """The accumulators of table minutes_by_account: minutes_by_account window tumbling 1m grace 10s emit final { account_id = key, window_start = window.start, window_end = window.end, orders = count(), amount = sum(amount) }"""

    orders: int = 0
    amount: float = 0.0
