def show(key: str, order: object) -> None:
    print(key, order)
