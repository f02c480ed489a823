"""Record types of p4.sdl, decoded and validated by msgspec."""

from streamc_runtime import Record


class Order(Record, kw_only=True):
    """Record Order of p4.sdl."""

    id: str
    account_id: str
    amount: float
    currency: str


class AccountTotals(Record, kw_only=True):
    """Record AccountTotals of p4.sdl."""

    account_id: str
    orders: int
    amount: float


class TotalsByAccountState(Record, kw_only=True):
    """The accumulators of table totals_by_account (its initial state: the defaults)."""

    orders: int = 0
    amount: float = 0.0
