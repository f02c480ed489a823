"""Agent "counts": from orders | aggregate counts { orders = count() } | where orders >= 2 | to big_counts"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import Count, CountsState, Order


def counts_where(count: Count) -> bool:
    """where orders >= 2"""
    return count.orders >= 2


def fold_counts(state: CountsState, order: Order) -> CountsState:
    """counts { orders = count() }"""
    state.orders += 1
    return state


def row_counts(key: str, state: CountsState) -> Count:
    """A new row of table counts."""
    return Count(orders=state.orders)


@app.agent(topics.orders, name="counts")
async def counts(stream: Stream[Order]) -> None:
    async for run in stream.aggregate(topics.counts, fold=fold_counts, row=row_counts).runs():
        for count in run:
            if not counts_where(count):
                continue
            run.send(topics.big_counts, count)
