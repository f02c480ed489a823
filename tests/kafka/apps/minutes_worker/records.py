"""Record types of the minutes app, decoded and validated by msgspec."""

from streamc_runtime import Record, Time


class Order(Record, kw_only=True):
    id: str
    account_id: str
    amount: float
    at: Time


class AccountMinute(Record, kw_only=True):
    account_id: str
    window_start: Time
    window_end: Time
    orders: int


class MinutesByAccountState(Record, kw_only=True):
    """The accumulators of `aggregate minutes_by_account` (agent minutes)."""

    orders: int = 0
