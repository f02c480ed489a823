"""Run an app on the in-memory broker until everything is processed: the engine of `streamc run`.

Inputs are produced exactly as a producer would: values are encoded as generic JSON and *not*
validated, so a bad record reaches the worker and its dead-letter topic as it would on Kafka.
They are produced in timestamp order (those of several files interleaved; ties, and inputs
without a timestamp, keep their file order; inputs without one come last), and a table topic's
records (a `table ... from TOPIC`, global or not) are applied before stream records of the
same timestamp and after earlier ones, so a join sees the row of its element's time: the
inputs are cut into runs of table records and runs of stream records, and each run is produced
only once the worker has handled the one before (idle, every global table caught up; partial
`take` batches are kept). The worker then runs until it is idle (nothing left to fetch,
nothing buffered, every agent waiting for data), partial `take` batches are drained, and that
repeats until
nothing moves; then, unless `close_windows=False`, stream time moves past every window so the
final rows of windowed aggregations come out, and the worker runs until quiet again; then it
commits, stops, and the broker is returned for the caller to read the output topics from.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import msgspec

from .app import App
from .events import Carrier, Event, carrier_events
from .memory import MemoryBroker, MemoryTransport
from .records import Time
from .source import SourceStream
from .tasks import cancel
from .topic import Topic
from .transport import TP
from .worker import Worker

__all__ = [
    "LocalRunError",
    "LocalRunStopped",
    "Progress",
    "encode_input",
    "kind_runs",
    "produce_input",
    "run_local",
    "table_topics",
    "tables_caught_up",
]


class LocalRunError(RuntimeError):
    """The worker failed while running locally (the cause is chained)."""


# One input as produced: (key, value, partition, headers, timestamp).
Encoded = tuple[bytes | None, bytes | None, int | None, list[tuple[str, bytes]], int | None]


def encode_input(topic: Topic[Any], obj: Mapping[str, Any]) -> Encoded:
    """One JSONL input object as (key, value, partition, headers, timestamp) for `topic`.

    `{"value": <json>, "key"?, "partition"?, "headers"?: {str: str}, "timestamp"?: ms or RFC
    3339}`, or
    instead of `"value"`: `"raw": "<text>"` for arbitrary text bytes (e.g. not JSON), or
    `"raw_base64": "<base64>"` for any bytes (e.g. not UTF-8).
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"topic {topic.name!r}: each input must be a JSON object")
    forms = [form for form in ("value", "raw", "raw_base64") if form in obj]
    if len(forms) != 1:
        found = " and ".join(repr(f) for f in forms) if forms else "none"
        raise ValueError(
            f"topic {topic.name!r}: an input needs 'value' (or 'raw' or 'raw_base64'), "
            f"exactly one of them; found {found}"
        )
    value: bytes | None
    if "raw" in obj:
        raw = obj["raw"]
        if not isinstance(raw, str):
            raise ValueError(f"topic {topic.name!r}: 'raw' must be a string")
        value = raw.encode()
    elif "raw_base64" in obj:
        value = _decode_base64(topic, "raw_base64", obj["raw_base64"])
    else:
        v = obj["value"]
        if v is None:
            value = None
        elif topic.value_type is bytes and isinstance(v, str):
            value = v.encode()
        else:
            try:
                value = msgspec.json.encode(v)
            except RecursionError:
                raise ValueError(f"topic {topic.name!r}: 'value' is nested too deeply") from None
    key = _encode_key(topic, obj.get("key"))
    partition = obj.get("partition")
    if partition is not None and not _is_int(partition):
        raise ValueError(
            f"topic {topic.name!r}: 'partition' must be an integer, got {json.dumps(partition)}"
        )
    if partition is not None and not 0 <= partition < topic.partitions:
        raise ValueError(
            f"topic {topic.name!r}: partition {partition} out of range 0..{topic.partitions - 1}"
        )
    headers_obj = obj.get("headers") or {}
    if not isinstance(headers_obj, Mapping):
        raise ValueError(f"topic {topic.name!r}: 'headers' must be an object of strings")
    headers: list[tuple[str, bytes]] = []
    for name, text in headers_obj.items():
        if not isinstance(text, str):
            raise ValueError(
                f"topic {topic.name!r}: header {name!r} must be a string, got {json.dumps(text)}"
            )
        headers.append((str(name), text.encode()))
    timestamp: Any = obj.get("timestamp")
    if isinstance(timestamp, str):
        try:
            timestamp = Time.parse(timestamp).ms
        except ValueError:
            pass
    if timestamp is not None and not _is_int(timestamp):
        raise ValueError(
            f"topic {topic.name!r}: 'timestamp' must be integer milliseconds or an RFC 3339 "
            "timestamp with an offset"
        )
    return key, value, partition, headers, timestamp


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no number


