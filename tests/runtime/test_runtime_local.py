"""`run_local` (the engine of `streamc run`), JSONL in and out, and `worker_main`'s command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rtkit import Order
from streamc_runtime import App, Stream, jsonl, worker_main
from streamc_runtime.local import run_local
from streamc_runtime.transport import TP


def _orders_app() -> App:
    app = App("orders")
    orders = app.topic("orders", key_type=str, value_type=Order, partitions=4)
    repart = app.topic(
        "orders-totals-orders-account_id-repartition",
        key_type=str,
        value_type=Order,
        partitions=4,
        internal=True,
    )
    totals = app.topic("totals", key_type=str, value_type=list[Order], partitions=4)
    raw = app.topic("raw.events", key_type=bytes, value_type=bytes, partitions=1)
    echoed = app.topic("raw.copy", key_type=bytes, value_type=bytes, partitions=1)

    @app.agent(orders, name="totals")
    async def totals_agent(stream: Stream[Order]) -> None:
        async for _batch in (
            stream.group_by("account_id", topic=repart).take(100, within=10.0).to(totals)
        ):
            pass

    @app.agent(raw, name="copy")
    async def copy(stream: Stream[bytes]) -> None:
        async for _ in stream.echo(echoed):
            pass

    return app


async def test_run_local_processes_drains_and_commits() -> None:
    app = _orders_app()
    inputs: dict[str, list[dict[str, Any]]] = {
        "orders": [
            {"value": {"account_id": f"a{i % 3}", "amount": i}, "key": f"o{i}"} for i in range(10)
        ]
        + [
            {"value": {"account_id": "a0"}},  # missing field: dead letter
            {"raw": "{not json"},
        ],
        "raw.events": [{"value": "hello", "headers": {"h": "v"}, "timestamp": 1234}],
    }
    broker = await run_local(app, inputs)
    batches = [json.loads(line)["value"] for line in jsonl.lines(broker, "totals", list[Order])]
    # take 100 within 10s never fills: the drain emitted the partial batches without waiting
    amounts = sorted(o["amount"] for batch in batches for o in batch)
    assert amounts == [float(i) for i in range(10)]
    assert all(len({o["account_id"] for o in b}) >= 1 for b in batches)
    dead = list(jsonl.lines(broker, "orders-dlq"))
    assert len(dead) == 2
    errors = sorted(json.loads(d)["headers"]["streamc.error"] for d in dead)
    assert "JSON is malformed" in errors[0] and "amount" in errors[1]
    (copy,) = broker.messages("raw.copy")
    assert copy.value == b"hello" and dict(copy.headers) == {"h": b"v"}
    line = json.loads(jsonl.format(broker.messages("raw.events")[0], bytes))
    assert line == {
        "topic": "raw.events",
        "partition": 0,
        "offset": 0,
        "key": None,
        "value": "hello",
        "headers": {"h": "v"},
        "timestamp": 1234,
    }
    for topic in ("orders", "orders-totals-orders-account_id-repartition", "raw.events"):
        for p in range(broker.partitions_for(topic) or 0):
            assert broker.committed("orders", TP(topic, p)) in (
                None,
                broker.end_offset(TP(topic, p)),
            )
            if broker.end_offset(TP(topic, p)):
                assert broker.committed("orders", TP(topic, p)) == broker.end_offset(TP(topic, p))


async def test_run_local_is_deterministic() -> None:
    inputs = {"orders": [{"value": {"account_id": f"a{i % 4}", "amount": i}} for i in range(30)]}
    outs = []
    for _ in range(2):
        broker = await run_local(_orders_app(), inputs)
        outs.append(list(jsonl.lines(broker, "totals", list[Order], timestamp=False)))
    assert outs[0] == outs[1] and outs[0]


async def test_run_local_rejects_unknown_topics_and_bad_inputs() -> None:
    with pytest.raises(ValueError, match="no topic 'nope'"):
        await run_local(_orders_app(), {"nope": [{"value": 1}]})
    with pytest.raises(ValueError, match="needs 'value'"):
        await run_local(_orders_app(), {"orders": [{"key": "k"}]})
    with pytest.raises(ValueError, match="partition"):
        await run_local(_orders_app(), {"orders": [{"value": {}, "partition": 9}]})


def test_jsonl_read(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"value": 1}\n\n{"value": {"a": [1, 2]}, "key": "k"}\n')
    assert jsonl.read(path) == [{"value": 1}, {"value": {"a": [1, 2]}, "key": "k"}]
    path.write_text('{"value": 1}\n[1]\n')
    with pytest.raises(ValueError, match=r"in.jsonl:2: expected a JSON object"):
        jsonl.read(path)
    path.write_text("{oops\n")
    with pytest.raises(ValueError, match=r"in.jsonl:1: invalid JSON"):
        jsonl.read(path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--broker", "http://x"], "bad broker URL"),
        (["--broker", "kafka://"], "bad broker URL"),
        (["--commit-interval", "0"], "positive"),
        (["--commit-interval", "soon"], "not a number"),
        (["--log-level", "LOUD"], "unknown level"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_worker_main_bad_arguments_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert worker_main(App("x"), argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_worker_main_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert worker_main(App("x"), ["--help"]) == 0
    out = capsys.readouterr().out
    assert "--broker" in out and "--commit-interval" in out and "--log-level" in out


def test_worker_main_stops_on_sigterm(tmp_path: Path) -> None:
    script = tmp_path / "w.py"
    script.write_text(
        "import sys\n"
        "from streamc_runtime import App, worker_main\n"
        "app = App('sig')\n"
        "t = app.topic('t', key_type=str, value_type=int)\n"
        "@app.agent(t)\n"
        "async def a(stream):\n"
        "    async for _ in stream:\n"
        "        pass\n"
        "sys.exit(worker_main(app))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script), "--log-level", "INFO"],
        stderr=subprocess.PIPE,
        text=True,
        env={"STREAMC_BROKER": "memory://", "PATH": "/usr/bin:/bin"},
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "started" in line:
            break
    proc.terminate()
    rest = proc.stderr.read()
    assert proc.wait(10) == 0, rest
    assert "stopped" in rest and "Traceback" not in rest


def test_worker_main_loop_bogus_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert worker_main(App("x"), ["--loop", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "argument --loop: invalid choice: 'bogus'" in err
    assert "asyncio" in err and "uvloop" in err and "Traceback" not in err


def test_worker_main_streamc_loop_bogus_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STREAMC_BROKER", raising=False)
    monkeypatch.setenv("STREAMC_LOOP", "bogus")
    assert worker_main(App("x"), []) == 2
    err = capsys.readouterr().err
    assert "x-worker: error: unknown event loop 'bogus' in STREAMC_LOOP" in err
    assert "asyncio or uvloop" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "env"),
    [(["--loop", "uvloop"], None), ([], "uvloop")],
    ids=["flag", "env"],
)
def test_worker_main_uvloop_missing_says_how_to_install(
    argv: list[str],
    env: str | None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("STREAMC_BROKER", raising=False)
    if env is None:
        monkeypatch.delenv("STREAMC_LOOP", raising=False)
    else:
        monkeypatch.setenv("STREAMC_LOOP", env)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    assert worker_main(App("x"), argv) == 2
    err = capsys.readouterr().err
    assert "--loop uvloop: uvloop is not installed" in err
    assert "pip install 'streamc-runtime[uvloop]'" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "env"),
    [(["--loop", "uvloop"], {}), ([], {"STREAMC_LOOP": "uvloop"})],
    ids=["flag", "env"],
)
def test_worker_main_runs_on_uvloop(argv: list[str], env: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "w.py"
    script.write_text(
        "import asyncio, sys\n"
        "import streamc_runtime.worker as worker\n"
        "from streamc_runtime import App, worker_main\n"
        "serve = worker._serve\n"
        "async def _serve(*args):\n"
        "    loop = type(asyncio.get_running_loop())\n"
        "    print(f'loop: {loop.__module__}.{loop.__qualname__}', file=sys.stderr, flush=True)\n"
        "    return await serve(*args)\n"
        "worker._serve = _serve\n"
        "app = App('uv')\n"
        "t = app.topic('t', key_type=str, value_type=int)\n"
        "@app.agent(t)\n"
        "async def a(stream):\n"
        "    async for _ in stream:\n"
        "        pass\n"
        "sys.exit(worker_main(app))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script), "--log-level", "INFO", *argv],
        stderr=subprocess.PIPE,
        text=True,
        env={"STREAMC_BROKER": "memory://", "PATH": "/usr/bin:/bin", **env},
    )
    assert proc.stderr is not None
    seen: list[str] = []
    for line in proc.stderr:
        seen.append(line)
        if "started" in line:
            break
    proc.terminate()
    rest = proc.stderr.read()
    assert proc.wait(10) == 0, "".join(seen) + rest
    assert any(line.startswith("loop: uvloop.") for line in seen), seen
    assert "stopped" in rest and "Traceback" not in rest
