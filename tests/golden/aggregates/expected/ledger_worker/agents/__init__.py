"""The agents of aggregates.sdl, one module each; importing them registers them."""

from . import stats as stats
from . import counts as counts
