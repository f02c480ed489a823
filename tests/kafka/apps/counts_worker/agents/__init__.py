"""The agents of counts.sdl, one module each; importing them registers them."""

from . import totals as totals
