"""A hook (or an agent body) raising a `BaseException` that is not a cancellation —
`SystemExit`, `KeyboardInterrupt`, or a class of the user's own — while handling an element is
a hook failure like any other: the element is dead-lettered and the stream goes on. Only a
cancellation ends a driver. Raised outside an element, it stops the worker with status 1."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from rtkit import Running
from streamc_runtime import App, Stream


class Fatal(BaseException):
    """Not an Exception: `except Exception` does not see it."""


def _app() -> tuple[App, Any, Any]:
    app = App("t")
    nums = app.topic("nums", key_type=str, value_type=int)
    repart = app.topic("t-a-nums-k-repartition", key_type=str, value_type=int, internal=True)
    return app, nums, repart


def _dead(r: Running) -> list[tuple[bytes | None, bytes, bytes]]:
    return [
        (m.value, dict(m.headers)["streamc.error.type"], dict(m.headers)["streamc.agent"])
        for m in r.messages("t-dlq")
    ]


@pytest.mark.parametrize(
    "exc", [SystemExit(2), KeyboardInterrupt(), Fatal("boom")], ids=lambda e: type(e).__name__
)
async def test_base_exceptions_from_processor_filter_key_fn_and_body_are_dead_lettered(
    exc: BaseException,
) -> None:
    app, nums, repart = _app()
    got: list[int] = []

    def raising(at: int) -> Any:
        def hook(v: int) -> Any:
            if v == at:
                raise exc
            return {2: True, 3: str(v)}.get(at, v)  # the filter keeps, the key is a str

        return hook

    @app.agent(nums, name="a")
    async def agent(stream: Stream[int]) -> None:
        async for v in (
            stream.process(raising(1)).filter(raising(2)).group_by(raising(3), topic=repart)
        ):
            if v == 4:
                raise exc
            got.append(v)

    async with Running(app) as r:
        for v in range(6):
            r.produce("nums", v, partition=0)
        await r.idle()
        await r.worker.commit()
        assert r.worker.failure is None
    assert got == [0, 5]
    name = type(exc).__qualname__.encode()
    if isinstance(exc, Fatal):
        name = f"{__name__}.Fatal".encode()
    assert _dead(r) == [
        (b"1", name, b"a"),
        (b"2", name, b"a"),
        (b"3", name, b"a"),
        (b"4", name, b"a"),
    ]
    assert r.committed("nums") == {0: 6}
    assert await r.worker.wait() == 0


async def test_a_base_exception_outside_an_element_stops_the_worker_with_status_1() -> None:
    app, nums, _ = _app()

    @app.agent(nums, name="a")
    async def agent(stream: Stream[int]) -> None:
        raise Fatal("cannot start")

    r = Running(app)
    await r.worker.start()
    assert await asyncio.wait_for(r.worker.wait(), 5) == 1
    assert isinstance(r.worker.failure, Fatal)
