"""The agents of joins.sdl, one module each; importing them registers them."""

from . import slim_orders as slim_orders
from . import enriched as enriched
from . import regional as regional
from . import settled as settled
