"""Lean record unpacking for streamc's own aiokafka consumers.

aiokafka unpacks each fetched record into an 11-field `ConsumerRecord` dataclass, one
generator step and one `__next__` call at a time, and every one of them is tracked by the cyclic
garbage collector, which then traverses the megabytes of records a worker holds: together
about half a worker's CPU on a P1/P3 backlog. `lean_consumer_class()` returns an
`AIOKafkaConsumer` whose fetcher instead unpacks a whole record batch at once, in one list
comprehension, into untracked `KafkaRecord`s (the fields the runtime reads, see
`transport.Message`); everything else (positions, control batches, aborted transactions, CRC
checks, offset gaps) keeps aiokafka's rules, and mostly aiokafka's code.

How it is hooked in, and why this way: aiokafka names the classes it builds as module globals
inside its methods (`AIOKafkaConsumer.start` builds a `Fetcher`, `Fetcher._proc_fetch_request`
a `PartitionRecords` and a `FetchResult`, and `fetched_records`/`next_record` test
`type(x) is FetchResult`). That consumer and `LeanFetcher` run those very methods (their code
objects, not copies of their source) with just those names bound to the subclasses here. So
only consumers streamc creates unpack lean records: a user's own `AIOKafkaConsumer` (in a
hook) is untouched, as nothing of aiokafka is patched; and the rest of each method stays
aiokafka's, whatever fixes a newer release brings. `_rebind` refuses, with `LeanFetchError`,
a method that no longer names the class it expects (or whose class is no longer the one
subclassed here), and `lean_consumer_class` checks the constructors' signatures, that no other
method names those classes, and that `take` hands out from a few sample batches just what
aiokafka's own `PartitionRecords` does (`take` copies its rules and reads its attributes): an
aiokafka whose internals moved fails at start, loudly, instead of silently unpacking differently.
"""

from __future__ import annotations

import functools
import inspect
import struct
import types
from collections.abc import Callable, Collection
from typing import Any

import aiokafka  # type: ignore[import-untyped]
import msgspec
from aiokafka import AIOKafkaConsumer
from aiokafka import errors as kerrors
from aiokafka.consumer import fetcher as _fetcher_module  # type: ignore[import-untyped]
from aiokafka.producer.message_accumulator import BatchBuilder  # type: ignore[import-untyped]
from aiokafka.record.default_records import (  # type: ignore[import-untyped]
    DefaultRecordBatch,
    DefaultRecordBatchBuilder,
)
from aiokafka.record.memory_records import MemoryRecords  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

from .transport import TransportError

__all__ = ["KafkaRecord", "LeanFetchError", "lean_consumer_class", "set_fetch_max_wait"]


class LeanFetchError(TransportError):
    """The installed aiokafka's internals are not those the lean unpacking was written for."""


