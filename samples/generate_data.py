"""Write the sample inputs of samples/orders.sdl: `python samples/generate_data.py`.

Deterministic (a fixed seed), so the committed JSONL files and the tests that assert on
`streamc run`'s output stay in step. Each line is `{"key": ..., "value": ...}` as `streamc run`
reads it; orders and accounts also have a message `timestamp` (epoch milliseconds).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
START_MS = 1_772_366_400_000  # 2026-03-01T12:00:00Z: the orders span the half hour after it
SPAN_MS = 30 * 60 * 1000
ACCOUNTS = [f"acct-{n}" for n in range(1, 41)]
COUNTRIES = ["NL", "NL", "NL", "DE", "FR", "US", "GB", "ES"]
TIERS = ["basic", "basic", "basic", "silver", "silver", "gold"]


def orders(rng: random.Random, count: int) -> list[dict[str, object]]:
    lines = []
    for n in range(count):
        account = rng.choice(ACCOUNTS)
        value: dict[str, object] = {
            "id": f"ord-{n:05d}",
            "account_id": account,
            "amount": round(rng.lognormvariate(4.5, 1.1), 2),
        }
        if rng.random() < 0.3:
            value["currency"] = rng.choice(["USD", "GBP"])
        if rng.random() < 0.6:
            value["language"] = rng.choice(["en", "nl", "de", "fr"])
        if rng.random() < 0.2:
            value["tags"] = rng.sample(["gift", "express", "b2b", "promo"], k=rng.randint(1, 2))
        if rng.random() < 0.7:
            value["customer"] = {"id": f"cust-{account[5:]}", "country": rng.choice(COUNTRIES)}
        lines.append({"key": account, "value": value})
    return lines


def with_timestamps(lines: list[dict[str, object]]) -> list[dict[str, object]]:
    """Copies of the order lines with message timestamps spread evenly over SPAN_MS, some out
    of order by a few seconds (a producer's retry, a slow client), as Kafka delivers them.

    A generator of their own, so every other value stays what it was before timestamps.
    """
    rng = random.Random(20260301)
    step = SPAN_MS // len(lines)
    stamped = []
    for n, line in enumerate(lines):
        timestamp = START_MS + n * step + rng.randrange(step)
        if rng.random() < 0.03:
            timestamp -= rng.randint(1_000, 5_000)
        stamped.append({**line, "timestamp": max(timestamp, START_MS)})
    return stamped


def accounts() -> list[dict[str, object]]:
    """One record per account, keyed by its id, a minute apart in the 40 minutes before the
    first order: the accounts table is filled before any order is enriched.

    A generator of its own, so the other files stay byte for byte what they were.
    """
    rng = random.Random(20260228)
    return [
        {
            "key": account,
            "value": {
                "account_id": account,
                "tier": rng.choice(TIERS),
                "country": rng.choice(COUNTRIES),
            },
            "timestamp": START_MS - (len(ACCOUNTS) - n) * 60_000,
        }
        for n, account in enumerate(ACCOUNTS)
    ]


def payments(stamped_orders: list[dict[str, object]]) -> list[dict[str, object]]:
    """Payments for about a third of the orders, keyed by the order's account (as the orders
    are), most within a couple of minutes after the order, some before it (paid ahead) and
    some more than 5 minutes after it (too late for the sample's join). In timestamp order, as
    a payment service writes them.

    A generator of its own, so the other files stay byte for byte what they were.
    """
    rng = random.Random(20260302)
    lines = []
    for line in stamped_orders:
        if rng.random() >= 0.3:
            continue
        order = line["value"]
        assert isinstance(order, dict)
        timestamp = line["timestamp"]
        assert isinstance(timestamp, int)
        roll = rng.random()
        if roll < 0.1:
            delay = -rng.randint(1_000, 60_000)
        elif roll < 0.9:
            delay = rng.randint(1_000, 120_000)
        else:
            delay = rng.randint(300_001, 900_000)
        lines.append(
            {
                "key": line["key"],
                "value": {"order_id": order["id"], "amount": order["amount"]},
                "timestamp": timestamp + delay,
            }
        )
    lines.sort(key=lambda line: line["timestamp"])  # type: ignore[arg-type,return-value]
    return lines


def withdrawals(rng: random.Random, count: int) -> list[dict[str, object]]:
    return [
        {
            "key": (account := rng.choice(ACCOUNTS)),
            "value": {
                "account_id": account,
                "amount": round(rng.lognormvariate(5.5, 1.0), 2),
                "country": rng.choice(COUNTRIES),
                "atm": rng.random() < 0.4,
            },
        }
        for _ in range(count)
    ]


def write(name: str, lines: list[dict[str, object]]) -> None:
    text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    (HERE / name).write_text(text, encoding="utf-8")


def main() -> None:
    rng = random.Random(20261128)
    all_orders = orders(rng, 3000)
    stamped = with_timestamps(all_orders)
    write("orders.jsonl", stamped)
    write("refunds.jsonl", rng.sample(all_orders, 60))
    write("withdrawals.jsonl", withdrawals(rng, 400))
    write("accounts.jsonl", accounts())
    write("payments.jsonl", payments(stamped))


if __name__ == "__main__":
    main()
