"""Record types of aggregates.sdl, decoded and validated by msgspec."""

import msgspec
from streamc_runtime import Record


class Customer(Record, kw_only=True):
    """Record Customer of aggregates.sdl."""

    id: str
    country: str | None = None


class Order(Record, kw_only=True):
    """Record Order of aggregates.sdl."""

    id: str
    account_id: str
    amount: float
    quantity: int
    tip: float | None = None
    customer: Customer | None = None


class Stats(Record, kw_only=True):
    """Record Stats of aggregates.sdl."""

    account: str
    orders: int
    tipped: int
    units: int
    amount: float
    tips: float
    smallest: float
    largest_tip: float | None = None
    lowest_id: str
    highest_id: str
    mean: float
    mean_tip: float | None = None
    first_id: str
    first_country: str | None = None
    last_country: str | None = None
    longest_id: str
    units_seen: list[int]
    note: str = "kept"


class Count(Record, kw_only=True):
    """Record Count of aggregates.sdl."""

    orders: int


class StatsState(Record, kw_only=True):
    """The accumulators of table stats: stats { account = key, orders = count(), tipped = count(tip), units = sum(quantity), amount = sum(amount), tips = sum(tip), smallest = min(amount), largest_tip = max(tip), lowest_id = min(id), highest_id = max(id), mean = avg(amount * quantity), mean_tip = avg(tip), first_id = first(id), first_country = first(customer.country), last_country = last(customer.country), longest_id = reduce(longer, \"\"), units_seen = reduce(add_units, []) }"""

    orders: int = 0
    tipped: int = 0
    units: int = 0
    amount: float = 0.0
    tips: float = 0.0
    smallest: float | None = None
    largest_tip: float | None = None
    lowest_id: str | None = None
    highest_id: str | None = None
    mean_sum: float = 0.0
    mean_count: int = 0
    mean_tip_sum: float = 0.0
    mean_tip_count: int = 0
    first_id: str | None = None
    first_country: str | None = None
    first_country_seen: bool = False
    last_country: str | None = None
    longest_id: str = ""
    units_seen: list[int] = msgspec.field(default_factory=list)


class CountsState(Record, kw_only=True):
    """The accumulators of table counts: counts { orders = count() }"""

    orders: int = 0
