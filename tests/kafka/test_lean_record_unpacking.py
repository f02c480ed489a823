"""The Kafka transport's lean record unpacking (`streamc_runtime.kafka_records`), over real
record batches built with aiokafka's own builders: no broker needed.

Each case is checked against exact expected records and positions, and against what aiokafka's
own `PartitionRecords` makes of the same bytes (same fields, same `next_fetch_offset`).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from typing import Any

import aiokafka
import aiokafka.consumer.consumer as aiokafka_consumer
import aiokafka.consumer.fetcher as aiokafka_fetcher
import pytest
from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from aiokafka.consumer.subscription_state import (  # type: ignore[import-untyped]
    SubscriptionState,
)
from aiokafka.errors import CorruptRecordException  # type: ignore[import-untyped]
from aiokafka.record.default_records import (  # type: ignore[import-untyped]
    DefaultRecordBatchBuilder,
)
from aiokafka.record.memory_records import MemoryRecords  # type: ignore[import-untyped]
from aiokafka.record.util import calc_crc32c  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]
from streamc_runtime import kafka, kafka_records
from streamc_runtime.kafka import KafkaTransport
from streamc_runtime.kafka_records import (
    KafkaRecord,
    LeanFetchError,
    LeanFetchResult,
    LeanPartitionRecords,
    lean_consumer_class,
)
from streamc_runtime.transport import TransportError

TP0 = TopicPartition("orders", 3)
READ_UNCOMMITTED = aiokafka_fetcher.READ_UNCOMMITTED
READ_COMMITTED = aiokafka_fetcher.READ_COMMITTED
_CONTROL = 0x20
_TRANSACTIONAL = 0x10
TS = 1_700_000_000_000

Rec = tuple[int, bytes | None, bytes | None, list[tuple[str, bytes]]]  # offset delta, key, ...


def batch(
    base_offset: int,
    records: Sequence[Rec],
    *,
    producer_id: int = -1,
    transactional: bool = False,
    control: bool = False,
    last_offset_delta: int | None = None,
    log_append_time: bool = False,
) -> bytes:
    """One v2 record batch as a broker returns it: aiokafka builds it, then the broker's part
    (base offset; a compacted tail's last offset delta; the control flag) is written in."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=int(transactional),
        producer_id=producer_id,
        producer_epoch=0 if producer_id >= 0 else -1,
        base_sequence=0 if producer_id >= 0 else -1,
        batch_size=1 << 20,
    )
    for delta, key, value, headers in records:
        builder.append(delta, timestamp=TS + delta, key=key, value=value, headers=headers)
    buf = bytearray(builder.build())
    struct.pack_into(">q", buf, 0, base_offset)
    attributes = struct.unpack_from(">h", buf, 21)[0]
    if control:
        attributes |= _CONTROL
    if log_append_time:
        attributes |= 0x08
    struct.pack_into(">h", buf, 21, attributes)
    if last_offset_delta is not None:
        struct.pack_into(">i", buf, 23, last_offset_delta)
    struct.pack_into(">I", buf, 17, calc_crc32c(bytes(buf[21:])))  # CRC covers from attributes
    return bytes(buf)


def marker(base_offset: int, producer_id: int, *, abort: bool) -> bytes:
    """A transaction's end marker: a control batch of one record whose key says commit/abort."""
    key = struct.pack(">hh", 0, 0 if abort else 1)
    return batch(
        base_offset,
        [(0, key, struct.pack(">hi", 0, 0), [])],
        producer_id=producer_id,
        transactional=True,
        control=True,
    )


def lean(
    data: bytes,
    fetch_offset: int,
    *,
    aborted: list[tuple[int, int]] | None = None,
    isolation: int = READ_UNCOMMITTED,
    check_crcs: bool = True,
) -> LeanPartitionRecords:
    return LeanPartitionRecords(
        TP0, MemoryRecords(data), aborted, fetch_offset, None, None, check_crcs, isolation
    )


