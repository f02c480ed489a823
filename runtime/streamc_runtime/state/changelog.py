"""Changelog records, the skip rule's positions, and restoring a store from its changelog.

Each changelog record is one applied input: the key's raw bytes, the new state's bytes, and
the header `streamc.position: <topic>:<partition>:<offset>`, the *source* position of the
input (carried through repartitions in that same header, so a duplicate forwarded again after
a crash has the position of the original). After the data records of each run, the partition's
skip map is written under the reserved key `POSITIONS_KEY` with the header
`streamc.positions: 1` and a JSON value `{"<topic>:<partition>": <highest offset applied>}`:
compaction may drop the data record that carried a source partition's highest position (a
later update of its key supersedes it), but never the latest map record.

A restore reads the partition from the store's checkpoint to the changelog's end: data records
set states (last wins); the skip map is the highest of every map record and every data
record's position (entries only rise, so a replay can only be skipped, never re-applied).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..transport import Message

if TYPE_CHECKING:
    from ..memory import MemoryBroker
    from .store import Store
    from .table import Table

__all__ = [
    "POSITIONS_HEADER",
    "POSITIONS_KEY",
    "POSITION_HEADER",
    "encode_positions",
    "merge_positions",
    "restore",
    "table_rows",
    "table_states",
]

logger = logging.getLogger("streamc")

POSITION_HEADER = "streamc.position"
POSITIONS_HEADER = "streamc.positions"
# No key codec writes a leading NUL for a real key (str keys would need one in the text).
POSITIONS_KEY = b"\x00streamc.positions"
_MAP_HEADERS = ((POSITIONS_HEADER, b"1"),)
_PROGRESS_EVERY = 5.0  # seconds between restore progress lines


class PartitionReader(Protocol):
    def read_partition(
        self, topic: str, partition: int, start: int
    ) -> AsyncGenerator[Sequence[Message], None]: ...


def parse_position(text: bytes) -> tuple[str, int]:
    """`b"orders:3:1234"` -> `("orders:3", 1234)` (Kafka topic names cannot hold ':')."""
    source, _, offset = text.decode().rpartition(":")
    return source, int(offset)


def source_partition(head: bytes) -> str:
    """`b"orders:3"` (or `b"orders:3#2"`), the head of a position header, as the skip map
    names it: `"orders:3"`.
    ValueError (UnicodeDecodeError too) if it is not one: a header some other producer set,
    which cannot place its element for the skip rule (`unreadable_position`)."""
    text = head.decode()
    topic, _, partition = text.rpartition(":")
    # A step's second and later outputs of one element carry `orders:3#k` (closing.py).
    partition = partition.partition("#")[0]
    if not topic or not (partition.isascii() and partition.isdigit()):
        raise ValueError(text)
    return text


def unreadable_position(mark: bytes) -> ValueError:
    """The error an operation dead-letters an element with when its position header is not
    one streamc writes."""
    return ValueError(f"unreadable {POSITION_HEADER} header {mark!r}: not a source position")


def merge_positions(into: dict[str, int], more: dict[str, int]) -> None:
    for source, offset in more.items():
        if offset > into.get(source, -1):
            into[source] = offset


def encode_positions(positions: dict[str, int]) -> bytes:
    return json.dumps(positions, sort_keys=True, separators=(",", ":")).encode()


def map_record(positions: dict[str, int]) -> tuple[bytes, bytes, Sequence[tuple[str, bytes]]]:
    return POSITIONS_KEY, encode_positions(positions), _MAP_HEADERS


def _split(batch: Sequence[Message], positions: dict[str, int]) -> list[tuple[bytes, bytes | None]]:
    """The data records of `batch` as (key, state bytes); `positions` raised by every map
    record and data record position in it."""
    records: list[tuple[bytes, bytes | None]] = []
    append = records.append
    marks: list[bytes] = []  # the data records' positions since the last map record
    for m in batch:
        is_map = False
        for name, data in m.headers:
            if name == POSITION_HEADER:
                marks.append(data)
            elif name == POSITIONS_HEADER:
                is_map = True
        if is_map:
            # The map covers every data record before it: their positions need no parsing.
            marks.clear()
            merge_positions(positions, json.loads(m.value or b"{}"))
        elif m.key is not None:
            append((m.key, m.value))
    for mark in marks:
        source, offset = parse_position(mark)
        if offset > positions.get(source, -1):
            positions[source] = offset
    return records


async def restore(
    reader: PartitionReader,
    topic: str,
    partition: int,
    store: Store,
    what: str,
    valid: Callable[[Sequence[Message]], Awaitable[Sequence[Message]]] | None = None,
) -> int:
    """Replay changelog `topic[partition]` into `store` from its checkpoint to the end; the
    number of records read. Logs progress every few seconds and once done.

    `valid`: for a topic that is not our own changelog (a table over a user's topic), the
    records of a batch worth keeping (it reports the others: see `join.valid_records`)."""
    start = store.restore_from()
    began = last = time.monotonic()
    count = 0
    end = start
    logger.info("restoring %s from %s[%d] at offset %d", what, topic, partition, start)
    # Closed here, not whenever the collector finalizes it: a failure or cancel while a batch
    # is handled (a store that refuses it, a dead letter being sent) leaves the reader
    # suspended mid-read, and on Kafka it holds a consumer.
    async with contextlib.aclosing(reader.read_partition(topic, partition, start)) as batches:
        async for batch in batches:
            if not batch:
                continue
            end = batch[-1].offset + 1
            records = _split(batch if valid is None else await valid(batch), store.positions)
            store.restore_batch(records, end)
            count += len(batch)
            now = time.monotonic()
            if now - last >= _PROGRESS_EVERY:
                last = now
                logger.info(
                    "restoring %s: %d records read (offset %d), %.0f/s",
                    what,
                    count,
                    end,
                    count / max(now - began, 1e-9),
                )
    store.restore_done()
    elapsed = time.monotonic() - began
    logger.info(
        "restored %s: %d records in %.2fs (to offset %d), %d source partitions",
        what,
        count,
        elapsed,
        end,
        len(store.positions),
    )
    return count


def table_states(broker: MemoryBroker, table: Table[Any, Any]) -> dict[Any, Any]:
    """A table's states read from its changelog topic on `broker`: the last data record of
    each key (decoded key -> decoded state)."""
    topic = table.changelog
    out: dict[Any, Any] = {}
    last: dict[bytes, bytes | None] = {}
    for p in range(broker.partitions_for(topic.name) or 0):
        last.update(_split(broker.messages(topic.name, p), {}))
    for raw, data in last.items():
        if data is not None:
            out[topic.key_codec.decode(raw)] = topic.value_codec.decode(data)
    return out


def table_rows(
    broker: MemoryBroker, table: Table[Any, Any], row: Callable[[Any, Any], Any] | None = None
) -> dict[Any, Any]:
    """A table's rows from its changelog on `broker` (`row`: the aggregation's row function,
    by default the one the table was aggregated with in this process). A windowed table's
    rows are keyed by `(key, Window)`: the windows still open. A table over a topic has no
    row function: its rows are the topic's records, the last per key."""
    if table.source is not None:
        return table_states(broker, table)
    make = row or table.row
    if make is None:
        raise ValueError(f"table {table.name!r}: no row function known (no aggregate ran)")
    if table.window is not None:
        from ..records import key_codec
        from .window_types import rows_of

        states = table_states(broker, table)
        return rows_of(make, iter(states.items()), key_codec(table.key_type).decode)
    return {key: make(key, state) for key, state in table_states(broker, table).items()}
