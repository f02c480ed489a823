"""Hooks whose names shadow Python builtins, as a user's might."""

from typing import Any


def print(value: Any) -> Any:
    value.self = value.self * 2
    return value


def id(value: Any) -> str:
    return str(value.import_)


def filter(value: Any) -> bool:
    return True


async def map(key: str, value: Any) -> None:
    return None
