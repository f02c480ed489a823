def add_default_language(order: object) -> object:
    return order
