"""Record types of joins.sdl, decoded and validated by msgspec."""

import msgspec
from streamc_runtime import Record


class Customer(Record, kw_only=True):
    """Record Customer of joins.sdl."""

    country: str
    vip: bool = False


class Order(Record, kw_only=True):
    """Record Order of joins.sdl."""

    id: str
    account_id: str
    amount: float
    quantity: int
    customer: Customer | None = None


class Slim(Record, kw_only=True):
    """Record Slim of joins.sdl."""

    id: str
    total: float
    units: float
    country: str | None = None
    channel: str = "web"
    large: bool


class Account(Record, kw_only=True):
    """Record Account of joins.sdl."""

    account_id: str
    tier: str
    country: str


class Enriched(Record, kw_only=True):
    """Record Enriched of joins.sdl."""

    id: str
    amount: float
    tier: str | None = None


class Region(Record, kw_only=True):
    """Record Region of joins.sdl."""

    code: str
    name: str


class Regional(Record, kw_only=True):
    """Record Regional of joins.sdl."""

    id: str
    region: str


class Payment(Record, kw_only=True):
    """Record Payment of joins.sdl."""

    order_id: str
    amount: float


class Settled(Record, kw_only=True):
    """Record Settled of joins.sdl."""

    id: str
    amount: float
    paid: float | None = None
