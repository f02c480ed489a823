def is_big(w: object) -> bool:
    return True


def show(n: int, w: object) -> None:
    print(n, w)


def two(a: object) -> object:
    return a
