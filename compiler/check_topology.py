"""Rules about the topics a program makes and how its agents connect them.

The checker proper types one pipeline at a time; the rules here need the whole program, or
Kafka's limits rather than the language's:

- every Kafka topic name the program makes (declared, named by a string, repartition, the
  dead-letter topic) fits Kafka's rules, and a partition count stays within `MAX_PARTITIONS`
  (the checker calls `kafka_name_problem` and `MAX_PARTITIONS` where it makes each name);
- W501: agents that write a topic they read, directly or through other agents: on Kafka each
  message that goes round comes back forever;
- `positions_topics`: the topics the program writes on a path into an `aggregate`, whose
  forwards must carry their source positions (docs/language.md, "Tables and aggregations");
- W502: two topic names (tables' changelogs included) that differ only by `.` against `_`:
  Kafka's metric names write both as `_`, and Kafka refuses to create the second topic once
  the first exists.

`check_topology` runs on a program that checked clean and returns warnings only.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from . import ast, ir
from .diagnostics import Diagnostic, Span

MAX_KAFKA_NAME = 249  # Kafka's own limit on a topic name's length
# Far above what one topic needs on a real cluster, and small enough for `streamc run`'s
# in-memory broker, which allocates every partition up front.
MAX_PARTITIONS = 10_000
_KAFKA_NAME_RE = re.compile(r"[A-Za-z0-9._-]+\Z")
KAFKA_NAME_RULE = f"Kafka topic names have 1 to {MAX_KAFKA_NAME} letters, digits, '.', '_' or '-'"


def kafka_name_problem(name: str) -> str | None:
    """Why `name` cannot be a Kafka topic name, or None when it can."""
    if not name or not _KAFKA_NAME_RE.match(name) or name in (".", ".."):
        return "invalid"
    if len(name) > MAX_KAFKA_NAME:
        return f"{len(name)} characters long, more than Kafka's {MAX_KAFKA_NAME}"
    return None


@dataclass(frozen=True, slots=True)  # one per source of each write: 200,000 in a 10 MB program
class _Write:
    """One step of an agent reads `source` and writes `target` (at `span`)."""

    source: str
    target: str
    agent: str
    span: Span


def check_topology(module: ast.Module, program: ir.Program) -> list[Diagnostic]:
    spans, writes = _walk(module, program)
    return [*_cycles(module.filename, program, writes), *_collisions(module, program, spans)]


def _walk(module: ast.Module, program: ir.Program) -> tuple[dict[str, Span], list[_Write]]:
    """Where each topic is first named, and every topic-to-topic write of every agent.

    The program checked clean, so each agent's IR operations match its AST ones one to one.
    An agent's pipeline runs as steps: a `group_by` or `through` writes a topic and the next
    step reads it back, so an agent that re-keys is not a loop by itself.
    """
    spans: dict[str, Span] = {}
    for decl in module.decls:
        if isinstance(decl, ast.TopicDecl):
            named = [o for o in decl.options if isinstance(o, ast.TopicKafkaName)]
            spans.setdefault(decl.name.text, named[0].name.span if named else decl.name.span)
    writes: list[_Write] = []
    # A write into a topic no step reads cannot be on a loop: only writes into topics that are
    # read somewhere are kept (a big program's repartition topics mostly feed nothing on).
    read = {t for agent in program.agents for t in _read_topics(agent)}
    # A clean program has one agent per declaration, in order (no index by name: 121,561
    # agents in a 10 MB program).
    decls = [d for d in module.decls if isinstance(d, ast.AgentDecl)]
    for decl, agent in zip(decls, program.agents, strict=True):
        reading: tuple[str, ...] = agent.sources
        for node, op in zip(decl.ops, agent.ops, strict=True):
            targets: list[tuple[str, Span]] = []
            if isinstance(op, ir.GroupBy):
                targets = [(op.topic, node.span)]
            elif isinstance(op, ir.Through | ir.To) and isinstance(node, ast.ThroughOp | ast.ToOp):
                targets = [(op.topic, node.topic.span)]
            elif isinstance(op, ir.Echo) and isinstance(node, ast.EchoOp):
                targets = [(t, ref.span) for t, ref in zip(op.topics, node.topics, strict=True)]
            elif isinstance(op, ir.Aggregate) and isinstance(node, ast.AggregateOp) and op.late:
                late = next(o for o in node.options if isinstance(o, ast.WindowLate))
                targets = [(op.late, late.topic.span)]
            elif isinstance(op, ir.JoinStream) and isinstance(node, ast.JoinStreamOp):
                if op.late is not None and node.late is not None:
                    targets = [(op.late, node.late.topic.span)]
            for target, span in targets:
                spans.setdefault(target, span)
                if target in read:
                    writes += [_Write(source, target, agent.name, span) for source in reading]
            if isinstance(op, ir.GroupBy | ir.Through):
                reading = (op.topic,)
            elif isinstance(op, ir.JoinStream):
                reading = (*reading, op.topic)  # the pairs carry the other topic's records
    return spans, writes


def _read_topics(agent: ir.Agent) -> Iterator[str]:
    """The topics an agent's steps read: its sources, and what a `group_by` or `through`
    writes and reads back, when a later step writes on from it."""
    yield from agent.sources
    ops = agent.ops
    for i, op in enumerate(ops):
        if isinstance(op, ir.GroupBy | ir.Through) and i + 1 < len(ops):
            yield op.topic
        elif isinstance(op, ir.JoinStream):
            yield op.topic


def positions_topics(topics: list[ir.Topic], agents: tuple[ir.Agent, ...]) -> set[str]:
    """The topics the program writes from which messages reach an `aggregate` step.

    An aggregation skips input it has applied by the position of the message that entered the
    program: a message the program wrote on the way (a repartition, a `through`, a `to` that
    another agent reads) must carry that position in a header, or a replay after a crash would
    count twice. Topics only outside producers write never need it.
    """
    # topic -> the topics written into it, kept for written topics only: a program makes a
    # repartition topic per `group_by`, and a set each would cost megabytes for a big program.
    fed_by: dict[str, list[str]] = {}
    into: set[str] = set()  # the topics aggregate steps read
    for agent in agents:
        reading: tuple[str, ...] = agent.sources
        for op in agent.ops:
            targets: tuple[str, ...] = ()
            if isinstance(op, ir.GroupBy | ir.Through | ir.To):
                targets = (op.topic,)
            elif isinstance(op, ir.Echo):
                targets = op.topics
            elif isinstance(op, ir.Aggregate | ir.Distinct):
                # (exact like tables: a distinct keeps its own table)
                into.update(reading)
                if isinstance(op, ir.Aggregate) and op.late is not None:
                    targets = (op.late,)
            elif isinstance(op, ir.JoinStream):
                # (a stream join buffers both sides in a table of its own)
                reading = (*reading, op.topic)
                into.update(reading)
                if op.late is not None:
                    targets = (op.late,)
            for target in targets:
                fed_by.setdefault(target, []).extend(reading)
            if isinstance(op, ir.GroupBy | ir.Through):
                reading = (op.topic,)
    # Walk back from the aggregations' inputs along the writes.
    reach: set[str] = set(into)
    todo = list(into)
    while todo:
        for source in fed_by.get(todo.pop(), ()):
            if source not in reach:
                reach.add(source)
                todo.append(source)
    return reach & fed_by.keys()


def _cycles(filename: str, program: ir.Program, writes: list[_Write]) -> list[Diagnostic]:
    """One W501 per group of topics that messages can go round, naming a shortest loop."""
    # Only topics that are written from: a topic no agent reads (most repartition topics of a
    # big program) cannot be on a loop, and a list and a visit each would cost megabytes.
    edges: dict[str, list[_Write]] = {}
    for w in writes:
        edges.setdefault(w.source, []).append(w)
    out: list[Diagnostic] = []
    for group in _loops(edges):
        # the first in program order
        start = next(t.name for t in program.topics if t.name in group)
        loop = _shortest_loop(start, edges, group)
        path = " → ".join([start, *(f"agent {w.agent} → {w.target}" for w in loop)])
        out.append(
            Diagnostic.warning(
                filename,
                loop[-1].span,
                "W501",
                f"messages written here come back to topic {start}: {path}",
                [
                    "on Kafka a message that comes back is processed again, and again: write "
                    "to another topic, unless a `where` or `filter` in the loop stops every "
                    "message"
                ],
            )
        )
    return out


def _loops(edges: dict[str, list[_Write]]) -> list[set[str]]:
    """The strongly connected groups of topics that hold a loop (Tarjan's algorithm, without
    recursion: a program may chain thousands of topics). A topic missing from `edges` writes
    nowhere, so it is a group of its own without a loop and is not visited."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(edges[node]):
                work.append((node, i + 1))
                target = edges[node][i].target
                if target in on_stack:
                    low[node] = min(low[node], index[target])
                elif target not in index and target in edges:
                    work.append((target, 0))
                continue
            if work:  # back in the caller: pass the lowest link up
                caller = work[-1][0]
                low[caller] = min(low[caller], low[node])
            if low[node] == index[node]:
                group: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1 or any(w.target == node for w in edges[node]):
                    groups.append(group)
    return groups