def _decode_base64(topic: Topic[Any], field: str, text: Any) -> bytes:
    if isinstance(text, str):
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error:
            pass
    raise ValueError(f"topic {topic.name!r}: {field!r} must be a base64 string")


def _encode_key(topic: Topic[Any], key: Any) -> bytes | None:
    if key is None:
        return None
    if isinstance(key, str) and topic.key_type in (str, bytes, int):
        return key.encode()
    try:
        return topic.key_codec.encode(key)
    except (TypeError, ValueError, msgspec.EncodeError):
        return msgspec.json.encode(key)
    except (OverflowError, RecursionError) as exc:
        raise ValueError(f"topic {topic.name!r}: 'key' cannot be encoded: {exc}") from None


def table_topics(app: App) -> set[str]:
    """The topics tables are declared over (`table ... from TOPIC`): their records are applied
    before stream records of the same time."""
    return {t.source.name for t in app.tables.values() if t.source is not None}


def kind_runs(
    inputs: Sequence[tuple[str, Encoded]], tables: set[str]
) -> list[list[tuple[str, Encoded]]]:
    """`inputs` (in the order they are to be consumed) cut where they go from table-topic
    records to stream records or back: a run is produced only once the one before is handled,
    so a stream record sees exactly the table records before it."""
    runs: list[list[tuple[str, Encoded]]] = []
    kind: bool | None = None
    for item in inputs:
        is_table = item[0] in tables
        if is_table is not kind:
            runs.append([])
            kind = is_table
        runs[-1].append(item)
    return runs


def produce_input(broker: MemoryBroker, topic: str, encoded: Encoded) -> None:
    key, value, partition, headers, timestamp = encoded
    broker.produce(topic, value, key, headers, partition, timestamp)