def aiokafkas(
    data: bytes, fetch_offset: int, *, aborted: Any = None, isolation: int = READ_UNCOMMITTED
) -> tuple[list[tuple[Any, ...]], int]:
    """What aiokafka's own unpacking makes of `data`: the records' fields, and where it ends."""
    records = aiokafka_fetcher.PartitionRecords(
        TP0, MemoryRecords(data), aborted, fetch_offset, None, None, True, isolation
    )
    fields = [
        (r.topic, r.partition, r.offset, r.timestamp, r.timestamp_type, r.key, r.value, r.headers)
        for r in records
    ]
    return fields, records.next_fetch_offset


def fields(records: Sequence[KafkaRecord]) -> list[tuple[Any, ...]]:
    return [
        (r.topic, r.partition, r.offset, r.timestamp, r.timestamp_type, r.key, r.value, r.headers)
        for r in records
    ]


def row(
    base: int, offset: int, key: bytes | None, value: bytes | None, headers: Any = ()
) -> tuple[Any, ...]:
    """A record as unpacked: its timestamp is `batch`'s, the base plus its offset delta."""
    return ("orders", 3, offset, TS + offset - base, 0, key, value, tuple(headers))


# Offsets 0-2; a compacted batch 10-19 holding only 10, 13 and 15 (tail gone); a committed
# transaction of producer 8 (20-21, marker 22); an aborted one of producer 7 (23-24, marker 25);
# a last plain batch 30-31 with broker-set timestamps.
COMPACTED: list[Rec] = [(0, b"a", b"10", []), (3, b"b", b"13", []), (5, b"c", b"15", [])]
LOG = b"".join(
    [
        batch(
            0,
            [
                (0, None, b"v0", [("trace", b"abc"), ("n", b"1")]),
                (1, b"k1", None, []),  # a tombstone
                (2, None, None, [("dup", b"1"), ("dup", b"2")]),
            ],
        ),
        batch(10, COMPACTED, last_offset_delta=9),
        batch(20, [(0, b"t", b"20", []), (1, b"t", b"21", [])], producer_id=8, transactional=True),
        marker(22, 8, abort=False),
        batch(23, [(0, b"x", b"23", []), (1, b"x", b"24", [])], producer_id=7, transactional=True),
        marker(25, 7, abort=True),
        batch(30, [(0, b"z", b"30", []), (1, b"z", b"31", [])], log_append_time=True),
    ]
)
ABORTED = [(7, 23)]
COMMON = [
    row(0, 0, None, b"v0", [("trace", b"abc"), ("n", b"1")]),
    row(0, 1, b"k1", None),
    row(0, 2, None, None, [("dup", b"1"), ("dup", b"2")]),
    row(10, 10, b"a", b"10"),
    row(10, 13, b"b", b"13"),
    row(10, 15, b"c", b"15"),
    row(20, 20, b"t", b"20"),
    row(20, 21, b"t", b"21"),
]
ABORTED_ROWS = [row(23, 23, b"x", b"23"), row(23, 24, b"x", b"24")]
# Log-append time: the batch's max timestamp, type 1, for every record of the batch.
LAST = [
    ("orders", 3, 30, TS + 1, 1, b"z", b"30", ()),
    ("orders", 3, 31, TS + 1, 1, b"z", b"31", ()),
]


def test_all_records_with_their_exact_fields_and_the_control_batches_skipped() -> None:
    records = lean(LOG, 0)
    got = records.take(None)
    assert all(type(r) is KafkaRecord for r in got)
    assert fields(got) == COMMON + ABORTED_ROWS + LAST
    assert records.next_fetch_offset == 32
    assert records.done
    assert records.take(None) == []
    assert (fields(got), 32) == aiokafkas(LOG, 0)


def test_read_committed_skips_the_aborted_transaction_as_aiokafka_does() -> None:
    records = lean(LOG, 0, aborted=list(ABORTED), isolation=READ_COMMITTED)
    got = records.take(None)
    assert fields(got) == COMMON + LAST
    assert records.next_fetch_offset == 32
    assert (fields(got), 32) == aiokafkas(LOG, 0, aborted=list(ABORTED), isolation=READ_COMMITTED)


