"""Calling user hooks as the `.sdl` declares them.

Two things the declaration promises and Python does not enforce:

- A hook is awaited when what it returns is awaitable, whatever its `def` says: a plain `def`
  may hand back a coroutine (a retry decorator wrapping an `async def` with
  `functools.wraps`), and an element whose work was never awaited must not be acked.
- What a hook returns has the declared type. A processor declared `-> Order` that returns
  `None`, a dict or an `Order` holding a string in an `int` field, or a key function declared
  `-> str` that returns `None`, would otherwise be written to a topic (or partition a
  `group_by`) as if it were right. `result_check(type, hook)` builds, once per hook, the check
  the stream operations run on every result; a mismatch dead-letters the element with a
  `HookResultError`, whose hook and mismatch go into the dead letter's headers.
"""

from __future__ import annotations

import datetime
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any, ParamSpec

import msgspec

from .records import Time, _dec_hook, _enc_hook, to_ms

__all__ = ["HookResultError", "result_check", "sink"]

P = ParamSpec("P")


async def sink(fn: Callable[P, object], /, *args: P.args, **kwargs: P.kwargs) -> None:
    """Call the sink `fn` and await what it returns if that is awaitable.

    Generated code calls a sink directly only when the hook's source proves the shape of the
    call (an undecorated `async def`, awaited; an undecorated `def` returning nothing); every
    other sink goes through here."""
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        await result


class HookResultError(TypeError):
    """A hook returned something that is not of its declared type."""

    def __init__(self, hook: str, expected: str, value: object, detail: str = "") -> None:
        got = "None" if value is None else type(value).__qualname__
        message = f"hook {hook!r} returned {got}, declared {expected}"
        super().__init__(f"{message}: {detail}" if detail else message)
        self.hook = hook
        self.expected = expected


def type_name(type_: Any) -> str:
    """`Order`, `list[Order]`, `str | None`: a declared type as the generated code spells it."""
    if isinstance(type_, type) and not typing.get_args(type_):
        return type_.__qualname__
    origin = typing.get_origin(type_)
    args = typing.get_args(type_)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else type_name(a) for a in args)
    if origin is not None:
        return f"{type_name(origin)}[{', '.join(type_name(a) for a in args)}]"
    return repr(type_)


def _shape(type_: Any) -> Callable[[Any], bool]:
    """Whether a value has the declared type down to record instances: the exact record class
    (a dict with the right fields is not an `Order`), lists, tuples, optionals, and scalars
    (`bool` is not an `int`, `1.9` is not an `int`; an `int` is a fine `float`). Record fields
    are left to msgspec (`_fields`)."""
    if type_ is float:
        return lambda v: type(v) is float or type(v) is int
    if type_ is Time:
        return _is_instant
    if isinstance(type_, type) and not typing.get_args(type_):
        return lambda v: type(v) is type_
    origin = typing.get_origin(type_)
    args = typing.get_args(type_)
    if origin in (typing.Union, types.UnionType):
        inner = [_shape(a) for a in args if a is not type(None)]
        optional = len(inner) < len(args)
        return lambda v: (optional and v is None) or any(check(v) for check in inner)
    if origin is list:
        item = _shape(args[0])
        return lambda v: type(v) is list and all(item(x) for x in v)
    if origin is tuple:  # `(int, Order)`, what a processor after `enumerate`/`items` may give
        items = [_shape(a) for a in args]
        n = len(items)
        return lambda v: (
            type(v) is tuple and len(v) == n and all(c(x) for c, x in zip(items, v, strict=True))
        )
    raise TypeError(f"cannot check results against {type_!r}")


def _is_instant(value: Any) -> bool:
    """A `time`: any timezone-aware datetime (a hook may well build one with `datetime.now(
    UTC)`); the codec writes it as the instant it is. A naive one names no instant."""
    return isinstance(value, datetime.datetime) and value.utcoffset() is not None


def _has_record(type_: Any) -> bool:
    if isinstance(type_, type) and issubclass(type_, msgspec.Struct):
        return True
    return any(_has_record(a) for a in typing.get_args(type_))


