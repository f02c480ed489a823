"""Record types of hook_calls.sdl, decoded and validated by msgspec."""

import msgspec
from streamc_runtime import Record


class Order(Record, kw_only=True):
    """Record Order of hook_calls.sdl."""

    id: str
    account_id: str
    quantity: int
