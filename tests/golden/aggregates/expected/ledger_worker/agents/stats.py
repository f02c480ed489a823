"""Agent "stats": from orders | group_by account_id | aggregate stats { account = key, orders = count(), tipped = count(tip), units = sum(quantity), amount = sum(amount), tips = sum(tip), smallest = min(amount), largest_tip = max(tip), lowest_id = min(id), highest_id = max(id), mean = avg(amount * quantity), mean_tip = avg(tip), first_id = first(id), first_country = first(customer.country), last_country = last(customer.country), longest_id = reduce(longer, \"\"), units_seen = reduce(add_units, []) } | to stats_changes"""

from inspect import isawaitable

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import Order, Stats, StatsState
from ..hooks.hooks import add_units, longer


def by_account_id(order: Order) -> str:
    """group_by account_id"""
    return order.account_id


async def fold_stats(state: StatsState, order: Order) -> StatsState:
    """stats { account = key, orders = count(), tipped = count(tip), units = sum(quantity), amount = sum(amount), tips = sum(tip), smallest = min(amount), largest_tip = max(tip), lowest_id = min(id), highest_id = max(id), mean = avg(amount * quantity), mean_tip = avg(tip), first_id = first(id), first_country = first(customer.country), last_country = last(customer.country), longest_id = reduce(longer, \"\"), units_seen = reduce(add_units, []) }"""
    state.orders += 1
    if order.tip is not None:
        state.tipped += 1
    state.units += order.quantity
    state.amount += order.amount
    if order.tip is not None:
        state.tips += order.tip
    if state.smallest is None or order.amount < state.smallest:
        state.smallest = order.amount
    if order.tip is not None and (state.largest_tip is None or order.tip > state.largest_tip):
        state.largest_tip = order.tip
    if state.lowest_id is None or order.id < state.lowest_id:
        state.lowest_id = order.id
    if state.highest_id is None or order.id > state.highest_id:
        state.highest_id = order.id
    state.mean_sum += order.amount * order.quantity
    state.mean_count += 1
    if order.tip is not None:
        state.mean_tip_sum += order.tip
        state.mean_tip_count += 1
    if state.first_id is None:
        state.first_id = order.id
    if not state.first_country_seen:
        state.first_country = None if order.customer is None else order.customer.country
        state.first_country_seen = True
    state.last_country = None if order.customer is None else order.customer.country
    longest_id = longer(state.longest_id, order)
    state.longest_id = await longest_id if isawaitable(longest_id) else longest_id
    state.units_seen = await add_units(state.units_seen, order)
    return state


def row_stats(key: str, state: StatsState) -> Stats:
    """A new row of table stats."""
    assert (
        state.smallest is not None
        and state.lowest_id is not None
        and state.highest_id is not None
        and state.first_id is not None
    )
    return Stats(
        account=key,
        orders=state.orders,
        tipped=state.tipped,
        units=state.units,
        amount=state.amount,
        tips=state.tips,
        smallest=state.smallest,
        largest_tip=state.largest_tip,
        lowest_id=state.lowest_id,
        highest_id=state.highest_id,
        mean=state.mean_sum / state.mean_count,
        mean_tip=state.mean_tip_sum / state.mean_tip_count if state.mean_tip_count else None,
        first_id=state.first_id,
        first_country=state.first_country,
        last_country=state.last_country,
        longest_id=state.longest_id,
        units_seen=state.units_seen,
    )


@app.agent(topics.orders, name="stats")
async def stats(stream: Stream[Order]) -> None:
    async for run in (
        stream.group_by(by_account_id, topic=topics.ledger_stats_orders_account_id_repartition)
        .aggregate(
            topics.stats,
            fold=fold_stats,
            row=row_stats,
            returns={"longest_id": (longer, str), "units_seen": (add_units, list[int])},
        )
        .runs()
    ):
        for value in run:
            run.send(topics.stats_changes, value)
