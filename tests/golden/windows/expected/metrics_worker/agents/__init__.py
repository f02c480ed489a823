"""The agents of windows.sdl, one module each; importing them registers them."""

from . import per_minute as per_minute
from . import rolling as rolling
from . import visits as visits
from . import paid as paid
