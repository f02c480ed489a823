from typing import Any


def show(value: Any) -> None:
    print(value)