def test_a_compacted_tail_moves_the_position_past_the_whole_batch() -> None:
    data = batch(10, [(0, b"a", b"10", []), (3, b"b", b"13", [])], last_offset_delta=9)
    records = lean(data, 10)
    assert [r.offset for r in records.take(None)] == [10, 13]
    assert records.next_fetch_offset == 20
    assert aiokafkas(data, 10)[1] == 20


def test_records_before_the_fetch_offset_in_its_batch_are_skipped() -> None:
    # The broker answers with the whole batch the fetch offset is in.
    records = lean(LOG, 1)
    got = records.take(None)
    assert fields(got) == COMMON[1:] + ABORTED_ROWS + LAST
    assert (fields(got), 32) == aiokafkas(LOG, 1)
    from_ten = LOG[LOG.index(batch(10, COMPACTED, last_offset_delta=9)) :]
    got = lean(from_ten, 14).take(None)
    assert [r.offset for r in got] == [15, 20, 21, 23, 24, 30, 31]
    assert (fields(got), 32) == aiokafkas(from_ten, 14)


def test_taking_in_pieces_stops_inside_batches_and_goes_on_from_there() -> None:
    records = lean(LOG, 0)
    pieces = []
    positions = []
    while not records.done:
        pieces.append(records.take(2))
        positions.append(records.next_fetch_offset)
    assert [[r.offset for r in p] for p in pieces] == [
        [0, 1],
        [2, 10],
        [13, 15],
        [20, 21],
        [23, 24],
        [30, 31],
    ]
    # Past the last record handed out, or past its whole batch once all of it is out.
    assert positions == [2, 11, 20, 22, 25, 32]
    assert fields([r for p in pieces for r in p]) == COMMON + ABORTED_ROWS + LAST


def test_next_hands_out_one_record_at_a_time() -> None:
    records = lean(LOG, 0)
    assert [r.offset for r in records] == [0, 1, 2, 10, 13, 15, 20, 21, 23, 24, 30, 31]
    assert records.next_fetch_offset == 32


def test_a_corrupt_batch_raises_and_ends_the_fetch_result_without_moving_past_it() -> None:
    good = batch(0, [(0, None, b"v0", []), (1, None, b"v1", [])])
    # A value changed after the CRC was computed: still a well-formed batch, a wrong CRC.
    bad = batch(2, [(0, None, b"v2", [])]).replace(b"v2", b"vX")
    records = lean(good + bad, 0)
    assert [r.offset for r in records.take(1)] == [0]
    assert [r.offset for r in records.take(1)] == [1]
    with pytest.raises(CorruptRecordException, match="Invalid CRC"):
        records.take(None)
    assert records.next_fetch_offset == 2
    assert records.done
    assert records.take(None) == []
    # Not checked when the consumer does not check CRCs (as aiokafka).
    unchecked = lean(good + bad, 0, check_crcs=False)
    assert [r.value for r in unchecked.take(None)] == [b"v0", b"v1", b"vX"]


def _fetch_result(data: bytes, position: int) -> tuple[LeanFetchResult, Any]:
    """A fetch result at `position` of an assigned partition (in a running loop: aiokafka's
    subscription state wants one)."""
    subscriptions = SubscriptionState()
    subscriptions.assign_from_user({TP0})
    assignment = subscriptions.subscription.assignment
    assignment.state_value(TP0).seek(position)
    result = LeanFetchResult(
        TP0, assignment=assignment, partition_records=lean(data, position), backoff=0.1
    )
    return result, assignment.state_value(TP0)


@pytest.mark.asyncio
async def test_getall_moves_the_consumer_position_as_aiokafka_does() -> None:
    result, state = _fetch_result(LOG, 0)
    assert [r.offset for r in result.getall(5)] == [0, 1, 2, 10, 13]
    assert state.position == 14
    assert result.has_more()
    assert [r.offset for r in result.getall()] == [15, 20, 21, 23, 24, 30, 31]
    assert state.position == 32
    assert not result.has_more()  # the fetcher asks the broker for more now


@pytest.mark.asyncio
async def test_getall_returns_nothing_once_the_position_was_moved_elsewhere() -> None:
    result, state = _fetch_result(LOG, 0)
    state.seek(100)  # a seek (a rewind, a reset) since the fetch
    assert result.getall() == []
    assert not result.has_more()


