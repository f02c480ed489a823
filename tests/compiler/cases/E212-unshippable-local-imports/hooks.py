import string

import broken
import tools


def keep(order: object) -> bool:
    return bool(tools and string and broken)
