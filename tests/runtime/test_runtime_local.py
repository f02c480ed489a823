"""`run_local` (the engine of `streamc run`), JSONL in and out, and `worker_main`'s command line."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rtkit import Order
from streamc_runtime import App, Stream, jsonl, worker_main
from streamc_runtime.local import LocalRunStopped, Progress, run_local
from streamc_runtime.memory import MemoryBroker, MemoryMessage
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
        "import streamc_runtime.main as worker\n"
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


# -- JSONL: every input mistake names its file and line; every output form is unambiguous -----


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"value": NaN}', "NaN is not JSON"),
        ('{"value": [Infinity]}', "Infinity is not JSON"),
        ('{"value": -Infinity}', "-Infinity is not JSON"),
        ('{"value": 1, "key": 1e400}', "number 1e400 is out of range"),
        ('{"value": ' + "[" * 100_000 + "]" * 100_000 + "}", "JSON nested too deeply"),
    ],
)
def test_jsonl_read_rejects_what_json_cannot_hold_with_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"value": 1.5e300}\n' + text + "\n")
    with pytest.raises(ValueError) as error:
        jsonl.read(path)
    assert str(error.value).startswith(f"{path}:2: ")
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"value": {}, "partition": true}', "'partition' must be an integer, got true"),
        ('{"value": {}, "partition": "1"}', "'partition' must be an integer, got \"1\""),
        ('{"value": {}, "timestamp": true}', "'timestamp' must be integer milliseconds"),
        ('{"value": {}, "headers": {"h": null}}', "header 'h' must be a string, got null"),
        (
            '{"value": {}, "headers": {"h": {"x": 1}}}',
            "header 'h' must be a string, got {\"x\": 1}",
        ),
        ('{"value": {}, "headers": {"h": 7}}', "header 'h' must be a string, got 7"),
        ('{"value": {}, "raw": "x"}', "exactly one of them; found 'value' and 'raw'"),
        ('{"raw_base64": "not base64!"}', "'raw_base64' must be a base64 string"),
        (
            '{"key": "k"}',
            "needs 'value' (or 'raw' or 'raw_base64'), exactly one of them; found none",
        ),
    ],
)
async def test_run_local_names_file_and_line_of_a_bad_input_and_produces_nothing(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "orders.jsonl"
    path.write_text('{"value": {"account_id": "a", "amount": 1}}\n' + line + "\n")
    broker = MemoryBroker()
    with pytest.raises(ValueError) as error:
        await run_local(_orders_app(), {"orders": jsonl.read(path)}, broker=broker)
    assert str(error.value).startswith(f"{path}:2: topic 'orders': ")
    assert message in str(error.value)
    assert broker.messages("orders") == []  # checked before anything is produced


async def test_raw_base64_injects_bytes_that_are_not_utf8() -> None:
    broker = await run_local(
        _orders_app(), {"raw.events": [{"raw_base64": "//4="}, {"raw": "\\xff\\xfe"}]}
    )
    assert [m.value for m in broker.messages("raw.events")] == [b"\xff\xfe", b"\\xff\\xfe"]
    assert [m.value for m in broker.messages("raw.copy")] == [b"\xff\xfe", b"\\xff\\xfe"]


def test_format_prints_bytes_and_their_escaped_text_differently() -> None:
    def line(key: bytes | None, value: bytes | None, headers: Any, value_type: Any) -> Any:
        message = MemoryMessage("t", 0, 5, 1, key, value, headers)
        return json.loads(jsonl.format(message, value_type, key_type=str, timestamp=False))

    binary = line(b"\xff\xfe", b"\xff\xfe", [("h", b"\xff\xfe"), ("t", b"ok")], bytes)
    escaped = line(b"\\xff\\xfe", b"\\xff\\xfe", [("h", b"\\xff\\xfe"), ("t", b"ok")], bytes)
    assert binary == {
        "topic": "t",
        "partition": 0,
        "offset": 5,
        "key_base64": "//4=",
        "raw_base64": "//4=",
        "headers": {"t": "ok"},
        "headers_base64": {"h": "//4="},
    }
    assert escaped == {
        "topic": "t",
        "partition": 0,
        "offset": 5,
        "key": "\\xff\\xfe",
        "value": "\\xff\\xfe",
        "headers": {"h": "\\xff\\xfe", "t": "ok"},
    }
    # A typed topic: JSON is the value; text that is not JSON is "raw", as in the input form.
    assert line(None, b'"abc"', [], Order)["value"] == "abc"
    assert line(None, b"abc", [], Order)["raw"] == "abc"
    assert "value" not in line(None, b"abc", [], Order)
    assert line(None, b"\xff", [], Order)["raw_base64"] == "/w=="


async def test_writer_writes_each_record_as_it_is_produced_and_flushes_per_loop_turn() -> None:
    out = io.StringIO()
    flushes: list[str] = []
    out.flush = lambda: flushes.append(out.getvalue())  # type: ignore[method-assign]
    writer = jsonl.Writer(timestamp=False)
    writer.add("raw.copy", out, bytes, bytes)
    broker = MemoryBroker()
    broker.on_produce = writer
    await run_local(_orders_app(), {"raw.events": [{"value": "a"}, {"value": "b"}]}, broker=broker)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(d["topic"], d["offset"], d["value"]) for d in lines] == [
        ("raw.copy", 0, "a"),
        ("raw.copy", 1, "b"),
    ]
    assert flushes and flushes[-1] == out.getvalue()


class _ClosedPipe(io.StringIO):
    """An output whose reader went away (`streamc run ... | head -1`)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


