"""The agents of hook_calls.sdl, one module each; importing them registers them."""

from . import reprice as reprice
from . import by_account as by_account
from . import by_quantity as by_quantity
from . import kept as kept
from . import plain as plain
from . import decorated as decorated
