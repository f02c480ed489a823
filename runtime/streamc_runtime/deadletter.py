"""Dead letters: an element that failed (a hook raised, a record did not decode, a record is
too large, a late event) goes to the app's dead-letter topic as its message, with headers
saying what failed where (`streamc.error`, `streamc.error.type`, `streamc.source.*`,
`streamc.agent`, a hook's declared result), cut to fit when it is too large to produce whole.
`Worker.dead_letter` and its kin count and ack; this module builds, sends and logs the record."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from .hooks import HookResultError
from .records import DecodeError
from .transport import Delivery, Headers, Message, RecordTooLargeError

if TYPE_CHECKING:
    from .offsets import PartitionOffsets
    from .worker import Worker

__all__ = ["send_dead"]

logger = logging.getLogger("streamc")

_MAX_ERROR = 2000


async def send_dead(
    worker: Worker,
    message: Message,
    exc: BaseException,
    agent: str,
    held: list[tuple[PartitionOffsets, int]],
    *,
    traceback: bool = False,
) -> None:
    if worker.output_lost is not None:
        # Nothing is committed any more, so the next owner handles this message again and
        # dead-letters it then if it is bad. The error may be the lost output itself (a
        # hook's `Topic.send` that gave up): no reason to call a valid message bad.
        worker._hold_for_good(held)
        return
    # Capped: a header is for reading, and some exceptions carry whole payloads.
    error = (str(exc) or type(exc).__name__)[:_MAX_ERROR]
    headers = [
        *message.headers,
        ("streamc.error", error.encode()),
        ("streamc.error.type", _qualname(exc).encode()),
        ("streamc.source.topic", message.topic.encode()),
        ("streamc.source.partition", str(message.partition).encode()),
        ("streamc.source.offset", str(message.offset).encode()),
        ("streamc.agent", agent.encode()),
    ]
    if isinstance(exc, HookResultError):
        headers += [
            ("streamc.hook", exc.hook.encode()),
            ("streamc.hook.returns", exc.expected.encode()),
        ]
    dlq = worker.app.dlq.name
    try:
        delivery = await worker.send_or_stop(dlq, message.value, message.key, headers)
    except RecordTooLargeError as too_large:
        delivery = await _send_truncated(worker, message, headers, too_large.limit)
    if delivery is None:  # the worker is stopping: keep the message uncommitted
        worker._hold_for_good(held)
        return
    worker.dead_letters += 1
    worker.sent_to[dlq] += 1
    worker._hold(delivery, held)
    # One line per dead letter; the traceback only at debug level (a bad batch of input
    # must not flood the log).
    where = {
        "agent": agent,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
    }
    logger.warning(
        "dead letter: %s[%d]@%d (agent %s): %s: %s",
        message.topic,
        message.partition,
        message.offset,
        agent or "-",
        _qualname(exc),
        error,
        extra=where,
    )
    if traceback and not isinstance(exc, DecodeError) and logger.isEnabledFor(logging.DEBUG):
        logger.debug("traceback of the dead letter above", exc_info=exc, extra=where)


async def _send_truncated(
    worker: Worker, message: Message, headers: list[tuple[str, bytes]], limit: int | None
) -> Awaitable[Delivery] | None:
    """Dead-letter a message too large to produce whole (it came from a topic allowing
    more than the producer's limit): its value cut to fit, with headers saying so. Were
    even its key and headers too large, they go too: no message may stop the worker."""
    value = message.value or b""
    marks = [
        ("streamc.truncated", b"true"),
        ("streamc.original.size", str(len(value)).encode()),
    ]
    marked = [*headers, *marks]
    room = (limit or 0) - _framing(message.key, marked)
    dlq = worker.app.dlq.name
    try:
        return await worker.send_or_stop(dlq, value[: max(room, 0)], message.key, marked)
    except RecordTooLargeError:
        own = [(k, v) for k, v in headers if k.startswith("streamc.")]
        return await worker.send_or_stop(dlq, b"", None, [*own, *marks])


def _framing(key: bytes | None, headers: Headers) -> int:
    """A bound on a record's size without its value: key, headers, and what Kafka adds to
    them in a batch of one (batch header, varints): what a truncated value must leave room for."""
    size = 128 + (len(key) if key else 0)
    for name, data in headers:
        size += 10 + len(name.encode()) + len(data)
    return size


def _qualname(exc: BaseException) -> str:
    named = getattr(exc, "error_type", None)  # a runtime condition with a short name: "late"
    if isinstance(named, str):
        return named
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