def result_check(type_: Any, hook: str) -> Callable[[Any], Any]:
    """The check of `hook`'s results against its declared `type_`: it returns the result (an
    `int` declared `float` becomes a `float`, so equal keys encode alike) or raises
    `HookResultError`.

    Scalars cost one type comparison. A record costs a msgspec round trip of its fields
    (`to_builtins`, then `convert` against the class, both in C): a record built by user code
    is never validated by msgspec itself, and a string in an `int` field would otherwise
    reach the topic."""
    expected = type_name(type_)
    if type_ in (str, int, bool, bytes):

        def check_scalar(value: Any) -> Any:
            if type(value) is type_:
                return value
            raise HookResultError(hook, expected, value)

        return check_scalar
    if type_ is float:

        def check_float(value: Any) -> Any:
            kind = type(value)
            if kind is float:
                return value
            if kind is int:
                return float(value)
            raise HookResultError(hook, expected, value)

        return check_float
    if type_ is Time:

        def check_time(value: Any) -> Any:
            if type(value) is Time:
                return value
            if _is_instant(value):
                return Time.from_ms(to_ms(value))  # as the codec would read it back
            raise HookResultError(hook, expected, value)

        return check_time
    shape = _shape(type_)
    if not _has_record(type_):

        def check_shape(value: Any) -> Any:
            if shape(value):
                return value
            raise HookResultError(hook, expected, value)

        return check_shape
    to_builtins, convert = msgspec.to_builtins, msgspec.convert
    record = type_ if isinstance(type_, type) else None  # the common case, tested inline
    # Records of plain fields are checked field by field in Python (a few type tests); the
    # msgspec round trip stays for the rest, and to word what a failing record got wrong.
    fast = _fields_check(record) if record is not None else None

    def check_record(value: Any) -> Any:
        if type(value) is not record and (record is not None or not shape(value)):
            raise HookResultError(hook, expected, value)
        if fast is not None and fast(value):
            return value
        try:
            # The codec's hooks: a `time` field holds a `Time` (or another aware datetime).
            convert(to_builtins(value, enc_hook=_enc_hook), type_, dec_hook=_dec_hook)
        except (msgspec.ValidationError, TypeError) as exc:
            raise HookResultError(hook, expected, value, str(exc)) from None
        return value

    return check_record


_PLAIN = {str: "str", int: "int", bool: "bool", bytes: "bytes"}


def _fields_check(record: type) -> Callable[[Any], bool] | None:
    """A predicate that is true when every field of a `record` instance holds a value of its
    declared type, written as one Python expression of type tests; None when a field's type
    is not one it can test exactly (then the msgspec round trip does it all)."""
    if not issubclass(record, msgspec.Struct):
        return None
    tests: list[str] = []
    for info in msgspec.structs.fields(record):
        test = _value_test(info.type, f"v.{info.name}", 0)
        if test is None:
            return None
        tests.append(test)
    source = "lambda v: " + (" and ".join(tests) if tests else "True")
    # Field names are Python identifiers (msgspec attributes), types are named below.
    check: Callable[[Any], bool] = eval(
        source, {"str": str, "int": int, "bool": bool, "bytes": bytes, "_NUM": (float, int)}
    )
    return check


def _value_test(type_: Any, x: str, depth: int) -> str | None:
    if type_ in _PLAIN:
        return f"type({x}) is {_PLAIN[type_]}"
    if type_ is float:
        return f"type({x}) in _NUM"  # msgspec takes an int for a float, as the codec does
    args = typing.get_args(type_)
    origin = typing.get_origin(type_)
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = _value_test(next(a for a in args if a is not type(None)), x, depth)
        return None if inner is None else f"({x} is None or {inner})"
    if origin is list and len(args) == 1 and depth < 2:
        item = f"_i{depth}"
        inner = _value_test(args[0], item, depth + 1)
        if inner is None:
            return None
        return f"(type({x}) is list and all({inner} for {item} in {x}))"
    return None
