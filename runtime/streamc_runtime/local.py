"""Run an app on the in-memory broker until everything is processed: the engine of `streamc run`.

Inputs are produced first, by topic (real Kafka name), exactly as a producer would: values are
encoded as generic JSON and *not* validated, so a bad record reaches the worker and its
dead-letter topic as it would on Kafka. The worker then runs until it is idle (nothing left to
fetch, nothing buffered, every agent waiting for data), partial `take` batches are drained, and
that repeats until nothing moves; then it commits, stops, and the broker is returned for the
caller to read the output topics from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from .app import App, Topic, Worker
from .memory import MemoryBroker, MemoryTransport

__all__ = ["encode_input", "run_local"]


class LocalRunError(RuntimeError):
    """The worker failed while running locally (the cause is chained)."""


def encode_input(
    topic: Topic[Any], obj: Mapping[str, Any]
) -> tuple[bytes | None, bytes | None, int | None, list[tuple[str, bytes]], int | None]:
    """One JSONL input object as (key, value, partition, headers, timestamp) for `topic`.

    `{"value": <json>, "key"?, "partition"?, "headers"?: {str: str}, "timestamp"?: ms}`, or
    `"raw": "<text>"` instead of `"value"` to inject arbitrary (e.g. undecodable) bytes.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"topic {topic.name!r}: each input must be a JSON object")
    if "raw" in obj:
        raw = obj["raw"]
        if not isinstance(raw, str):
            raise ValueError(f"topic {topic.name!r}: 'raw' must be a string")
        value: bytes | None = raw.encode()
    elif "value" in obj:
        v = obj["value"]
        if v is None:
            value = None
        elif topic.value_type is bytes and isinstance(v, str):
            value = v.encode()
        else:
            value = msgspec.json.encode(v)
    else:
        raise ValueError(f"topic {topic.name!r}: an input needs 'value' (or 'raw')")
    key = _encode_key(topic, obj.get("key"))
    partition = obj.get("partition")
    if partition is not None and (
        not isinstance(partition, int) or not 0 <= partition < topic.partitions
    ):
        raise ValueError(
            f"topic {topic.name!r}: partition {partition!r} out of range 0..{topic.partitions - 1}"
        )
    headers_obj = obj.get("headers") or {}
    if not isinstance(headers_obj, Mapping):
        raise ValueError(f"topic {topic.name!r}: 'headers' must be an object of strings")
    headers = [(str(k), str(v).encode()) for k, v in headers_obj.items()]
    timestamp = obj.get("timestamp")
    if timestamp is not None and not isinstance(timestamp, int):
        raise ValueError(f"topic {topic.name!r}: 'timestamp' must be integer milliseconds")
    return key, value, partition, headers, timestamp


def _encode_key(topic: Topic[Any], key: Any) -> bytes | None:
    if key is None:
        return None
    if isinstance(key, str) and topic.key_type in (str, bytes, int):
        return key.encode()
    try:
        return topic.key_codec.encode(key)
    except (TypeError, ValueError, msgspec.EncodeError):
        return msgspec.json.encode(key)


async def run_local(
    app: App,
    inputs: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    broker: MemoryBroker | None = None,
    **worker_options: Any,
) -> MemoryBroker:
    """Produce `inputs` ({topic name: [input objects]}), run `app` until quiescent, stop."""
    broker = broker if broker is not None else MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions)
    for name, records in inputs.items():
        if name not in app.topics:
            known = ", ".join(sorted(app.topics))
            raise ValueError(f"app {app.name!r} has no topic {name!r} (topics: {known})")
        topic = app.topics[name]
        for obj in records:
            key, value, partition, headers, timestamp = encode_input(topic, obj)
            broker.produce(name, value, key, headers, partition, timestamp)
    worker_options.setdefault("stats_interval", 0)
    worker = app.worker(MemoryTransport(broker, app.name), **worker_options)
    await worker.start()
    try:
        await until_quiescent(worker)
    finally:
        await worker.stop()
    if worker.failure is not None:
        raise LocalRunError(f"app {app.name!r} failed: {worker.failure}") from worker.failure
    return broker


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
