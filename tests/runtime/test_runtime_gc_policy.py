"""While a worker runs, what existed at its start is frozen out of the cycle collector and the
young threshold is raised; the last worker to stop puts the collector back as it found it, and
`STREAMC_GC=default` leaves it alone."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest
from rtkit import Running
from streamc_runtime import App, Stream
from streamc_runtime.gcpolicy import GC_ENV, TUNED_THRESHOLD
from streamc_runtime.tasks import cancel

# Not CPython's default, so a restore to the default would not pass for a restore.
BEFORE = (701, 11, 12)


@pytest.fixture(autouse=True)
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(GC_ENV, raising=False)  # the policy's default, whatever the caller's
    saved = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(*BEFORE)
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)


def _app(name: str) -> App:
    app = App(name)
    nums = app.topic("nums", key_type=str, value_type=int)

    @app.agent(nums)
    async def count(stream: Stream[int]) -> None:
        async for _ in stream:
            pass

    return app


def _tracked(obj: object) -> bool:
    """`obj` is one the collector scans (not in the permanent generation)."""
    return any(o is obj for o in gc.get_objects())


async def test_a_running_worker_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    made_before = [object()]
    async with Running(_app("g1")) as r:
        assert r.worker.running
        assert gc.get_threshold() == TUNED_THRESHOLD == (10_000, 10, 10)
        assert not _tracked(made_before)
        assert gc.get_freeze_count() > 0
        made_after = [object()]
        assert _tracked(made_after)  # only what existed at the start is frozen
    assert gc.get_threshold() == BEFORE
    assert gc.get_freeze_count() == 0
    assert _tracked(made_before)


async def test_the_collector_comes_back_when_the_last_of_two_workers_stops() -> None:
    first = Running(_app("g2a"))
    second = Running(_app("g2b"))
    await first.worker.start()
    await second.worker.start()
    assert gc.get_threshold() == TUNED_THRESHOLD
    await first.worker.stop()
    assert gc.get_threshold() == TUNED_THRESHOLD  # the second still runs
    assert gc.get_freeze_count() > 0
    await second.worker.stop()
    assert gc.get_threshold() == BEFORE
    assert gc.get_freeze_count() == 0
    await second.worker.stop()  # stopping again changes nothing
    assert gc.get_threshold() == BEFORE


async def test_streamc_gc_default_leaves_the_collector_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(GC_ENV, "default")
    made_before = [object()]
    async with Running(_app("g3")) as r:
        assert r.worker.running
        assert gc.get_threshold() == BEFORE
        assert gc.get_freeze_count() == 0
        assert _tracked(made_before)
    assert gc.get_threshold() == BEFORE


async def test_an_unknown_streamc_gc_value_leaves_the_collector_alone_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(GC_ENV, "off")
    async with Running(_app("g4")):
        assert gc.get_threshold() == BEFORE
        assert gc.get_freeze_count() == 0
    assert "STREAMC_GC='off' is neither 'tuned' nor 'default'" in caplog.text


async def test_a_program_s_own_freeze_is_not_undone_by_the_stop() -> None:
    theirs = [object()]
    gc.freeze()
    async with Running(_app("g5")):
        assert gc.get_threshold() == TUNED_THRESHOLD
    assert gc.get_threshold() == BEFORE
    assert not _tracked(theirs)  # still frozen, as the program left it


async def test_a_stop_cancelled_half_way_still_gives_the_collector_back() -> None:
    # A stop cancelled while it waits for an agent (the loop shutting down: `asyncio.run`
    # cancels what is left) must not leave the process with the policy held for good.
    app = App("g6")
    nums = app.topic("nums", key_type=str, value_type=int)
    busy, never = asyncio.Event(), asyncio.Event()

    @app.agent(nums)
    async def slow(stream: Stream[int]) -> None:
        async for _ in stream:
            busy.set()
            await never.wait()  # a hook that does not end within the stop

    r = Running(app, shutdown_timeout=60.0)
    await r.worker.start()
    assert gc.get_threshold() == TUNED_THRESHOLD
    r.produce("nums", 1, key="k")
    await asyncio.wait_for(busy.wait(), 5.0)
    r.worker.request_stop()
    stop = r.worker._stop_task
    assert stop is not None
    await asyncio.sleep(0.01)  # the stop waits for the agent now
    stop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stop
    assert gc.get_threshold() == BEFORE
    assert gc.get_freeze_count() == 0
    never.set()
    for task in list(r.worker._drivers):
        await cancel(task)


async def test_a_stop_cancelled_before_it_ran_still_gives_the_collector_back() -> None:
    # A stop requested just before the loop shuts down: `asyncio.run` cancels it before its
    # first step, so none of its code runs.
    r = Running(_app("g7"))
    await r.worker.start()
    assert gc.get_threshold() == TUNED_THRESHOLD
    r.worker.request_stop()
    stop = r.worker._stop_task
    assert stop is not None
    stop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stop
    assert gc.get_threshold() == BEFORE
    assert gc.get_freeze_count() == 0
    for task in [*r.worker._tasks, *r.worker._drivers]:
        await cancel(task)
    await r.transport.stop()
