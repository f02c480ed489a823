"""Micro-benchmark: the cost of checking hook results against their declared types.

    python bench/bench_hooks.py [--n 100000] [--rounds 5] [--unchecked-only]

One agent runs `process(reprice).group_by(account_of, topic=...)` over N small JSON orders on
the memory broker, and reads the repartition topic back; once as generated code writes it
(`returns=(Order,)`, `returns=str`), once without `returns` (no checks). Prints the CPU time
per message of each (best of `--rounds` alternating runs: the machine is shared and noisy)
and the difference, then the cost of one call of each check alone. `--unchecked-only` runs only the
unchecked pipeline (it works on a runtime without `returns`, for before/after comparisons).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import timeit
from functools import partial
from typing import Any

from streamc_runtime import App, Record, Stream
from streamc_runtime.local import run_local

try:
    from streamc_runtime.hooks import result_check
except ImportError:  # a runtime from before result checks: --unchecked-only
    result_check = None  # type: ignore[assignment]

PARTITIONS = 4


class Order(Record, kw_only=True):
    id: int
    account_id: str
    amount: float


def reprice(order: Order) -> Order:
    order.amount = order.amount * 1.1
    return order


def account_of(order: Order) -> str:
    return order.account_id


def _app(checked: bool, counter: list[int]) -> App:
    app = App("bench")
    orders = app.topic("orders", key_type=str, value_type=Order, partitions=PARTITIONS)
    repart = app.topic(
        "bench-a-orders-account_of-repartition",
        key_type=str,
        value_type=Order,
        partitions=PARTITIONS,
        internal=True,
    )

    @app.agent(orders, name="a")
    async def agent(stream: Stream[Order]) -> None:
        if checked:
            chain = stream.process(reprice, returns=(Order,)).group_by(
                account_of, topic=repart, returns=str
            )
        else:
            chain = stream.process(reprice).group_by(account_of, topic=repart)
        async for _order in chain:
            counter[0] += 1

    return app


def run(checked: bool, n: int) -> float:
    counter = [0]
    inputs: list[dict[str, Any]] = [
        {"key": f"k{i % 97}", "value": {"id": i, "account_id": f"acct-{i % 1000}", "amount": 1.5}}
        for i in range(n)
    ]
    # CPU time of this process: the machine is shared, and wall time mostly measures others.
    start = time.process_time()
    asyncio.run(run_local(_app(checked, counter), {"orders": inputs}))
    elapsed = time.process_time() - start
    assert counter[0] == n, counter
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--unchecked-only", action="store_true")
    args = parser.parse_args()
    modes = ([False] if args.unchecked_only else [False, True]) * args.rounds
    best: dict[bool, float] = {}
    for checked in modes:
        t = run(checked, args.n)
        best[checked] = min(best.get(checked, t), t)
    for checked, t in best.items():
        label = "checked  " if checked else "unchecked"
        print(f"{label}: {t / args.n * 1e6:.2f} µs/message ({args.n} messages, best of runs)")
    if len(best) == 2:
        print(f"cost of the checks: {(best[True] - best[False]) / args.n * 1e6:.2f} µs/message")
        order = Order(id=1, account_id="acct-1", amount=1.5)
        for declared, value in ((Order, order), (str, "acct-1")):
            check = result_check(declared, "h")
            calls = 200_000
            t = min(timeit.repeat(partial(check, value), number=calls, repeat=5)) / calls
            print(f"one {declared.__name__} check alone: {t * 1e9:.0f} ns")


if __name__ == "__main__":
    main()
