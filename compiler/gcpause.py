"""Building a big tree without the cyclic garbage collector looking at it over and over.

Parsing and checking allocate millions of small objects that live until the end, and none of
them forms a cycle. Each allocation burst makes the collector walk every object seen so far,
which took half the time of checking a 10 MB program. Reference counting still frees
everything as usual; only the search for cycles waits until the stage is over.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
