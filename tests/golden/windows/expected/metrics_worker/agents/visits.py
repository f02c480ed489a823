"""Agent "visits": from orders | group_by account_id | aggregate visits window session 30m grace 1m emit final { account_id = key, started = window.start, ended = window.end, orders = count(), mean = avg(amount), first_id = first(id), last_id = last(id), first_paid = min(paid_at) } | to visit_totals"""

from streamc_runtime import Stream, Window

from .. import topics
from ..app import app
from ..records import Order, Visit, VisitsState


def by_account_id(order: Order) -> str:
    """group_by account_id"""
    return order.account_id


def fold_visits(state: VisitsState, order: Order) -> VisitsState:
    """visits window session 30m grace 1m emit final { account_id = key, started = window.start, ended = window.end, orders = count(), mean = avg(amount), first_id = first(id), last_id = last(id), first_paid = min(paid_at) }"""
    state.orders += 1
    state.mean_sum += order.amount
    state.mean_count += 1
    if state.first_id is None:
        state.first_id = order.id
    state.last_id = order.id
    if order.paid_at is not None and (state.first_paid is None or order.paid_at < state.first_paid):
        state.first_paid = order.paid_at
    return state


def row_visits(key: str, window: Window, state: VisitsState) -> Visit:
    """A new row of table visits."""
    assert state.first_id is not None and state.last_id is not None
    return Visit(
        account_id=key,
        started=window.start,
        ended=window.end,
        orders=state.orders,
        mean=state.mean_sum / state.mean_count,
        first_id=state.first_id,
        last_id=state.last_id,
        first_paid=state.first_paid,
    )


def merge_visits(a: VisitsState, b: VisitsState) -> VisitsState:
    """The state of two sessions of table visits that an event joins: a the earlier."""
    a.orders += b.orders
    a.mean_sum += b.mean_sum
    a.mean_count += b.mean_count
    if a.first_id is None:
        a.first_id = b.first_id
    a.last_id = b.last_id
    if a.first_paid is None or (b.first_paid is not None and b.first_paid < a.first_paid):
        a.first_paid = b.first_paid
    return a


@app.agent(topics.orders, name="visits")
async def visits(stream: Stream[Order]) -> None:
    async for run in (
        stream.group_by(by_account_id, topic=topics.metrics_visits_orders_account_id_repartition)
        .aggregate(
            topics.visits, fold=fold_visits, row=row_visits, emit="final", merge=merge_visits
        )
        .runs()
    ):
        for visit in run:
            run.send(topics.visit_totals, visit)
