"""`streamc graph` shows what joins add: a table over a topic fed by that topic (no changelog
of its own), and an edge from the table into each step that joins it; a stream join's other
topic feeding the step, and the buffers it keeps in a table with a changelog."""

from __future__ import annotations

from pathlib import Path

from streamc.graph import Edge, topology
from streamc.loader import load

JOINS = Path(__file__).resolve().parents[1] / "golden" / "joins" / "joins.sdl"


def test_graph_draws_source_tables_and_an_edge_from_the_table_into_the_join() -> None:
    program = load(JOINS).program
    assert program is not None
    graph = topology(program)
    labels = {node.id: node.label for node in graph.nodes.values()}
    assert labels["table_regions_by_code"] == "table regions_by_code\nglobal"
    assert Edge("topic_accounts", "table_accounts_by_id", "rows") in graph.edges
    assert Edge("table_accounts_by_id", "agent_enriched_1", "join") in graph.edges
    assert Edge("table_regions_by_code", "agent_regional_1", "join") in graph.edges
    assert not any(
        "changelog" in node_id and ("accounts" in node_id or "regions" in node_id)
        for node_id in graph.nodes
    )
    assert labels["agent_enriched_1"].splitlines()[1] == "left join accounts_by_id on key"


def test_graph_draws_a_stream_join_the_topic_it_reads_and_its_buffers() -> None:
    program = load(JOINS).program
    assert program is not None
    graph = topology(program)
    labels = {node.id: node.label for node in graph.nodes.values()}
    step = "agent_settled_1"
    assert labels[step].splitlines()[1] == (
        "left join stream payments as payment within 5m grace 30s late to late_orders"
    )
    assert Edge("topic_payments", step, "join") in graph.edges
    assert Edge("topic_orders", step) in graph.edges
    assert Edge(step, "table_settled_join_1", "buffers") in graph.edges
    assert labels["table_settled_join_1"] == "join buffers settled-join-1"
    assert (
        Edge("table_settled_join_1", "topic_enrich_settled_join_1_changelog", "changelog", True)
        in graph.edges
    )
    assert Edge(step, "topic_late_orders", "late") in graph.edges