# gc=False: a record holds only str, int, bytes and tuples of them, so it can never be part of
# a reference cycle, and not tracking millions of them spares the cyclic collector.
class KafkaRecord(msgspec.Struct, frozen=True, gc=False):
    """One consumed record: `transport.Message`, plus how its timestamp was set (0: by the
    producer, 1: by the broker on append; None for the oldest message format)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


_PartitionRecords: Any = _fetcher_module.PartitionRecords
_FetchResult: Any = _fetcher_module.FetchResult
_Fetcher: Any = _fetcher_module.Fetcher
_READ_COMMITTED: int = _fetcher_module.READ_COMMITTED

# The constructor parameters aiokafka's code passes (checked by `lean_consumer_class`).
_PARTITION_RECORDS_PARAMS = (
    "self",
    "tp",
    "records",
    "aborted_transactions",
    "fetch_offset",
    "key_deserializer",
    "value_deserializer",
    "check_crcs",
    "isolation_level",
)
_FETCH_RESULT_PARAMS = ("self", "tp", "assignment", "partition_records", "backoff")


class LeanPartitionRecords(_PartitionRecords):  # type: ignore[misc]
    """aiokafka's `PartitionRecords` (the records of one partition from one fetch response),
    handing out `KafkaRecord`s a batch at a time through `take`.

    `next_fetch_offset` follows aiokafka's rules exactly: past the last record handed out, or
    past a whole batch once all of it is handed out (so a batch whose tail was compacted away,
    a control batch or an aborted one is not fetched again)."""

    _records: Any  # aiokafka's MemoryRecords of the fetch response

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        if self._key_deserializer is not None or self._value_deserializer is not None:
            raise LeanFetchError("the lean unpacking hands out raw bytes: no deserializers")
        self._records_iterator = None  # aiokafka's per-record generator, never used
        # Records of the batch a `take` stopped in, and the index of the first not taken.
        self._pending: list[KafkaRecord] = []
        self._pending_at = 0
        self._pending_end = 0  # the batch's `next_offset`
        self.done = False  # all handed out (or a CRC check failed): nothing more to take

    def __next__(self) -> KafkaRecord:
        # What aiokafka's `getone` (so `AIOKafkaConsumer.getone`) uses.
        got = self.take(1)
        if not got:
            raise StopIteration
        return got[0]

    def take(self, max_records: int | None) -> list[KafkaRecord]:
        """Up to `max_records` (None: all) records not taken yet, in offset order."""
        out: list[KafkaRecord] = []
        if self.done:
            return out
        want = -1 if max_records is None else max_records
        pending = self._pending
        if pending:
            out = self._from_pending(pending, self._pending_at, want)
            if len(out) == want:
                self.done = not self._pending and not self._records.has_next()
                return out
        tp = self._tp
        topic = tp.topic
        partition = tp.partition
        records = self._records
        read_committed = self._isolation_level == _READ_COMMITTED
        while records.has_next():
            batch = records.next_batch()
            if self._check_crcs and not batch.validate_crc():
                # As aiokafka: raised before any record of the batch is handed out. What this
                # call took before is lost with the exception, but the consumer's position
                # is not moved past it (aiokafka's `getall` raises before it updates the
                # position), so it is fetched again; this partition's fetch result ends.
                self.done = True
                self._records = _NO_RECORDS
                raise kerrors.CorruptRecordException(f"Invalid CRC - {tp}")
            if read_committed and batch.producer_id is not None:
                self._consume_aborted_up_to(batch.base_offset)
                if batch.is_control_batch and self._contains_abort_marker(batch):
                    self._aborted_producers.discard(batch.producer_id)
                if batch.is_transactional and batch.producer_id in self._aborted_producers:
                    self.next_fetch_offset = batch.next_offset
                    continue
            if batch.is_control_batch:  # skipped whatever the isolation level
                self.next_fetch_offset = batch.next_offset
                continue
            start = self.next_fetch_offset
            source: Any = batch
            if type(batch) is not DefaultRecordBatch or batch.base_offset < start:
                # Records before the fetch offset: the start of a batch the position is in
                # the middle of, or the wrapper of an old compressed message set.
                source = [r for r in batch if r.offset >= start]
            unpacked = [
                KafkaRecord(
                    topic,
                    partition,
                    r.offset,
                    r.timestamp,
                    r.timestamp_type,
                    r.key,
                    r.value,
                    tuple(r.headers),
                )
                for r in source
            ]
            end = batch.next_offset
            if want < 0 or len(out) + len(unpacked) <= want:
                out += unpacked
                self.next_fetch_offset = end
                if len(out) == want:
                    break
            else:
                self._pending = unpacked
                self._pending_end = end
                out += self._from_pending(unpacked, 0, want - len(out))
                self.done = False
                return out
        self.done = not records.has_next()
        return out

    def _from_pending(self, pending: list[KafkaRecord], at: int, want: int) -> list[KafkaRecord]:
        """Up to `want` (-1: all) of the held batch's records from `at` on."""
        end = len(pending) if want < 0 else min(at + want, len(pending))
        got = pending[at:end]
        if end == len(pending):
            self._pending = []
            self._pending_at = 0
            self.next_fetch_offset = self._pending_end
        else:
            self._pending_at = end
            self.next_fetch_offset = got[-1].offset + 1
        return got


class _NoRecords:
    """What a fetch result whose CRC check failed has left: nothing."""

    def has_next(self) -> bool:
        return False


_NO_RECORDS = _NoRecords()


class LeanFetchResult(_FetchResult):  # type: ignore[misc]
    """aiokafka's `FetchResult`, whose `getall` takes the records a batch at a time."""

    _partition_records: LeanPartitionRecords | None

    def getall(self, max_records: int | None = None) -> list[KafkaRecord]:
        # aiokafka's `getall`, less its loop of one `__next__` per record.
        if not self.check_assignment(self._topic_partition) or not self.has_more():
            return []
        records = self._partition_records
        assert records is not None  # `has_more`
        out = records.take(max_records)
        self._update_position()
        if records.done:
            self._partition_records = None
        return out


def _names(code: types.CodeType) -> set[str]:
    """The global and attribute names `code` uses, its nested functions' and comprehensions'
    included (they run with the globals of the function that makes them)."""
    out = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            out |= _names(const)
    return out


