"""Codecs: JSON values validated by type, raw bytes, typed keys."""

from __future__ import annotations

import msgspec
import pytest
from rtkit import Order
from streamc_runtime import Record
from streamc_runtime.records import DecodeError, key_codec, value_codec


class Renamed(Record, kw_only=True):
    kind: str = msgspec.field(name="type")
    items: list[int] = msgspec.field(default_factory=list)
    nested: Order | None = None


def test_record_roundtrip_with_defaults_and_renames() -> None:
    codec = value_codec(Renamed)
    data = codec.encode(Renamed(kind="x", nested=Order(account_id="a", amount=1.5)))
    assert data is not None and b'"type":"x"' in data
    assert codec.decode(b'{"type": "y"}') == Renamed(kind="y")


def test_missing_field_error_names_the_field() -> None:
    with pytest.raises(DecodeError, match="amount"):
        value_codec(Order).decode(b'{"account_id": "a"}')


def test_ill_typed_field_error_names_the_field() -> None:
    with pytest.raises(DecodeError, match=r"\$\.amount"):
        value_codec(Order).decode(b'{"account_id": "a", "amount": "lots"}')


def test_malformed_json_and_null_are_errors() -> None:
    with pytest.raises(DecodeError):
        value_codec(Order).decode(b"{nope")
    with pytest.raises(DecodeError):
        value_codec(Order).decode(None)


def test_list_of_records() -> None:
    codec = value_codec(list[Order])
    orders = [Order(account_id="a", amount=1.0), Order(account_id="b", amount=2.0)]
    data = codec.encode(orders)
    assert codec.decode(data) == orders


@pytest.mark.parametrize(
    ("type_", "value", "data"),
    [
        (str, "héllo", b'"h\xc3\xa9llo"'),
        (int, 42, b"42"),
        (float, 1.5, b"1.5"),
        (bool, True, b"true"),
    ],
)
def test_scalar_values_are_json(type_: type, value: object, data: bytes) -> None:
    codec = value_codec(type_)
    assert codec.encode(value) == data
    assert codec.decode(data) == value


def test_bytes_values_pass_through() -> None:
    codec = value_codec(bytes)
    assert codec.decode(b"\xff\x00") == b"\xff\x00"
    assert codec.encode(b"\xff") == b"\xff"
    assert codec.decode(None) is None
    assert value_codec(None).decode(b"x") == b"x"


def test_keys() -> None:
    assert key_codec(str).encode("k1") == b"k1"
    assert key_codec(str).decode(b"k1") == "k1"
    assert key_codec(int).encode(17) == b"17"
    assert key_codec(int).decode(b"17") == 17
    assert key_codec(bytes).decode(b"\xff") == b"\xff"
    assert key_codec(float).encode(1.5) == b"1.5"
    for t in (str, int, bytes, float):
        assert key_codec(t).decode(None) is None
        assert key_codec(t).encode(None) is None
    with pytest.raises(DecodeError):
        key_codec(int).decode(b"x1")
    with pytest.raises(DecodeError):
        key_codec(str).decode(b"\xff")
