"""The topology of a checked program, as Mermaid or Graphviz dot text.

An agent is drawn as the chain of steps the runtime really runs: every `group_by` and
`through` writes to a topic and a new step reads it back, so those topics sit between the
steps. Node identifiers come from the program's names (never counters over the whole file), so
diagrams stay stable as the program grows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from . import ir
from .diagnostics import escape_bidi

Format = Literal["mermaid", "dot"]


@dataclass(frozen=True)
class Node:
    id: str
    label: str
    kind: Literal["topic", "internal", "dlq", "step", "sink", "table"]


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str = ""
    dashed: bool = False


@dataclass
class Topology:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def add(self, node: Node) -> str:
        self.nodes.setdefault(node.id, node)
        return node.id


def _node_id(prefix: str, name: str) -> str:
    return prefix + "_" + re.sub(r"[^0-9A-Za-z_]", "_", name)


def describe(op: ir.Op) -> str:
    """An operation as the source would write it."""
    match op:
        case ir.Process(hooks=hooks):
            return "process " + ", ".join(hooks)
        case ir.GroupBy(field=path, hook=hook):
            return "group_by " + (hook if hook is not None else ".".join(path or ()))
        case ir.Take(n=n, within_seconds=within):
            return f"take {n}" + ("" if within is None else f" within {within:g}s")
        case ir.Enumerate(start=start):
            return "enumerate" + ("" if start == 0 else f" {start}")
        case ir.Through(topic=topic):
            return f"through {topic}"
        case ir.Echo(topics=topics):
            return "echo " + ", ".join(topics)
        case ir.Where(text=text):
            return f"where {text}"
        case ir.Filter(hook=hook):
            return f"filter {hook}"
        case ir.Items():
            return "items"
        case ir.Events():
            return "events"
        case ir.To(topic=topic):
            return f"to {topic}"
        case ir.Sink(hook=hook):
            return f"sink {hook}"
        case ir.Aggregate(table=table, window=None):
            return f"aggregate {table}"
        case ir.Aggregate(table=table, window=window, emit=emit):
            assert window is not None
            return f"aggregate {table} window {window.text} emit {emit}"
        case ir.Distinct(text=text) | ir.JoinStream(text=text):
            return text
        case ir.Select(record=record):
            return f"select {record}"
        case ir.Join(table=table, field=field, left=left):
            on = "key" if field is None else ".".join(field)
            return f"{'left ' if left else ''}join {table} on {on}"
    raise AssertionError(op)


def topology(program: ir.Program) -> Topology:
    graph = Topology()
    topic_ids: dict[str, str] = {}
    for topic in program.topics:
        kind: Literal["topic", "internal"] = "internal" if topic.kind == "repartition" else "topic"
        node = Node(_node_id("topic", topic.name), topic.kafka_name, kind)
        topic_ids[topic.name] = graph.add(node)
    dlq = graph.add(Node("dlq", f"{program.app}-dlq", "dlq"))
    for table in program.tables:
        # A table, and the compacted changelog topic that holds it across restarts.
        label = f"table {table.name}"
        if table.window is not None:
            label += f"\nwindow {table.window.text}"
        if table.global_:
            label += "\nglobal"
        table_id = graph.add(Node(_node_id("table", table.name), label, "table"))
        topic_ids[f"table {table.name}"] = table_id
        if table.source is not None:
            # Its rows are the topic's records: the topic fills it.
            graph.edges.append(Edge(topic_ids[table.source], table_id, "rows"))
            continue
        changelog = graph.add(Node(_node_id("topic", table.changelog), table.changelog, "internal"))
        graph.edges.append(Edge(table_id, changelog, "changelog", dashed=True))
    for agent in program.agents:
        _AgentSteps(graph, agent, topic_ids, dlq, program.app).draw()
    return graph


class _AgentSteps:
    """Draws one agent as its steps, split wherever it writes a topic and reads it back."""

    def __init__(self, graph: Topology, agent: ir.Agent, topic_ids: dict[str, str], dlq: str,
                 app: str):  # fmt: skip
        self.graph, self.agent, self.topic_ids, self.dlq = graph, agent, topic_ids, dlq
        self.app = app
        self.distincts = 0
        self.joins = 0  # stream joins so far (their tables are numbered per agent)
        self.step = 1
        self.reads = [topic_ids[s] for s in agent.sources]
        self.labels: list[str] = []

    @property
    def step_id(self) -> str:
        return _node_id("agent", f"{self.agent.name}_{self.step}")

    def draw(self) -> None:
        for op in self.agent.ops:
            self.labels.append(describe(op))
            match op:
                case ir.GroupBy(topic=topic) | ir.Through(topic=topic):
                    self.close_step(self.topic_ids[topic])
                case ir.Echo(topics=topics):
                    for topic in topics:
                        self.graph.edges.append(Edge(self.step_id, self.topic_ids[topic], "echo"))
                case ir.To(topic=topic):
                    self.graph.edges.append(Edge(self.step_id, self.topic_ids[topic]))
                case ir.Sink(hook=hook):
                    sink = self.graph.add(Node(_node_id("sink", hook), hook, "sink"))
                    self.graph.edges.append(Edge(self.step_id, sink))
                case ir.Aggregate(table=table, late=late):
                    table_id = self.topic_ids[f"table {table}"]
                    self.graph.edges.append(Edge(self.step_id, table_id, "aggregate"))
                    if late is not None:
                        self.graph.edges.append(Edge(self.step_id, self.topic_ids[late], "late"))
                case ir.Join(table=table):
                    table_id = self.topic_ids[f"table {table}"]
                    self.graph.edges.append(Edge(table_id, self.step_id, "join"))
                case ir.JoinStream(topic=topic, late=late):
                    # The other topic feeds the step; both sides wait in a table of its own.
                    self.graph.edges.append(Edge(self.topic_ids[topic], self.step_id, "join"))
                    self.joins += 1
                    name = f"{self.agent.name}-join-{self.joins}"
                    table_id = self.graph.add(Node(_node_id("table", name), f"join buffers {name}",
                                                   "table"))  # fmt: skip
                    changelog = f"{self.app}-{name}-changelog"
                    log_id = self.graph.add(Node(_node_id("topic", changelog), changelog,
                                                 "internal"))  # fmt: skip
                    self.graph.edges.append(Edge(self.step_id, table_id, "buffers"))
                    self.graph.edges.append(Edge(table_id, log_id, "changelog", dashed=True))
                    if late is not None:
                        self.graph.edges.append(Edge(self.step_id, self.topic_ids[late], "late"))
                case ir.Distinct():
                    # Its own table of the values seen, kept in a changelog like a table's.
                    self.distincts += 1
                    name = f"{self.agent.name}-distinct-{self.distincts}"
                    table_id = self.graph.add(Node(_node_id("table", name), f"distinct {name}",
                                                   "table"))  # fmt: skip
                    changelog = f"{self.app}-{name}-changelog"
                    log_id = self.graph.add(Node(_node_id("topic", changelog), changelog,
                                                 "internal"))  # fmt: skip
                    self.graph.edges.append(Edge(self.step_id, table_id, "distinct"))
                    self.graph.edges.append(Edge(table_id, log_id, "changelog", dashed=True))
        self.close_step(None)

    def close_step(self, writes: str | None) -> None:
        label = "\n".join([f"agent {self.agent.name}", *self.labels])
        step_id = self.graph.add(Node(self.step_id, label, "step"))
        for source in self.reads:
            self.graph.edges.append(Edge(source, step_id))
        self.graph.edges.append(Edge(step_id, self.dlq, dashed=True))
        if writes is not None:
            self.graph.edges.append(Edge(step_id, writes))
        self.reads = [writes] if writes is not None else []
        self.labels = []
        self.step += 1


def _mermaid_text(text: str) -> str:
    escaped = escape_bidi(text).replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;")
    return escaped.replace(">", "#gt;").replace("\n", "<br/>")


def _dot_text(text: str) -> str:
    return escape_bidi(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(program: ir.Program, fmt: Format = "mermaid") -> str:
    graph = topology(program)
    if fmt == "mermaid":
        shapes = {
            "topic": '[("{}")]',
            "internal": '[("{}")]',
            "dlq": '[("{}")]',
            "step": '["{}"]',
            "sink": '>"{}"]',
            "table": '[["{}"]]',
        }
        lines = ["flowchart LR"]
        for node in graph.nodes.values():
            lines.append(f"    {node.id}{shapes[node.kind].format(_mermaid_text(node.label))}")
        for edge in graph.edges:
            arrow = "-.->" if edge.dashed else "-->"
            label = f"|{_mermaid_text(edge.label)}|" if edge.label else ""
            lines.append(f"    {edge.source} {arrow}{label} {edge.target}")
        lines.append("    classDef internal stroke-dasharray: 4 2")
        lines.append("    classDef dlq stroke:#c00")
        internal = [n.id for n in graph.nodes.values() if n.kind == "internal"]
        if internal:
            lines.append(f"    class {','.join(internal)} internal")
        lines.append("    class dlq dlq")
        return "\n".join(lines) + "\n"

    shapes_dot = {
        "topic": "cylinder",
        "internal": "cylinder",
        "dlq": "cylinder",
        "step": "box",
        "sink": "cds",
        "table": "box3d",
    }
    lines = [f'digraph "{_dot_text(program.app)}" {{', "    rankdir=LR;"]
    for node in graph.nodes.values():
        style = ", style=dashed" if node.kind == "internal" else ""
        color = ', color="#cc0000"' if node.kind == "dlq" else ""
        lines.append(
            f'    {node.id} [label="{_dot_text(node.label)}", shape={shapes_dot[node.kind]}'
            f"{style}{color}];"
        )
    for edge in graph.edges:
        attrs = []
        if edge.label:
            attrs.append(f'label="{_dot_text(edge.label)}"')
        if edge.dashed:
            attrs.append("style=dashed")
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"    {edge.source} -> {edge.target}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"
