"""Record types of windows.sdl, decoded and validated by msgspec."""

import msgspec
from streamc_runtime import Record, Time


class Order(Record, kw_only=True):
    """Record Order of windows.sdl."""

    id: str
    account_id: str
    amount: float
    created_at: Time | None = None
    paid_at: Time | None = None


class AccountMinute(Record, kw_only=True):
    """Record AccountMinute of windows.sdl."""

    account_id: str
    window_start: Time
    window_end: Time
    orders: int
    amount: float


class Rolling(Record, kw_only=True):
    """Record Rolling of windows.sdl."""

    account_id: str
    window_start: Time
    window_end: Time
    orders: int
    largest: float


class Visit(Record, kw_only=True):
    """Record Visit of windows.sdl."""

    account_id: str
    started: Time
    ended: Time
    orders: int
    mean: float
    first_id: str
    last_id: str
    first_paid: Time | None = None


class MinutesState(Record, kw_only=True):
    """The accumulators of table minutes: minutes window tumbling 1m grace 10s emit final late to late_orders { account_id = key, window_start = window.start, window_end = window.end, orders = count(), amount = sum(amount) }"""

    orders: int = 0
    amount: float = 0.0


class RollingState(Record, kw_only=True):
    """The accumulators of table rolling: rolling window hopping 10m every 5m emit updates { account_id = key, window_start = window.start, window_end = window.end, orders = count(), largest = max(amount) }"""

    orders: int = 0
    largest: float | None = None


class VisitsState(Record, kw_only=True):
    """The accumulators of table visits: visits window session 30m grace 1m emit final { account_id = key, started = window.start, ended = window.end, orders = count(), mean = avg(amount), first_id = first(id), last_id = last(id), first_paid = min(paid_at) }"""

    orders: int = 0
    mean_sum: float = 0.0
    mean_count: int = 0
    first_id: str | None = None
    last_id: str | None = None
    first_paid: Time | None = None