def test_only_streamcs_consumers_unpack_lean_records() -> None:
    consumer = lean_consumer_class()
    assert issubclass(consumer, AIOKafkaConsumer)
    # aiokafka's own code runs, with only the classes it builds bound to the lean ones ...
    assert consumer.start.__code__ is AIOKafkaConsumer.start.__code__
    fetcher = consumer.start.__globals__["Fetcher"]
    assert fetcher.__bases__ == (aiokafka_fetcher.Fetcher,)
    proc = fetcher._proc_fetch_request
    assert proc.__code__ is aiokafka_fetcher.Fetcher._proc_fetch_request.__code__
    assert proc.__globals__["PartitionRecords"] is LeanPartitionRecords
    assert proc.__globals__["FetchResult"] is LeanFetchResult
    for name in ("fetched_records", "next_record"):
        assert getattr(fetcher, name).__globals__["FetchResult"] is LeanFetchResult
    # ... and nothing of aiokafka itself changed: a user's own consumer gets ConsumerRecords.
    assert aiokafka_consumer.Fetcher is fetcher.__bases__[0]
    assert aiokafka_fetcher.PartitionRecords is LeanPartitionRecords.__bases__[0]
    assert aiokafka_fetcher.FetchResult is LeanFetchResult.__bases__[0]


def test_an_aiokafka_whose_hook_points_moved_is_refused_loudly() -> None:
    async def start_without_fetcher(self: Any) -> None:
        return None

    with pytest.raises(LeanFetchError, match="no longer uses Fetcher"):
        kafka_records._rebind(start_without_fetcher, Fetcher=type("F", (object,), {}))
    # A name that no longer is the class the lean one extends.
    with pytest.raises(LeanFetchError, match="FetchResult is not what Other extends"):
        kafka_records._rebind(
            aiokafka_fetcher.Fetcher.fetched_records,
            FetchResult=type("Other", (object,), {}),
        )
    with pytest.raises(LeanFetchError, match="is not the expected"):
        kafka_records._check_params(
            type("PR", (), {"__init__": lambda self, tp, records: None}),
            kafka_records._PARTITION_RECORDS_PARAMS,
        )


