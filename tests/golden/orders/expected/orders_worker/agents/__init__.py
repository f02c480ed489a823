"""The agents of orders.sdl, one module each; importing them registers them."""

from . import totals as totals
from . import report as report
from . import account_totals as account_totals
from . import account_minutes as account_minutes
from . import enriched_orders as enriched_orders
from . import paid_orders as paid_orders
from . import audit as audit
from . import suspicious as suspicious
from . import cash as cash
from . import refund_ledger as refund_ledger
from . import raw as raw
