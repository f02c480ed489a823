"""The agents of p4.sdl, one module each; importing them registers them."""

from . import totals as totals
