"""Event time and stream time, shared by the time-aware operators (windowed aggregation,
`distinct`, stream-stream joins): where an element's event time comes from (a record field or
the message timestamp), the skip map entry that keeps a partition's stream time
(`STREAM_TIME`), and the error of a record that arrives after its windows closed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from ..records import to_ms

if TYPE_CHECKING:
    from ..events import Event
    from ..stream import Stream

__all__ = ["STREAM_TIME", "LateError", "event_time_of"]

# The skip map entry holding the partition's stream time (ms): not "<topic>:<partition>".
STREAM_TIME = "streamc.stream_time"
_NO_TIME = -(2**62)  # stream time before any event


class LateError(Exception):
    """A record whose every window has closed (dead-lettered as `streamc.error.type: late`)."""

    error_type = "late"


def event_time_of(field: str | None) -> Callable[[Any, Event[Any, Any]], int]:
    """How the event time of an element is found: its record's `field` when set and not
    null, else its message's timestamp."""
    if field is None:
        return lambda value, event: event.message.timestamp

    def from_field(value: Any, event: Event[Any, Any]) -> int:
        t = getattr(value, field, None)
        return event.message.timestamp if t is None else to_ms(t)

    return from_field


def _timestamp_field(node: Stream[Any] | None) -> str | None:
    """The timestamp field declared on a topic this stream reads, directly or upstream."""
    while node is not None:
        for topic in node._source.topics:
            field = getattr(topic, "timestamp_field", None)
            if field is not None:
                return cast(str, field)
        node = node._up
    return None
