def keep(order: object) -> bool:
    return True