async def tables_caught_up(worker: Worker, broker: MemoryBroker) -> None:
    """Until every global table has read its topic to the broker's end (a global table reads
    its topic by itself, not as an input the worker's idleness accounts for; its follow wakes
    at the produce, so a few scheduler rounds see the record applied)."""
    for held in list(worker.tables.globals.values()):
        topic = held.table.changelog.name
        while worker.running:
            ends = [broker.end_offset(TP(topic, p)) for p in range(len(held.ends))]
            if held.ready.is_set() and all(a >= b for a, b in zip(held.ends, ends, strict=True)):
                break
            await asyncio.sleep(0)  # a scheduler round, no timer: `streamc test`'s clock stands


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a local run is, for a progress display."""

    elapsed: float  # seconds since the run started
    records_in: int  # messages the worker fetched (inputs and the topics it writes and reads)
    records_out: int  # records the worker wrote, dead letters included
    dead_letters: int
    inputs_done: int  # messages of the topics agents read that are completely handled...
    inputs_total: int  # ...out of all messages of those topics so far


class LocalRunStopped(RuntimeError):
    """`run_local` stopped the worker before it finished: `time_limit` or `max_records`."""


async def run_local(
    app: App,
    inputs: Mapping[str, Sequence[Mapping[str, Any]]] | Sequence[tuple[str, Sequence[Any]]],
    *,
    close_windows: bool = True,
    broker: MemoryBroker | None = None,
    time_limit: float | None = None,
    max_records: int | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    progress_interval: float = 1.0,
    **worker_options: Any,
) -> MemoryBroker:
    """Produce `inputs` ({topic name: [input objects]}, or [(topic name, [input objects])] in
    file order), run `app` until quiescent, close every window (unless `close_windows` is
        false) and run until quiescent again, stop.

        A bad input raises `ValueError`, prefixed by its `jsonl.Line.where` when it has one. After
        `time_limit` seconds, or once the worker has written more than `max_records` records (a
        program that reads what it writes never gets quiet), the worker is stopped at once and
        `LocalRunStopped` says why and which agents were busy with what. `on_progress` is called
        every `progress_interval` seconds while the worker runs.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    broker = broker if broker is not None else MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions)
    encoded = []  # every input is checked before the first is produced (and maybe printed)
    pairs = list(inputs.items()) if isinstance(inputs, Mapping) else list(inputs)
    for name, records in pairs:
        if name not in app.topics:
            known = ", ".join(sorted(app.topics))
            raise ValueError(f"app {app.name!r} has no topic {name!r} (topics: {known})")
        topic = app.topics[name]
        for obj in records:
            try:
                encoded.append((name, encode_input(topic, obj)))
            except ValueError as exc:
                where = getattr(obj, "where", "")
                if not where:
                    raise
                raise ValueError(f"{where}: {exc}") from None
    # Timestamp order across files (a stable sort: ties keep file order), a table topic's
    # records before stream records of the same timestamp (a join sees the row of its time).
    tables = table_topics(app)
    encoded.sort(
        key=lambda item: (_NEVER if item[1][4] is None else item[1][4], item[0] not in tables)
    )
    runs = kind_runs(encoded, tables)
    for name, encoded_input in runs.pop(0) if runs else ():
        produce_input(broker, name, encoded_input)
    worker_options.setdefault("stats_interval", 0)
    worker = Worker(app, MemoryTransport(broker, app.name), **worker_options)
    await worker.start()
    stopped: list[str] = []  # why the watch stopped the run, if it did
    try:
        watch = loop.create_task(
            _watch(
                worker, started, time_limit, max_records, on_progress, progress_interval, stopped
            )
        )
        quiet = loop.create_task(_finish(worker, close_windows, broker, runs))
        try:
            await asyncio.wait({watch, quiet}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel(quiet)
            await cancel(watch)
        if stopped:
            worker.shutdown_timeout = 0  # a stuck hook is cancelled, not waited for
    finally:
        await worker.stop()
    if worker.failure is not None:
        raise LocalRunError(f"app {app.name!r} failed: {worker.failure}") from worker.failure
    if stopped:
        raise LocalRunStopped(stopped[0])
    return broker


async def _watch(
    worker: Worker,
    started: float,
    time_limit: float | None,
    max_records: int | None,
    on_progress: Callable[[Progress], None] | None,
    interval: float,
    stopped: list[str],
) -> None:
    """Report progress; once a limit is passed, put why in `stopped` and return."""
    loop = asyncio.get_running_loop()
    next_report = started + interval
    while True:
        await asyncio.sleep(_TICK)
        now = loop.time()
        written = worker.sent + worker.dead_letters
        if max_records is not None and written > max_records:
            stopped.append(
                f"stopped after the worker wrote {written:,} records (limit {max_records:,}); "
                f"{_CYCLE}{_busy_lines(worker)}"
            )
            return
        if time_limit is not None and now - started >= time_limit:
            busy = _busy_lines(worker)
            stopped.append(
                f"timed out after {_seconds(time_limit)} ({_count(worker.events_in)} in, "
                f"{written:,} out)"
                + (busy or f"; no agent is stuck and records are still moving: {_CYCLE}")
            )
            return
        if on_progress is not None and now >= next_report:
            on_progress(_progress(worker, now - started))
            next_report = now + interval


_CYCLE = "does an agent read a topic that it or another agent writes (a cycle)?"
_TICK = 0.05  # how often limits are checked: a cycle overshoots `max_records` by a tick's work


def _seconds(seconds: float) -> str:
    return f"{seconds:g}s"


def _count(records: int) -> str:
    return f"{records:,} record{'' if records == 1 else 's'}"


def _progress(worker: Worker, elapsed: float) -> Progress:
    read = set(worker.conductor.topics())
    done = total = 0
    for tp, state in worker.offsets.partitions.items():
        if tp.topic in read:
            done += state.committable() or 0
    broker = getattr(worker.transport, "broker", None)
    if isinstance(broker, MemoryBroker):
        for topic in read:
            for p in range(broker.partitions_for(topic) or 0):
                total += broker.end_offset(TP(topic, p))
    return Progress(
        elapsed,
        worker.events_in,
        worker.sent + worker.dead_letters,
        worker.dead_letters,
        done,
        max(total, done),
    )


def _busy_lines(worker: Worker) -> str:
    """One line per agent task not waiting for data: the code it is in, the element it holds."""
    lines = []
    for task in sorted(worker._drivers, key=lambda t: t.get_name()):
        if task.done():
            continue
        frames = _await_chain(task)
        if any(f.f_code is _WAIT_CODE for f in frames):
            continue  # waiting for data: not stuck
        where = next((f for f in reversed(frames) if not _is_ours(f)), None)
        spot = (
            f"in {where.f_code.co_qualname}() at {where.f_code.co_filename}:{where.f_lineno}"
            if where is not None
            else "running"
        )
        element = _element(frames, worker, task)
        holding = f", handling {element}" if element else ""
        lines.append(f"\n  {task.get_name()} is {spot}{holding}")
    return "".join(lines)


def _await_chain(task: asyncio.Task[Any]) -> list[FrameType]:
    """The frames of the coroutines `task` is suspended in, outermost first."""
    frames: list[FrameType] = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        if frame is None:
            frame = getattr(awaited, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        awaited = (
            getattr(awaited, "cr_await", None)
            or getattr(awaited, "ag_await", None)
            or getattr(awaited, "gi_yieldfrom", None)
        )
    return frames


_RUNTIME_DIR = os.path.dirname(__file__)
_WAIT_CODE = SourceStream.wait.__code__


def _is_ours(frame: FrameType) -> bool:
    filename = frame.f_code.co_filename
    return (
        filename.startswith(_RUNTIME_DIR)
        or filename.startswith(os.path.dirname(asyncio.__file__))
        or f"{os.sep}agents{os.sep}" in filename  # the generated agent modules
    )


def _element(frames: list[FrameType], worker: Worker, task: asyncio.Task[Any]) -> str:
    """The element `task` is handling: a `carrier` the runtime holds in one of its frames
    (a processor, filter or key function running on it), else the one an agent was handed."""
    for frame in reversed(frames):
        if _is_ours(frame):
            carrier = frame.f_locals.get("carrier")
            if isinstance(carrier, Event | list):
                return _describe(carrier)
    for name, agent_task in worker._agent_tasks.items():
        if agent_task is task:
            for node in worker._roots[name]._chain():
                if node._current is not None:
                    return _describe(node._current)
    return ""


def _describe(carrier: Carrier) -> str:
    events = carrier_events(carrier)
    if not events:
        return ""
    first, last = events[0].message, events[-1].message
    where = f"{first.topic}[{first.partition}] offset {first.offset}"
    if len(events) > 1:
        return f"a batch of {len(events)} from {where}..{last.offset}"
    key = first.key
    return where + ("" if key is None else f" (key {key.decode('utf-8', 'replace')!r})")


_NEVER = float("inf")


async def _finish(
    worker: Worker,
    close_windows: bool,
    broker: MemoryBroker,
    runs: list[list[tuple[str, Encoded]]],
) -> None:
    """Run until idle, produce the next run of inputs, until all are; then until quiescent
    and, with `close_windows`, close every window (the finals may feed further windows: until
    a round changes nothing)."""
    for run in runs:
        # Idle, not quiescent: a drain here would cut a partial `take` batch wherever a table
        # record falls between its elements, which the end of input alone does.
        await until_idle(worker)
        if not worker.running:
            return
        await tables_caught_up(worker, broker)
        for name, encoded_input in run:
            produce_input(broker, name, encoded_input)
    await until_quiescent(worker)
    if not close_windows or not worker.windowed:
        return
    last: tuple[int, ...] | None = None
    while worker.running:
        mark = (worker.events_in, worker.sent, worker.dead_letters)
        if mark == last:
            return
        last = mark
        worker.request_close_windows()
        await until_quiescent(worker)


async def until_quiescent(worker: Worker) -> None:
    """Wait until `worker` is idle with nothing in flight, draining partial batches as needed."""
    last: tuple[int, ...] | None = None
    while True:
        await until_idle(worker)
        if not worker.running:
            return
        if worker.partial_batches() == 0 and worker.offsets.idle():
            return
        mark = (
            worker.events_in,
            worker.sent,
            worker.dead_letters,
            worker.batches,
            worker.offsets.in_flight(),
        )
        if mark == last:
            return  # a drain changed nothing: nothing else will happen
        last = mark
        worker.request_drain()


async def until_idle(worker: Worker, poll: float = 0.002) -> None:
    """Until the worker has stayed idle across two polls (or stopped)."""
    seen = 0
    while worker.running:
        if worker.idle():
            seen += 1
            if seen >= 2:
                return
            for _ in range(3):  # idle must survive a few scheduler rounds, not one instant
                await asyncio.sleep(0)
            continue
        seen = 0
        await asyncio.sleep(poll)
