"""Hook results checked against their declared types (`returns=`): a mismatch dead-letters the
element at the operation that called the hook, with headers naming the hook and the type."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import msgspec
import pytest
from rtkit import Order, Running
from streamc_runtime import App, Record, Stream, Time
from streamc_runtime.hooks import HookResultError, result_check


class Customer(Record, kw_only=True):
    id: str
    country: str | None = None


class Account(Record, kw_only=True):
    id: int
    balance: float
    owner: Customer | None = None
    tags: list[str] = msgspec.field(default_factory=list)


@pytest.mark.parametrize(
    ("declared", "value", "got"),
    [
        (str, None, "None"),
        (str, {"a": 1}, "dict"),
        (str, 1, "int"),
        (int, 1.9, "float"),
        (int, True, "bool"),
        (int, "1", "str"),
        (float, True, "bool"),
        (bool, None, "None"),
        (bool, "NL", "str"),
        (Account, None, "None"),
        (Account, {"id": 1, "balance": 2.0}, "dict"),
        (Account, "account", "str"),
        (Account, Order(account_id="a", amount=1.0), "Order"),
        (Account, Account(id="1", balance=1.0), "Account"),  # type: ignore[arg-type]
        (Account, Account(id=1, balance=1.0, owner=Customer(id=7)), "Account"),  # type: ignore[arg-type]
        (Account, Account(id=1, balance=1.0, tags=[1]), "Account"),  # type: ignore[list-item]
        (list[Account], [Account(id=1, balance=1.0), {"id": 2}], "list"),
        (Account | None, "x", "str"),
    ],
)
def test_a_result_of_another_type_is_a_mismatch(declared: Any, value: Any, got: str) -> None:
    check = result_check(declared, "hook_fn")
    with pytest.raises(HookResultError, match=f"^hook 'hook_fn' returned {got}, declared ") as err:
        check(value)
    assert err.value.hook == "hook_fn"


@pytest.mark.parametrize(
    ("declared", "value", "result"),
    [
        (str, "a", "a"),
        (int, 3, 3),
        (float, 2, 2.0),  # an int is a fine float, and keys of equal value encode alike
        (float, 2.5, 2.5),
        (bool, False, False),
        (bytes, b"x", b"x"),
        (Account | None, None, None),
        (list[str], ["a"], ["a"]),
    ],
)
def test_a_result_of_the_declared_type_passes(declared: Any, value: Any, result: Any) -> None:
    out = result_check(declared, "h")(value)
    assert out == result and type(out) is type(result)


def test_a_record_result_passes_as_the_same_object() -> None:
    account = Account(id=1, balance=2, owner=Customer(id="c"), tags=["t"])  # int balance: fine
    assert result_check(Account, "h")(account) is account
    batch = [account, Account(id=2, balance=0.5)]
    assert result_check(list[Account], "h")(batch) is batch


def test_mismatch_message_names_the_field() -> None:
    with pytest.raises(HookResultError) as err:
        result_check(Account, "h")(Account(id=1, balance=1.0, owner=Customer(id=7)))  # type: ignore[arg-type]
    assert str(err.value) == (
        "hook 'h' returned Account, declared Account: Expected `str`, got `int` - at `$.owner.id`"
    )
    assert err.value.expected == "Account"
    assert result_check(Account | None, "h").__name__  # builds for optionals


async def test_ill_typed_results_dead_letter_at_process_filter_and_group_by() -> None:
    app = App("t")
    orders = app.topic("orders", key_type=str, value_type=Order)
    out = app.topic("out", key_type=str, value_type=Order)
    repart = app.topic("t-a-orders-k-repartition", key_type=int, value_type=Order, internal=True)
    got: list[Order] = []

    def reprice(order: Order) -> Any:
        return {"n": None, "d": {"account_id": "d"}, "s": "s"}.get(order.account_id, order)

    def keep(order: Order) -> Any:
        return None if order.account_id == "f" else True

    def key_of(order: Order) -> Any:
        return {"k": 1.9, "b": True}.get(order.account_id, 7)

    @app.agent(orders, name="a")
    async def agent(stream: Stream[Order]) -> None:
        async for order in (
            stream.process(reprice, returns=(Order,))
            .filter(keep, returns=bool)
            .group_by(key_of, topic=repart, returns=int)
            .through(out)
        ):
            got.append(order)

    async with Running(app) as r:
        for account in ["ok", "n", "d", "s", "f", "k", "b", "last"]:
            r.produce("orders", {"account_id": account, "amount": 1.0}, partition=0)
        await r.idle()
        await r.worker.commit()
    assert [o.account_id for o in got] == ["ok", "last"]
    assert [m.key for m in r.messages("t-a-orders-k-repartition")] == [b"7", b"7"]
    dead = [
        (msgspec.json.decode(m.value)["account_id"], dict(m.headers)) for m in r.messages("t-dlq")
    ]
    assert [(a, h["streamc.hook"], h["streamc.hook.returns"]) for a, h in dead] == [
        ("n", b"reprice", b"Order"),
        ("d", b"reprice", b"Order"),
        ("s", b"reprice", b"Order"),
        ("f", b"keep", b"bool"),
        ("k", b"key_of", b"int"),
        ("b", b"key_of", b"int"),
    ]
    assert all(h["streamc.agent"] == b"a" for _, h in dead)
    assert r.committed("orders") == {0: 8}


async def test_without_returns_results_are_not_checked() -> None:
    app = App("t")
    orders = app.topic("orders", key_type=str, value_type=Order)
    got: list[Any] = []

    @app.agent(orders, name="a")
    async def agent(stream: Stream[Order]) -> None:
        async for value in stream.process(lambda o: o.account_id).filter(lambda v: v):
            got.append(value)

    async with Running(app) as r:
        r.produce("orders", {"account_id": "x", "amount": 1.0})
        await r.idle()
    assert got == ["x"]
    assert r.messages("t-dlq") == []


def test_process_needs_one_declared_type_per_processor() -> None:
    with pytest.raises(ValueError, match="2 processors but 1 result types"):
        Stream.process(object.__new__(Stream), str, str, returns=(str,))


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ([1, Account(id=1, balance=1.0)], "list"),
        ((1,), "tuple"),
        ((1, Account(id=1, balance=1.0), 2), "tuple"),
        ((1.5, Account(id=1, balance=1.0)), "tuple"),
        ((1, {"id": 1, "balance": 1.0}), "tuple"),
        ((1, Account(id="1", balance=1.0)), "tuple"),  # type: ignore[arg-type]
        (None, "None"),
    ],
)
def test_a_processor_declared_to_return_a_tuple_has_its_items_checked(value: Any, got: str) -> None:
    check = result_check(tuple[int, Account], "pair_up")
    with pytest.raises(HookResultError, match=f"^hook 'pair_up' returned {got}, declared "):
        check(value)
    pair = (1, Account(id=1, balance=1.0))
    assert check(pair) is pair
    assert result_check(tuple[str, int], "h")(("a", 1)) == ("a", 1)


async def test_a_processor_returning_a_tuple_runs_and_its_pairs_reach_the_body() -> None:
    """`process pairs` after `enumerate`, declared `-> (int, Order)`: a valid program the
    checker accepts, so building its check must not stop the agent."""
    app = App("t")
    orders = app.topic("orders", key_type=str, value_type=Order)
    got: list[tuple[int, str]] = []

    def pair_up(pair: tuple[int, Order]) -> Any:
        n, order = pair
        return [n, order] if order.account_id == "bad" else (n * 10, order)

    @app.agent(orders, name="a")
    async def agent(stream: Stream[Order]) -> None:
        async for n, order in stream.enumerate().process(pair_up, returns=(tuple[int, Order],)):
            got.append((n, order.account_id))

    async with Running(app) as r:
        for account in ["x", "bad", "y"]:
            r.produce("orders", {"account_id": account, "amount": 1.0}, partition=0)
        await r.idle()
        await r.worker.commit()
        assert r.worker.failure is None
    assert got == [(0, "x"), (20, "y")]
    (dead,) = r.messages("t-dlq")
    assert dict(dead.headers)["streamc.hook.returns"] == b"tuple[int, Order]"
    assert r.committed("orders") == {0: 3}


class Visit(Record, kw_only=True):
    user: str
    at: Time
    left: Time | None = None


_PLUS_2 = _dt.timezone(_dt.timedelta(hours=2))


def test_a_time_result_is_any_aware_datetime_and_becomes_a_time_at_the_same_instant() -> None:
    check = result_check(Time, "stamp")
    t = Time.from_ms(1_772_366_400_250)
    assert check(t) is t
    plain = _dt.datetime(2026, 3, 1, 14, 0, 0, 250_000, tzinfo=_PLUS_2)
    out = check(plain)
    assert type(out) is Time and out.ms == 1_772_366_400_250
    assert result_check(Time | None, "stamp")(plain) is plain
    with pytest.raises(HookResultError, match=r"^hook 'stamp' returned datetime, declared Time"):
        check(_dt.datetime(2026, 3, 1, 12, 0))  # naive: no instant
    with pytest.raises(HookResultError, match="returned int, declared Time"):
        check(1_772_366_400_000)


def test_a_record_holding_time_fields_passes_as_the_same_object() -> None:
    check = result_check(Visit, "visit")
    visit = Visit(user="u", at=Time.from_ms(5), left=Time.from_ms(9))
    assert check(visit) is visit
    aware = Visit(user="u", at=_dt.datetime(2026, 3, 1, tzinfo=_PLUS_2))  # type: ignore[arg-type]
    assert check(aware) is aware
    assert result_check(list[Visit], "visit")([visit, aware]) == [visit, aware]
    with pytest.raises(HookResultError, match=r"with an offset.*at `\$\.at`"):
        check(Visit(user="u", at=_dt.datetime(2026, 3, 1)))  # type: ignore[arg-type]
    with pytest.raises(HookResultError, match=r"at `\$\.left`"):
        check(Visit(user="u", at=visit.at, left="soon"))  # type: ignore[arg-type]


def test_plain_records_are_checked_field_by_field_and_others_by_msgspec() -> None:
    from streamc_runtime.hooks import _fields_check

    class Line(Record, kw_only=True):
        sku: str
        qty: int
        price: float
        note: str | None = None
        tags: list[str] = msgspec.field(default_factory=list)

    class Loose(Record, kw_only=True):
        extra: dict[str, int]

    fast = _fields_check(Line)
    assert fast is not None and _fields_check(Loose) is None
    assert fast(Line(sku="a", qty=1, price=2))  # an int is a fine float, as msgspec reads it
    assert fast(Line(sku="a", qty=1, price=2.5, note=None, tags=["x"]))
    for bad in (
        Line(sku="a", qty=True, price=2.5),  # a bool is not an int
        Line(sku="a", qty=1.5, price=2.5),  # type: ignore[arg-type]
        Line(sku="a", qty=1, price="2"),  # type: ignore[arg-type]
        Line(sku="a", qty=1, price=2.5, note=3),  # type: ignore[arg-type]
        Line(sku="a", qty=1, price=2.5, tags=["x", 2]),  # type: ignore[list-item]
    ):
        assert not fast(bad)
    check = result_check(Line, "fix")
    with pytest.raises(HookResultError, match="Expected `int`, got `bool`"):
        check(Line(sku="a", qty=True, price=2.5))
