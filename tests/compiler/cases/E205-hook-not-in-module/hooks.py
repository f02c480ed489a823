from pprint import pprint as print_order


def is_bigg(order: object) -> bool:
    return True