def _shortest_loop(start: str, edges: dict[str, list[_Write]], group: set[str]) -> list[_Write]:
    """The writes of a shortest path from `start` back to itself (breadth first)."""
    came: dict[str, _Write] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for w in edges[node]:
            if w.target == start:
                loop = [w]
                while node != start:
                    loop.append(came[node])
                    node = came[node].source
                return loop[::-1]
            if w.target in group and w.target not in came:
                came[w.target] = w
                queue.append(w.target)
    raise AssertionError(f"{start} is in a loop")  # callers pass a topic that reaches itself


def _collisions(
    module: ast.Module, program: ir.Program, spans: dict[str, Span]
) -> list[Diagnostic]:
    """W502 for each topic whose name, with '.' written as '_', an earlier one already has."""
    named = [(t.kafka_name, spans.get(t.name)) for t in program.topics]
    tables = {d.name.text: d.name.span for d in module.decls if isinstance(d, ast.TableDecl)}
    named += [(t.changelog, tables.get(t.name)) for t in program.tables]
    apps = [d for d in module.decls if isinstance(d, ast.AppDecl)]
    named.append((f"{program.app}-dlq", apps[0].name.span if apps else None))
    first: dict[str, str] = {}
    out: list[Diagnostic] = []
    for name, span in named:
        metric = name.replace(".", "_")
        other = first.setdefault(metric, name)
        if other != name:
            out.append(
                Diagnostic.warning(
                    module.filename,
                    span,
                    "W502",
                    f"Kafka topic '{name}' collides with '{other}': Kafka's metric names "
                    f"write both as '{metric}'",
                    [
                        "Kafka refuses to create one of them once the other exists; "
                        "rename one of them"
                    ],
                )
            )
    return out
