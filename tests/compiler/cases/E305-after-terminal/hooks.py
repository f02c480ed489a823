def show(order: object) -> None:
    print(order)
