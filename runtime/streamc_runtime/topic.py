"""`Topic` (a Kafka topic with its key and value types) and `Merge` (`t1 & t2`).

Declared through `App.topic`. A topic knows its app only as the owner of the running worker that
`Topic.send` goes through (`TopicOwner`), so this module depends on neither `app` nor `worker`.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from .records import Codec, key_codec, value_codec
from .transport import Delivery, TransportError

__all__ = ["HookSender", "Join", "Merge", "Topic", "TopicOwner"]

V = TypeVar("V")


class HookSender(Protocol):
    """What `Topic.send` needs of the running worker (`Worker` is one)."""

    sent: int
    sent_to: defaultdict[str, int]

    async def send_or_stop(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        partition: int | None,
    ) -> Awaitable[Delivery] | None: ...

    def lose_output(self, exc: BaseException) -> None: ...

    def _hook_send_done(self, fut: asyncio.Future[Any]) -> None: ...


class TopicOwner(Protocol):
    """What a topic needs of its app (`App` is one): the worker running it, if any."""

    name: str
    current_worker: HookSender | None


class Topic(Generic[V]):
    """A Kafka topic with its key and value types. Create with `App.topic`."""

    def __init__(
        self,
        app: TopicOwner,
        name: str,
        key_type: Any,
        value_type: Any,
        partitions: int,
        internal: bool,
        positions: bool = False,
        config: Mapping[str, str] | None = None,
        timestamp_field: str | None = None,
    ) -> None:
        self.app = app
        # The record field holding the event time (`time`), else the message timestamp.
        self.timestamp_field = timestamp_field
        self.name = name
        # Whether forwards to this topic carry their source position (an aggregation reads
        # it, directly or further down: the skip rule needs the original input's position).
        self.positions = positions
        self.config: Mapping[str, str] = dict(config or {})  # topic configs at creation
        self.key_type = bytes if key_type is None else key_type
        self.value_type = bytes if value_type is None else value_type
        self.partitions = partitions
        self.internal = internal
        self.key_codec: Codec[Any] = key_codec(self.key_type)
        self.value_codec: Codec[Any] = value_codec(self.value_type)

    def __and__(self, other: Topic[V] | Merge) -> Merge:
        return Merge((self,)) & other

    async def send(
        self,
        value: V,
        *,
        key: Any = None,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int | None = None,
    ) -> Awaitable[Delivery]:
        """Send from hook code while the app runs; await the result for durability."""
        worker = self.app.current_worker
        if worker is None:
            raise RuntimeError(f"topic {self.name!r}: the app is not running")
        aw = await worker.send_or_stop(
            self.name,
            self.value_codec.encode(value),
            self.key_codec.encode(key),
            headers,
            partition,
        )
        if aw is None:
            # Which message the hook is handling is unknown here: no commit may pass it, so
            # none is made any more (the next owner redoes the uncommitted work).
            worker.lose_output(TransportError(f"topic {self.name!r}: send failed"))
            raise TransportError(f"topic {self.name!r}: send failed; the worker is stopping")
        worker.sent += 1
        worker.sent_to[self.name] += 1
        # The send's source message may be acked (and committable) before the delivery fails:
        # a failure stops every later commit (the commit's flush also reports it on Kafka).
        fut = aw if isinstance(aw, asyncio.Future) else asyncio.ensure_future(aw)
        fut.add_done_callback(worker._hook_send_done)
        # The transport may return its client's own future, which must not be cancelled (the
        # flush would lose sight of a failure): a caller's timeout cancels only the shield.
        if not fut.done():
            return asyncio.shield(fut)
        return fut

    def __repr__(self) -> str:
        return f"<Topic {self.name} key={self.key_type!r} value={self.value_type!r}>"


@dataclass(frozen=True)
class Merge:
    """`t1 & t2 & ...`: one stream delivering from every topic (a merge, not a join)."""

    topics: tuple[Topic[Any], ...]

    def __and__(self, other: Topic[Any] | Merge) -> Merge:
        more = other.topics if isinstance(other, Merge) else (other,)
        return Merge(self.topics + tuple(t for t in more if t not in self.topics))


Join = Merge  # the former name, kept for code generated before the rename