@pytest.mark.asyncio
async def test_a_transport_on_an_aiokafka_that_does_not_fit_fails_at_start_without_retrying(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if a bumped aiokafka's FetchResult took other arguments.
    monkeypatch.setattr(kafka_records, "_FETCH_RESULT_PARAMS", ("self", "tp", "records"))
    monkeypatch.setattr(kafka, "lean_consumer_class", kafka_records.lean_consumer_class.__wrapped__)
    # No broker listens there: a start that tried to connect would retry for minutes.
    transport = KafkaTransport.from_url(
        "kafka://127.0.0.1:9", group_id="g", connect_attempts=8, connect_timeout_s=60.0
    )
    with pytest.raises(LeanFetchError) as raised:
        await asyncio.wait_for(transport.start(), 5)
    assert str(raised.value) == (
        f"streamc's Kafka consumer does not fit the installed aiokafka {aiokafka.__version__}: "
        "aiokafka's FetchResult(tp, assignment, partition_records, backoff) is not the "
        "expected FetchResult(tp, records). Install the aiokafka version streamc_runtime pins."
    )
    assert isinstance(raised.value, TransportError)  # one line for the user, no traceback


def test_an_aiokafka_naming_the_hooked_classes_in_another_method_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if a newer Fetcher had one more method telling fetch results from errors by type:
    # left as aiokafka's, it would take every lean result for an error.
    source = "def records_ready(self):\n    return [tp for tp, r in self._records.items()"
    source += " if type(r) is FetchResult]\n"
    namespace: dict[str, Any] = {}
    exec(compile(source, aiokafka_fetcher.__file__, "exec"), vars(aiokafka_fetcher), namespace)
    monkeypatch.setattr(
        aiokafka_fetcher.Fetcher, "records_ready", namespace["records_ready"], raising=False
    )
    with pytest.raises(LeanFetchError, match=r"Fetcher\.records_ready uses FetchResult"):
        kafka_records.lean_consumer_class.__wrapped__()


def test_an_aiokafka_building_fetches_without_its_fetch_wait_copy_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A global table's follow lengthens its consumer's fetch wait once caught up by setting
    # the fetcher's copy (`set_fetch_max_wait`): with requests built otherwise it would keep
    # fetching with the catch-up's 20 ms wait, 50 fetches a second for ever.
    def builds_otherwise(self: Any, assignment: Any) -> Any:
        return self._max_wait_elsewhere

    monkeypatch.setattr(aiokafka_fetcher.Fetcher, "_get_actions_per_node", builds_otherwise)
    with pytest.raises(LeanFetchError, match="fetch requests do not read _fetch_max_wait_ms"):
        kafka_records.lean_consumer_class.__wrapped__()


def test_an_aiokafka_whose_partition_records_keep_other_attributes_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The same constructor parameters, but the CRC flag kept under another name: the lean
    # unpacking would fail at the first fetch instead.
    original = aiokafka_fetcher.PartitionRecords.__init__

    def renamed(
        self: Any,
        tp: Any,
        records: Any,
        aborted_transactions: Any,
        fetch_offset: int,
        key_deserializer: Any,
        value_deserializer: Any,
        check_crcs: bool,
        isolation_level: int,
    ) -> None:
        original(
            self,
            tp,
            records,
            aborted_transactions,
            fetch_offset,
            key_deserializer,
            value_deserializer,
            check_crcs,
            isolation_level,
        )
        self._crc_check = self.__dict__.pop("_check_crcs")

    monkeypatch.setattr(aiokafka_fetcher.PartitionRecords, "__init__", renamed)
    with pytest.raises(LeanFetchError, match=r"AttributeError.*_check_crcs"):
        kafka_records.lean_consumer_class.__wrapped__()


def test_an_aiokafka_that_unpacks_otherwise_than_the_lean_unpacking_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if a newer aiokafka handed out records of aborted transactions under read_committed:
    # the lean unpacking copies 0.14's rules, and must not silently keep them.
    original = aiokafka_fetcher.PartitionRecords._unpack_records

    def unpack(self: Any) -> Any:
        self._isolation_level = READ_UNCOMMITTED
        yield from original(self)

    monkeypatch.setattr(aiokafka_fetcher.PartitionRecords, "_unpack_records", unpack)
    with pytest.raises(LeanFetchError, match="unpacks otherwise than aiokafka's PartitionRecords"):
        kafka_records.lean_consumer_class.__wrapped__()


def test_the_installed_aiokafka_passes_the_start_check() -> None:
    assert issubclass(kafka_records.lean_consumer_class.__wrapped__(), AIOKafkaConsumer)


def test_the_installed_aiokafka_fits_the_inlined_batch_append() -> None:
    kafka_records.check_inlined_append()  # raises if it does not


def test_an_aiokafka_whose_batch_builder_keeps_its_builder_elsewhere_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `_send_many` appends to an open batch's C builder itself; a BatchBuilder that keeps it
    # under another name would fail every send with an AttributeError, not at start.
    from aiokafka.producer.message_accumulator import BatchBuilder

    original = BatchBuilder.__init__

    def renamed(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._records_builder = self.__dict__.pop("_builder")

    monkeypatch.setattr(BatchBuilder, "__init__", renamed)
    with pytest.raises(LeanFetchError, match=r"producer does not fit.*AttributeError.*_builder"):
        kafka_records.check_inlined_append()


def test_an_aiokafka_whose_batches_fill_otherwise_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if a newer BatchBuilder.append refused records for a reason of its own before its C
    # builder fills: the inlined append would put more records in a batch than aiokafka would.
    from aiokafka.producer.message_accumulator import BatchBuilder

    original = BatchBuilder.append

    def append(self: Any, **kwargs: Any) -> Any:
        if self._relative_offset >= 2:
            self.close()
            return None
        return original(self, **kwargs)

    monkeypatch.setattr(BatchBuilder, "append", append)
    with pytest.raises(LeanFetchError, match="refuses records at another point"):
        kafka_records.check_inlined_append()
