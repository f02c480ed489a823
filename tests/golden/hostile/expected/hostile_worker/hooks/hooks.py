"""Hooks whose names shadow Python builtins, as a user's might."""

from typing import Any


def print(value: Any) -> Any:  # noqa: A001
    value.self = value.self * 2
    return value


def id(value: Any) -> str:  # noqa: A001
    return str(value.import_)


def filter(value: Any) -> bool:  # noqa: A001
    return True


async def map(key: str, value: Any) -> None:  # noqa: A001
    return None
