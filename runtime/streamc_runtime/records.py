"""Typed records and the codecs that turn raw message bytes into Python values and back.

Values are JSON, decoded and validated in one pass by msgspec: a missing or ill-typed field is a
decode error whose message names the field (`Object missing required field 'amount'`,
`Expected 'float', got 'str' - at '$.amount'`). `bytes` means raw passthrough. Keys are text for
`str` and `int` (so they stay readable and partition like other Kafka clients' string keys),
raw for `bytes`, JSON for anything else. A `None` key stays `None`.

`Time` is the `time` type of the language: a timezone-aware UTC `datetime`, decoded from an
RFC 3339 string (with an offset or `Z`) or from integer epoch milliseconds, encoded as RFC 3339
in UTC with millisecond precision (`2024-05-01T12:00:00.250Z`).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec

__all__ = ["Codec", "DecodeError", "Record", "Time", "key_codec", "value_codec"]

T = TypeVar("T")


class Record(msgspec.Struct):
    """Base of every generated record class: `class Order(Record, kw_only=True): ...`.

    A plain (mutable) msgspec Struct, so processors may update fields in place, as in Faust.
    """


_UTC = _dt.UTC
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_UTC)


class Time(_dt.datetime):
    """An instant: a timezone-aware UTC `datetime` with millisecond precision.

    Its own type (not `datetime` itself) because msgspec decodes a plain `datetime` by itself,
    and would neither accept epoch milliseconds nor turn an offset into UTC."""

    @classmethod
    def from_ms(cls, ms: int) -> Time:
        """The instant `ms` milliseconds after the epoch."""
        t = _EPOCH + _dt.timedelta(milliseconds=ms)
        return cls(t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond, _UTC)

    @classmethod
    def parse(cls, text: str) -> Time:
        """An RFC 3339 timestamp with an offset or `Z`; ValueError otherwise."""
        t = _dt.datetime.fromisoformat(text)
        if t.tzinfo is None or "T" not in text.upper():
            raise ValueError(f"not an RFC 3339 timestamp with an offset: {text!r}")
        return cls.from_ms(to_ms(t))

    @property
    def ms(self) -> int:
        return to_ms(self)

    def rfc3339(self) -> str:
        t = self.astimezone(_UTC)
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def to_ms(t: _dt.datetime) -> int:
    """Epoch milliseconds of an aware datetime (a naive one is taken as UTC)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=_UTC)
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _dec_hook(type_: Any, obj: Any) -> Any:
    if type_ is Time:
        if isinstance(obj, int) and not isinstance(obj, bool):
            try:
                return Time.from_ms(obj)
            except OverflowError:
                raise ValueError(f"epoch milliseconds {obj} out of range") from None
        if isinstance(obj, str):
            return Time.parse(obj)
        raise ValueError(f"expected an RFC 3339 string or epoch milliseconds, got {obj!r}")
    raise NotImplementedError(f"type {type_!r} is not supported")


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Time):
        return obj.rfc3339()
    raise NotImplementedError(f"objects of type {type(obj).__name__} are not supported")


# msgspec's DecodeError (ValidationError is a subclass) is the error for a bad payload; keys
# decoded by hand raise it too, so callers need catch only this one type.
DecodeError = msgspec.DecodeError


class Codec(Generic[T]):
    """Encode a Python value to message bytes and decode it back, for one declared type.

    `decode` accepts None (a null key or tombstone value); `decode_bytes` is the same for data
    known not to be None, without the extra call layer (the Conductor's hot path), or None when
    the codec is raw passthrough.
    """

    __slots__ = ("decode", "decode_bytes", "encode", "type")

    def __init__(
        self,
        type_: Any,
        encode: Callable[[T | None], bytes | None],
        decode: Callable[[bytes | None], T],
        decode_bytes: Callable[[bytes], T] | None = None,
    ) -> None:
        self.type = type_
        self.encode = encode
        self.decode = decode
        self.decode_bytes = decode_bytes

    def __repr__(self) -> str:
        return f"Codec({self.type!r})"


def _raw_encode(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):  # lenient: a str sent to a bytes topic is its utf-8 text
        return value.encode()
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return msgspec.json.encode(value)


def _raw_decode(data: bytes | None) -> Any:
    return data


def value_codec(type_: Any) -> Codec[Any]:
    """The codec for a topic's value type: `bytes`/`None` raw, everything else JSON."""
    if type_ is None or type_ is bytes:
        return Codec(bytes, _raw_encode, _raw_decode)
    decoder = msgspec.json.Decoder(type_, dec_hook=_dec_hook)
    encode = msgspec.json.Encoder(enc_hook=_enc_hook).encode
    raw_decode = decoder.decode

    def decode(data: bytes | None) -> Any:
        # A tombstone (null value) goes through the decoder as JSON null, so an Optional value
        # type accepts it and a record type rejects it with msgspec's own message.
        return raw_decode(data if data is not None else b"null")

    return Codec(type_, encode, decode, raw_decode)


def _str_key_decode(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"key is not valid utf-8: {exc}") from None


def _str_key_encode(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def _int_key_decode(data: bytes | None) -> int | None:
    if data is None:
        return None
    try:
        return int(data)
    except ValueError:
        raise DecodeError(f"key {data[:40]!r} is not a decimal integer") from None


def _int_key_encode(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    return str(int(value)).encode()


def key_codec(type_: Any) -> Codec[Any]:
    """The codec for a topic's key type: str as utf-8, int as decimal text, bytes raw, else JSON."""
    if type_ is None or type_ is bytes:
        return Codec(bytes, _raw_encode, _raw_decode)
    if type_ is str:
        return Codec(str, _str_key_encode, _str_key_decode, _str_key_decode)
    if type_ is int:
        return Codec(int, _int_key_encode, _int_key_decode, _int_key_decode)
    decoder = msgspec.json.Decoder(type_, dec_hook=_dec_hook)
    encoder = msgspec.json.Encoder(enc_hook=_enc_hook)

    def decode(data: bytes | None) -> Any:
        return None if data is None else decoder.decode(data)

    def encode(value: Any) -> bytes | None:
        return None if value is None else encoder.encode(value)

    return Codec(type_, encode, decode, decoder.decode)
