"""A fused loop's input is decoded once per value: the Conductor decodes a fetched batch in
one go, and a value that does not decode sends only itself down the slow path (to be
dead-lettered), not the values around it, which are neither decoded again nor reordered."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rtkit import Order, Running
from streamc_runtime import App, Stream
from streamc_runtime.transport import TP

BAD = {7, 8, 63, 99}  # two adjacent, and mid-run in each partition (runs of HANDOUT_RUN)


async def test_every_value_is_decoded_once_also_in_a_batch_with_undecodable_ones() -> None:
    app = App("decode-once")
    src = app.topic("src", value_type=Order, partitions=2)
    seen: list[tuple[int, float]] = []
    decoded: Counter[bytes] = Counter()
    codec = src.value_codec
    decode = codec.decode_bytes
    assert decode is not None

    def counting(data: bytes) -> Any:
        decoded[data] += 1
        return decode(data)

    codec.decode_bytes = counting

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for run in stream.runs():
            for order in run:
                seen.append((int(order.amount) % 2, order.amount))

    async with Running(app) as r:
        for i in range(120):  # all there before the first fetch: one batch of both partitions
            value = b"not json %d" % i if i in BAD else {"account_id": "a", "amount": float(i)}
            r.produce("src", value, partition=i % 2, raw=i in BAD)
        await r.idle()
        await r.worker.commit()
        assert r.committed("src") == {0: 60, 1: 60}
        dead = sorted(m.value or b"" for m in r.messages("decode-once-dlq"))
        state = r.worker.offsets.get(TP("src", 0))
        assert state.committable() == 60
    codec.decode_bytes = decode
    good = [i for i in range(120) if i not in BAD]
    assert {v: n for v, n in decoded.items() if not v.startswith(b"not")} == {
        b'{"account_id":"a","amount":%d.0}' % i: 1 for i in good
    }
    assert dead == sorted(b"not json %d" % i for i in BAD)
    # In offset order per partition (the partitions take turns, so only that is fixed).
    for p in (0, 1):
        assert [a for q, a in seen if q == p] == [float(i) for i in good if i % 2 == p]
