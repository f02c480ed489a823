"""A reduce hook's result is checked against its declared type after each fold: a wrong one
is dead-lettered with the hook headers, never written to the changelog (where it would break
the next restore's decoding)."""

from __future__ import annotations

from typing import Any

import msgspec
from rtkit import Order, Running
from streamc_runtime import App, Record, Stream
from streamc_runtime.state import POSITIONS_KEY


class Longest(Record, kw_only=True):
    account_id: str
    longest: str
    amounts: list[float]


class LongestState(Record, kw_only=True):
    longest: str = ""
    amounts: list[float] = msgspec.field(default_factory=list)


def longer(best: str, order: Order) -> Any:
    if order.amount < 0:
        return None  # a forgotten return: declared `-> str`
    return order.account_id * int(order.amount) if order.amount > len(best) else best


def add_amount(seen: list[float], order: Order) -> Any:
    return [*seen, order.amount]


def fold(state: LongestState, order: Order) -> LongestState:
    state.longest = longer(state.longest, order)
    state.amounts = add_amount(state.amounts, order)
    return state


def row(key: str, state: LongestState) -> Longest:
    return Longest(account_id=key, longest=state.longest, amounts=list(state.amounts))


async def test_a_reduce_result_of_the_wrong_type_is_dead_lettered_with_the_hook_headers() -> None:
    app = App("shop")
    src = app.topic("orders", key_type=str, value_type=Order, partitions=1)
    table = app.table(
        "longest", key_type=str, value_type=Longest, state_type=LongestState, partitions=1
    )

    @app.agent(src, name="longest")
    async def agent(stream: Stream[Order]) -> None:
        returns = {"longest": (longer, str), "amounts": (add_amount, list[float])}
        async for _ in stream.aggregate(table, fold=fold, row=row, returns=returns):
            pass

    r = Running(app)
    async with r:
        for amount in (2.0, -1.0, 3.0):
            r.produce("orders", Order(account_id="a", amount=amount), key="a")
        await r.idle()
        assert r.worker.table("longest") == {
            "a": Longest(account_id="a", longest="aaa", amounts=[2.0, 3.0])
        }
    dead = r.messages("shop-dlq")
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert headers["streamc.hook"] == b"longer"
    assert headers["streamc.hook.returns"] == b"str"
    assert headers["streamc.error.type"] == b"streamc_runtime.hooks.HookResultError"
    assert headers["streamc.source.offset"] == b"1"
    changelog = [m.value for m in r.messages("shop-longest-changelog") if m.key != POSITIONS_KEY]
    assert changelog == [
        b'{"longest":"aa","amounts":[2.0]}',
        b'{"longest":"aaa","amounts":[2.0,3.0]}',
    ]
    assert r.committed("orders") == {0: 3}
