"""`App`: what generated code declares (topics, tables and agents).

An `App` is plain declarations and can be run any number of times; each run is a `Worker`
(`worker.py`) owning one transport, the Conductor, the offset tracker and every task:
`Worker(app, transport, ...)`. The app knows nothing of workers beyond `current_worker`, the one
running it (through which `Topic.send` from hook code goes).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from .records import Codec
from .state.table import Table
from .state.window_types import Windowed, WindowSpec
from .stream import Stream
from .topic import HookSender, Join, Merge, Topic

__all__ = ["App", "Join", "Merge", "Topic"]

AgentFn = Callable[[Stream[Any]], Coroutine[Any, Any, None]]
F = TypeVar("F", bound=AgentFn)


@dataclass(frozen=True)
class Agent:
    name: str
    fn: AgentFn
    topics: tuple[Topic[Any], ...]


class App:
    """The declarations of a streamc app: its topics and agents.

    `name` is the consumer group, the prefix of internal topics and of the dead-letter topic
    `<name>-dlq`, which is declared automatically.
    """

    def __init__(self, name: str) -> None:
        if not name:
            raise ValueError("an app needs a name")
        self.name = name
        self.topics: dict[str, Topic[Any]] = {}
        self.agents: list[Agent] = []
        self.tables: dict[str, Table[Any, Any]] = {}
        self.current_worker: HookSender | None = None
        self.dlq: Topic[bytes] = self.topic(
            f"{name}-dlq", key_type=bytes, value_type=bytes, partitions=1, internal=True
        )

    def topic(
        self,
        name: str,
        *,
        key_type: Any = bytes,
        value_type: Any = bytes,
        partitions: int = 1,
        internal: bool = False,
        positions: bool = False,
        config: Mapping[str, str] | None = None,
        timestamp_field: str | None = None,
    ) -> Topic[Any]:
        """Declare a topic by its real Kafka name; it is created at start if absent (with
        `config`). `positions`: forwards to it carry their source position (an aggregation
        reads what is written to it). `timestamp_field`: the record field (a `Time`) giving
        an element's event time; when null, or without one, the message timestamp."""
        if partitions < 1:
            raise ValueError(f"topic {name!r}: partitions must be >= 1")
        existing = self.topics.get(name)
        if existing is not None:
            if (existing.key_type, existing.value_type, existing.partitions) != (
                key_type or bytes,
                value_type or bytes,
                partitions,
            ):
                raise ValueError(f"topic {name!r} is already declared with other types")
            existing.positions = existing.positions or positions
            existing.timestamp_field = existing.timestamp_field or timestamp_field
            return existing
        topic: Topic[Any] = Topic(
            self,
            name,
            key_type,
            value_type,
            partitions,
            internal,
            positions,
            config,
            timestamp_field,
        )
        self.topics[name] = topic
        return topic

    def table(
        self,
        name: str,
        *,
        key_type: Any,
        value_type: Any,
        state_type: Any = None,
        partitions: int | None = None,
        window: WindowSpec | None = None,
        source: Topic[Any] | None = None,
        global_: bool = False,
    ) -> Table[Any, Any]:
        """Declare a keyed table, filled by one `Stream.aggregate`; its changelog topic
        `<app>-<name>-changelog` is compacted and has the table's partitions. With `window`
        (`Tumbling`, `Hopping`, `Session`) it holds one state per key and window.

        With `source`, a table over that topic instead (for `Stream.join`): its rows are the
        topic's records, the last per key, a null value deleting the key; the topic is its
        changelog and nothing aggregates into it. `global_`: every worker holds all of it."""
        if name in self.tables:
            raise ValueError(f"app {self.name!r} already has a table named {name!r}")
        if source is not None:
            return self._source_table(name, key_type, value_type, source, global_)
        if global_:
            raise ValueError(f"table {name!r}: only a table over a topic (source=) is global")
        if state_type is None or partitions is None:
            raise ValueError(f"table {name!r}: an aggregated table needs state_type, partitions")
        if partitions < 1:
            raise ValueError(f"table {name!r}: partitions must be >= 1")
        windowed = window is not None
        changelog = self.topic(
            f"{self.name}-{name}-changelog",
            # A window's store key is the key's bytes and the window start: no key type's.
            key_type=bytes if windowed else key_type,
            value_type=Windowed[state_type] if windowed else state_type,
            partitions=partitions,
            internal=True,
            config={"cleanup.policy": "compact"},
        )
        table: Table[Any, Any] = Table(
            self, name, key_type, value_type, state_type, partitions, changelog, window
        )
        self.tables[name] = table
        return table

    def _source_table(
        self, name: str, key_type: Any, value_type: Any, source: Topic[Any], global_: bool
    ) -> Table[Any, Any]:
        if (source.key_type, source.value_type) != (key_type, value_type):
            raise ValueError(
                f"table {name!r}: topic {source.name!r} holds {source.key_type!r} keys and "
                f"{source.value_type!r} values, not {key_type!r} and {value_type!r}"
            )
        # A null value deletes the key: the table's readers decode it as None, never as a
        # record the dead-letter topic would get.
        codec = source.value_codec
        source.value_codec = Codec(
            codec.type, codec.encode, partial(_or_none, codec.decode), codec.decode_bytes
        )
        table: Table[Any, Any] = Table(
            self,
            name,
            key_type,
            value_type,
            value_type,
            source.partitions,
            source,
            source=source,
            global_=global_,
        )
        self.tables[name] = table
        return table

    def agent(self, source: Topic[Any] | Merge, *, name: str | None = None) -> Callable[[F], F]:
        """Register `async def agent(stream)`, run on the stream of `source`."""
        topics = source.topics if isinstance(source, Merge) else (source,)

        def register(fn: F) -> F:
            agent_name = name or fn.__name__
            if any(a.name == agent_name for a in self.agents):
                raise ValueError(f"app {self.name!r} already has an agent named {agent_name!r}")
            self.agents.append(Agent(agent_name, fn, topics))
            return fn

        return register


def _or_none(decode: Callable[[bytes], Any], data: bytes | None) -> Any:
    return None if data is None else decode(data)
