"""The agents of hostile.sdl, one module each; importing them registers them."""

from . import import_ as import_
from . import async_ as async_
from . import await_ as await_
