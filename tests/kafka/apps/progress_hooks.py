"""The slow agent of progress.sdl: a millisecond of blocking work per order."""

import time


def slowly(order):  # type: ignore[no-untyped-def]
    time.sleep(0.001)
    return order
