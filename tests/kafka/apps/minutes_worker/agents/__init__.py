"""The agents of the minutes app, one module each; importing them registers them."""

from . import minutes as minutes