def _check_only_rebound(cls: Any, rebound: Collection[str], names: Collection[str]) -> None:
    """Raise `LeanFetchError` if a function of `cls` other than the `rebound` ones uses one of
    `names`: left as aiokafka's, it would meet the lean classes with aiokafka's in mind (a
    `type(x) is FetchResult` would take every lean result for an error)."""
    for klass in cls.__mro__[:-1]:
        for attr, value in vars(klass).items():
            if attr in rebound:
                continue
            for func in (value, *(getattr(value, a, None) for a in ("__func__", "fget", "fset"))):
                code = getattr(func, "__code__", None)
                used = sorted(_names(code).intersection(names)) if code is not None else []
                if used:
                    raise LeanFetchError(
                        f"{klass.__module__}.{klass.__qualname__}.{attr} uses {used[0]}"
                    )


def _self_check_batch(base_offset: int, deltas: Collection[int], producer_id: int = -1) -> bytes:
    """One record batch as a broker sends it, made by aiokafka's own builder."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=int(producer_id >= 0),
        producer_id=producer_id,
        producer_epoch=0 if producer_id >= 0 else -1,
        base_sequence=0 if producer_id >= 0 else -1,
        batch_size=1 << 16,
    )
    for delta in deltas:
        builder.append(
            delta,
            timestamp=1_000 + delta,
            key=None if delta % 2 else b"k%d" % delta,
            value=b"v%d" % delta,
            headers=[("h", b"%d" % delta)] if delta % 3 == 0 else [],
        )
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base_offset)  # the broker's part, outside the CRC
    return bytes(data)


def _check_unpacks_as_aiokafka() -> None:
    """Raise `LeanFetchError` unless `LeanPartitionRecords`, taken a few records at a time,
    hands out what aiokafka's own `PartitionRecords` does, and ends at the same position:
    `take` follows aiokafka 0.14's `_unpack_records` rules and reads its attributes, and an
    aiokafka whose rules or attributes changed must not run with them half-copied. Records
    with offset gaps, headers, no keys, a fetch offset inside a batch, and a
    transaction aborted (skipped under read_committed, handed out under read_uncommitted)."""
    log = b"".join(
        [
            _self_check_batch(0, [0, 1, 2]),
            _self_check_batch(3, [0, 2, 5]),
            _self_check_batch(9, [0, 1], producer_id=7),
            _self_check_batch(11, [0, 1, 2]),
        ]
    )
    tp = TopicPartition("t", 0)
    for isolation in (_READ_COMMITTED, 0):
        for fetch_offset in (0, 4):
            args = ([(7, 9)], fetch_offset, None, None, True, isolation)
            theirs = _PartitionRecords(tp, MemoryRecords(log), *args)
            expected = [
                (r.offset, r.timestamp, r.timestamp_type, r.key, r.value, r.headers) for r in theirs
            ]
            ours = LeanPartitionRecords(tp, MemoryRecords(log), *args)
            got = []
            while not ours.done:
                got += [
                    (r.offset, r.timestamp, r.timestamp_type, r.key, r.value, r.headers)
                    for r in ours.take(2)
                ]
            if got != expected or ours.next_fetch_offset != theirs.next_fetch_offset:
                raise LeanFetchError(
                    "LeanPartitionRecords unpacks otherwise than aiokafka's PartitionRecords"
                )


def _rebind(func: Callable[..., Any], **names: Any) -> Callable[..., Any]:
    """`func` (aiokafka's own code) with the global `names` bound to subclasses of what they
    name in aiokafka. Raises `LeanFetchError` if `func` does not use a name, or if the name is
    no longer the class subclassed, or if `func` needs a closure (which a copy cannot keep)."""
    code = func.__code__
    where = f"{func.__module__}.{func.__qualname__}"
    if func.__closure__ is not None:
        raise LeanFetchError(f"{where} now has a closure")
    glob = dict(func.__globals__)
    for name, cls in names.items():
        if name not in code.co_names:
            raise LeanFetchError(f"{where} no longer uses {name}")
        if glob.get(name) not in cls.__mro__[1:]:
            raise LeanFetchError(f"{where}'s {name} is not what {cls.__name__} extends")
        glob[name] = cls
    out = types.FunctionType(code, glob, func.__name__, func.__defaults__, None)
    out.__kwdefaults__ = func.__kwdefaults__
    out.__qualname__ = func.__qualname__
    out.__doc__ = func.__doc__
    return out


def _check_params(cls: Any, expected: tuple[str, ...]) -> None:
    params = tuple(inspect.signature(cls.__init__).parameters)
    if params != expected:
        raise LeanFetchError(
            f"aiokafka's {cls.__name__}({', '.join(params[1:])}) is not the expected "
            f"{cls.__name__}({', '.join(expected[1:])})"
        )


def check_inlined_append() -> None:
    """`_check_append`, its failure worded for the user (one line, as `lean_consumer_class`)."""
    try:
        _check_append()
    except LeanFetchError as exc:
        raise LeanFetchError(
            f"streamc's Kafka producer does not fit the installed aiokafka "
            f"{getattr(aiokafka, '__version__', '?')}: {exc}. Install the aiokafka version "
            f"streamc_runtime pins."
        ) from None


def _check_append() -> None:
    """Raise `LeanFetchError` unless aiokafka's `BatchBuilder` still works as
    `KafkaTransport._send_many` assumes when it appends to an open batch itself (its C
    builder `_builder`, the next offset `_relative_offset`, the `_closed` flag): the same
    records appended both ways must build the same bytes, and a full batch must refuse."""
    try:
        public, inlined = BatchBuilder(300, 0), BatchBuilder(300, 0)
        refused = False
        for i in range(8):
            key, value, headers = b"k%d" % i, b"v" * 40, [("h", b"%d" % i)]
            added = public.append(timestamp=1000 + i, key=key, value=value, headers=headers)
            if inlined._closed:
                refused = True
            elif inlined._builder.append(inlined._relative_offset, 1000 + i, key, value, headers):
                inlined._relative_offset += 1
            else:
                inlined._closed = True
                refused = True
            if (added is None) != refused:
                raise LeanFetchError("a batch refuses records at another point")
        if not refused or bytes(public._build()) != bytes(inlined._build()):
            raise LeanFetchError("appending to a batch builds other bytes")
    except LeanFetchError:
        raise
    except Exception as exc:  # a renamed attribute, a changed builder signature, ...
        raise LeanFetchError(
            f"appending to aiokafka's BatchBuilder fails ({type(exc).__name__}: {exc})"
        ) from exc


def set_fetch_max_wait(consumer: Any, ms: int) -> None:
    """Change a started lean consumer's `fetch_max_wait_ms` for its next fetches: aiokafka has
    no setter, but reads its fetcher's copy into every FetchRequest it builds (which
    `lean_consumer_class` checks)."""
    consumer._fetcher._fetch_max_wait_ms = ms


@functools.cache
def lean_consumer_class() -> type[Any]:
    """`LeanConsumer`, after checking that the installed aiokafka is one it fits: raises
    `LeanFetchError` (a user-facing message) otherwise."""
    try:
        _check_params(_PartitionRecords, _PARTITION_RECORDS_PARAMS)
        _check_params(_FetchResult, _FETCH_RESULT_PARAMS)
        for cls, attr in (
            (_PartitionRecords, "_consume_aborted_up_to"),
            (_PartitionRecords, "_contains_abort_marker"),
            (_FetchResult, "check_assignment"),
            (_FetchResult, "_update_position"),
            (_FetchResult, "has_more"),
        ):
            if not callable(getattr(cls, attr, None)):
                raise LeanFetchError(f"aiokafka's {cls.__name__} has no {attr}")
        hooked = ("FetchResult", "PartitionRecords")
        _check_only_rebound(
            _Fetcher, ("_proc_fetch_request", "fetched_records", "next_record"), hooked
        )
        _check_only_rebound(AIOKafkaConsumer, ("start",), ("Fetcher",))
        if "_fetch_max_wait_ms" not in _names(_Fetcher._get_actions_per_node.__code__):
            # Where each FetchRequest is built: else `set_fetch_max_wait` would change nothing.
            raise LeanFetchError("aiokafka's fetch requests do not read _fetch_max_wait_ms")
        try:
            _check_unpacks_as_aiokafka()
        except LeanFetchError:
            raise
        except Exception as exc:  # a renamed attribute, a builder that changed, ...
            raise LeanFetchError(
                f"the lean unpacking fails on aiokafka's records ({type(exc).__name__}: {exc})"
            ) from exc

        class LeanFetcher(_Fetcher):  # type: ignore[misc]
            _proc_fetch_request = _rebind(
                _Fetcher._proc_fetch_request,
                PartitionRecords=LeanPartitionRecords,
                FetchResult=LeanFetchResult,
            )
            fetched_records = _rebind(_Fetcher.fetched_records, FetchResult=LeanFetchResult)
            next_record = _rebind(_Fetcher.next_record, FetchResult=LeanFetchResult)

        class LeanConsumer(AIOKafkaConsumer):  # type: ignore[misc]
            start = _rebind(AIOKafkaConsumer.start, Fetcher=LeanFetcher)

    except LeanFetchError as exc:
        raise LeanFetchError(
            f"streamc's Kafka consumer does not fit the installed aiokafka "
            f"{getattr(aiokafka, '__version__', '?')}: {exc}. Install the aiokafka version "
            f"streamc_runtime pins."
        ) from None
    return LeanConsumer
