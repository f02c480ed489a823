"""Record types of counts.sdl, decoded and validated by msgspec."""

from streamc_runtime import Record


class Order(Record, kw_only=True):
    """Record Order of counts.sdl."""

    id: str
    account_id: str
    amount: float


class AccountTotals(Record, kw_only=True):
    """Record AccountTotals of counts.sdl."""

    account_id: str
    orders: int
    amount: float


class TotalsByAccountState(Record, kw_only=True):
    """The accumulators of `aggregate totals_by_account` (agent totals)."""

    orders: int = 0
    amount: float = 0.0
