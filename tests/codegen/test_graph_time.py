"""`streamc graph` shows what time adds: each windowed table with its window, the late topic
an aggregate writes, and each distinct's own table and changelog."""

from __future__ import annotations

from pathlib import Path

from streamc.graph import Edge, topology
from streamc.loader import load

WINDOWS = Path(__file__).resolve().parents[1] / "golden" / "windows" / "windows.sdl"


def test_graph_draws_windows_late_topics_and_distinct_changelogs() -> None:
    program = load(WINDOWS).program
    assert program is not None
    graph = topology(program)
    labels = {node.id: node.label for node in graph.nodes.values()}
    assert labels["table_minutes"] == "table minutes\nwindow tumbling 1m grace 10s"
    assert labels["table_rolling"] == "table rolling\nwindow hopping 10m every 5m"
    assert labels["table_visits"] == "table visits\nwindow session 30m grace 1m"
    assert labels["agent_per_minute_2"].splitlines()[1] == (
        "aggregate minutes window tumbling 1m grace 10s emit final"
    )
    assert Edge("agent_per_minute_2", "topic_late_orders", "late") in graph.edges
    for n in (1, 2):
        table, changelog = f"table_paid_distinct_{n}", f"topic_metrics_paid_distinct_{n}_changelog"
        assert labels[table] == f"distinct paid-distinct-{n}"
        assert graph.nodes[changelog].kind == "internal"
        assert labels[changelog] == f"metrics-paid-distinct-{n}-changelog"
        assert Edge("agent_paid_1", table, "distinct") in graph.edges
        assert Edge(table, changelog, "changelog", dashed=True) in graph.edges
    steps = labels["agent_paid_1"].splitlines()
    assert steps[1:3] == ["distinct id within 1h", "distinct within 1s"]