async def test_an_output_that_cannot_be_written_fails_no_send_and_duplicates_no_record() -> None:
    """The writer watches the broker; an output it cannot write to is its own failure, not a
    transport's: the send was stored, so it is neither retried (a second copy) nor stops the
    run as "sending failed"."""
    writer = jsonl.Writer(timestamp=False)
    writer.add("raw.copy", _ClosedPipe(), bytes, bytes)
    broker = MemoryBroker()
    broker.on_produce = writer
    inputs = {"raw.events": [{"value": "a"}, {"value": "b"}]}
    await run_local(_orders_app(), inputs, broker=broker, send_backoff=0.001)
    assert [m.value for m in broker.messages("raw.copy")] == [b"a", b"b"]
    assert isinstance(writer.error, BrokenPipeError)
    assert writer.error_topic == "raw.copy"


# -- run_local's limits: a stuck hook or a cycle ends with a message, not a hang -------------


def _stuck_app() -> App:
    app = App("stuck")
    src = app.topic("src", key_type=str, value_type=int, partitions=1)
    dst = app.topic("dst", key_type=str, value_type=int, partitions=1)

    async def never_on_three(value: int) -> int:
        if value == 3:
            await asyncio.Event().wait()
        return value

    @app.agent(src, name="slow")
    async def slow(stream: Stream[int]) -> None:
        async for _ in stream.process(never_on_three).to(dst):
            pass

    return app


async def test_time_limit_names_the_stuck_hook_and_its_element() -> None:
    broker = MemoryBroker()
    inputs = {"src": [{"value": n, "key": f"k{n}"} for n in (1, 2, 3, 4)]}
    with pytest.raises(LocalRunStopped) as stopped:
        await run_local(_stuck_app(), inputs, broker=broker, time_limit=0.3)
    message = str(stopped.value)
    first, busy = message.splitlines()
    assert first == "timed out after 0.3s (4 records in, 2 out)"
    assert busy.startswith("  agent slow is in _stuck_app.<locals>.never_on_three() at ")
    assert busy.endswith(
        f"test_runtime_local.py:{never_on_three_wait_line()}, handling src[0] offset 2 (key 'k3')"
    )
    assert [m.value for m in broker.messages("dst")] == [b"1", b"2"]


def never_on_three_wait_line() -> int:
    source = Path(__file__).read_text().splitlines()
    return next(i for i, text in enumerate(source, 1) if "await asyncio.Event().wait()" in text)


def _cycle_app() -> App:
    app = App("cycle")
    loop = app.topic("loop", key_type=str, value_type=int, partitions=1)

    @app.agent(loop, name="again")
    async def again(stream: Stream[int]) -> None:
        async for _ in stream.to(loop):
            pass

    return app


async def test_a_cycle_stops_once_the_worker_wrote_more_than_max_records() -> None:
    broker = MemoryBroker()
    with pytest.raises(LocalRunStopped, match=r"\(a cycle\)\?$") as stopped:
        await run_local(_cycle_app(), {"loop": [{"value": 1}]}, broker=broker, max_records=500)
    written = int(str(stopped.value).split("wrote ")[1].split(" records")[0].replace(",", ""))
    assert str(stopped.value).startswith(f"stopped after the worker wrote {written:,} records ")
    # the element in hand when the limit was seen is finished by the stop, nothing more
    assert 500 < written < len(broker.messages("loop")) <= written + 100


async def test_a_cycle_stops_at_the_time_limit_saying_records_still_move() -> None:
    with pytest.raises(LocalRunStopped) as stopped:
        await run_local(_cycle_app(), {"loop": [{"value": 1}]}, time_limit=0.2)
    assert str(stopped.value).endswith(
        "out); no agent is stuck and records are still moving: "
        "does an agent read a topic that it or another agent writes (a cycle)?"
    )


async def test_progress_is_reported_every_interval_while_the_worker_runs() -> None:
    seen: list[Progress] = []
    with pytest.raises(LocalRunStopped):
        await run_local(
            _stuck_app(),
            {"src": [{"value": n} for n in (1, 2, 3, 4)]},
            time_limit=0.5,
            on_progress=seen.append,
            progress_interval=0.1,
        )
    assert 3 <= len(seen) <= 5
    assert [p.elapsed for p in seen] == sorted(p.elapsed for p in seen)
    last = seen[-1]
    assert (last.records_in, last.records_out, last.dead_letters) == (4, 2, 0)
    assert (last.inputs_done, last.inputs_total) == (2, 4)  # offsets 0, 1 done; 2 stuck
