from pprint import pprint as print_order  # noqa: F401  (the case: imported, not defined)


def is_bigg(order: object) -> bool:
    return True
