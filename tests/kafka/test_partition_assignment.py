"""How the worker's consumer group spreads partitions: co-partitioned topics land together.

A join with a co-partitioned table (and an aggregate over `a & b`) reads partition q of every
input topic on the worker that holds partition q of the table, so the group's assignor must
give each member the same partitions of every topic with the same partition count. Run
against aiokafka's own assignor code with the members and topics of the orders sample: no
broker needed.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.coordinator.assignors.roundrobin import (  # type: ignore[import-untyped]
    RoundRobinPartitionAssignor,
)
from streamc_runtime.kafka import ASSIGNORS

# The orders sample's group: orders and accounts (the joined table's topic) have 4 partitions
# each, withdrawals 2, and the repartition topics the 4 of orders.
TOPICS = {
    "orders": 4,
    "accounts": 4,
    "withdrawals": 2,
    "orders-totals-orders-account_id-repartition": 4,
    "orders-account_totals-orders-account_id-repartition": 4,
}


class Cluster:
    """The one method of aiokafka's ClusterMetadata that an assignor calls."""

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(TOPICS[topic]))


def assign(assignor: Any, members: int) -> dict[tuple[str, int], str]:
    """Who gets each (topic, partition) when `members` workers subscribe to every topic."""
    subscription = {
        f"worker-{n}-{'abc'[n]}": assignor.metadata(sorted(TOPICS)) for n in range(members)
    }
    owners: dict[tuple[str, int], str] = {}
    for member, assignment in assignor.assign(Cluster(), subscription).items():
        for topic, partitions in assignment.assignment:
            for p in partitions:
                assert (topic, p) not in owners
                owners[(topic, p)] = member
    assert len(owners) == sum(TOPICS.values())  # every partition has one owner
    return owners


def split(owners: dict[tuple[str, int], str]) -> list[tuple[str, int]]:
    """The partitions whose owner is not the owner of the same partition of orders."""
    return [(t, p) for (t, p), member in owners.items()
            if TOPICS[t] == TOPICS["orders"] and owners[("orders", p)] != member]  # fmt: skip


@pytest.mark.parametrize("members", [1, 2, 3])
def test_the_worker_assignor_puts_partition_q_of_co_partitioned_topics_on_one_worker(
    members: int,
) -> None:
    (assignor,) = ASSIGNORS
    owners = assign(assignor, members)
    assert split(owners) == []
    # And the work is spread: every worker holds some partition of orders.
    assert len({owners[("orders", p)] for p in range(4)}) == members


def test_round_robin_the_aiokafka_default_splits_co_partitioned_topics() -> None:
    # Why the worker does not keep aiokafka's default: it deals every topic's partitions out
    # in one sequence, so with 3 workers an order's account is held by another worker than
    # the one reading the order (with 2, whenever a topic of odd count sorts in between).
    assert ("accounts", 1) in split(assign(RoundRobinPartitionAssignor, 3))
