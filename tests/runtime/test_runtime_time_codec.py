"""The `time` type in records: `Time`, decoded from RFC 3339 (any offset) or epoch
milliseconds into an aware UTC datetime, encoded RFC 3339 in UTC with milliseconds."""

from __future__ import annotations

import datetime as dt

import pytest
from streamc_runtime import Record, Time
from streamc_runtime.records import DecodeError, key_codec, value_codec


class Stamped(Record, kw_only=True):
    at: Time
    maybe: Time | None = None


codec = value_codec(Stamped)


def test_epoch_milliseconds_and_offsets_decode_to_the_same_utc_instant() -> None:
    a = codec.decode(b'{"at": 1700000000123}').at
    b = codec.decode(b'{"at": "2023-11-14T23:13:20.123+01:00"}').at
    c = codec.decode(b'{"at": "2023-11-14T22:13:20.123Z"}').at
    assert a == b == c
    assert a.tzinfo == dt.UTC and b.tzinfo == dt.UTC
    assert isinstance(a, dt.datetime) and a.ms == 1_700_000_000_123


def test_time_encodes_as_rfc3339_utc_with_milliseconds() -> None:
    value = Stamped(at=Time.parse("2024-05-01T14:00:00.25+02:00"))
    assert codec.encode(value) == b'{"at":"2024-05-01T12:00:00.250Z","maybe":null}'
    assert codec.encode(Stamped(at=Time.from_ms(0))) == (
        b'{"at":"1970-01-01T00:00:00.000Z","maybe":null}'
    )


@pytest.mark.parametrize(
    "raw",
    [b'{"at": "2024-05-01"}', b'{"at": "2024-05-01T12:00:00"}', b'{"at": 1.5}', b'{"at": true}'],
)
def test_a_date_a_time_without_offset_a_float_or_a_bool_is_a_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError, match=r"\$\.at"):
        codec.decode(raw)


def test_a_time_key_decodes_and_encodes_like_a_value() -> None:
    keys = key_codec(Time)
    assert keys.decode(b"1000") == Time.from_ms(1000)
    assert keys.encode(Time.from_ms(1000)) == b'"1970-01-01T00:00:01.000Z"'
