"""`streamc test`: test files run on the memory broker with a virtual clock (docs/testing.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamc.cli import main

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"

SHOP = """\
app shop

record Order {
    id: str
    amount: float
    country: str?
}

topic orders: Order key str partitions 2
topic big: Order key str partitions 2
topic batches: list[Order] key str

hooks "hooks.py" {
    slow(Order) -> Order
    check(Order) -> Order
}

agent big_orders = from orders | where amount > 100 | to big
agent batcher = from big | take 3 within 5s | through batches
agent slowly = from batches | sink_free
"""

HOOKS = """\
import asyncio


async def slow(order):
    await asyncio.sleep(3600)  # an hour: virtual, so the case takes no real time
    return order


def check(order):
    if order.amount < 0:
        raise ValueError(f"negative amount {order.amount}")
    return order
"""


def shop(tmp_path: Path, agents: str, tests: str) -> Path:
    program = SHOP.split("agent big_orders")[0] + agents
    (tmp_path / "shop.sdl").write_text(program, encoding="utf-8")
    (tmp_path / "hooks.py").write_text(HOOKS, encoding="utf-8")
    (tmp_path / "shop.test.yaml").write_text(tests, encoding="utf-8")
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["test", *args])
    out, err = capsys.readouterr()
    return status, out, err


AGENTS = """\
agent big_orders = from orders | where amount > 100 | to big
agent batcher = from big | take 3 within 5s | through batches
"""


def test_the_samples_tests_pass() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamc.cli", "test", "samples"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    cases = [line for line in lines if line.startswith("PASS ")]
    assert len(cases) >= 9
    assert lines[-1] == f"{len(cases)} passed, 0 failed"


def test_a_changed_where_threshold_fails_the_samples_with_a_diff_naming_the_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "samples"
    shutil.copytree(SAMPLES, copy)
    sdl = copy / "orders.sdl"
    text = sdl.read_text(encoding="utf-8")
    assert "where amount >= 1000 and" in text
    sdl.write_text(text.replace("where amount >= 1000 and", "where amount >= 2000 and"))
    tests = (copy / "orders.test.yaml").read_text(encoding="utf-8").splitlines()
    line = (
        next(i + 1 for i, t in enumerate(tests) if t.strip() == "large_orders:") + 1
    )  # the first expected record of large_orders
    status, out, _ = run(capsys, str(copy))
    assert status == 1
    assert f"FAIL {copy}/orders.test.yaml::a large foreign order is passed on for review" in out
    assert (
        f"    topic large_orders, record 1 (line {line}) was not produced (the topic holds "
        "fewer records):\n      expected: {key: acct-9, value: {id: o1, account_id: acct-9, "
        "amount: 1500.0," in out
    )
    assert out.splitlines()[-1].endswith(" passed, 1 failed")


def test_a_differing_field_is_named_by_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shop(
        tmp_path,
        AGENTS,
        """\
cases:
  - name: big orders pass
    inputs:
      - topic: orders
        key: k1
        value: {id: o1, amount: 150, country: DE}
      - topic: orders
        key: k1
        value: {id: o2, amount: 50}
    expect:
      big:
        - key: k1
          value: {id: o1, amount: 151, country: DE}
""",
    )
    status, out, _ = run(capsys, str(tmp_path))
    assert status == 1
    assert (
        "    topic big, record 1 (line 12) does not match: at value.amount: expected 151.0, "
        "got 150.0\n"
        "      expected: {key: k1, value: {id: o1, amount: 151.0, country: DE}}\n"
        "      actual:   {key: k1, value: {id: o1, amount: 150.0, country: DE}} "
        "(partition 1, offset 0)\n"
    ) in out
    assert out.splitlines()[-1] == "0 passed, 1 failed"


def test_take_within_fires_on_the_virtual_clock_never_by_waiting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = "{id: o1, amount: 150.0, country: null}"
    shop(
        tmp_path,
        AGENTS.replace("within 5s", "within 1h"),
        f"""\
cases:
  - name: before the deadline
    inputs:
      - topic: orders
        key: k1
        value: {record}
      - advance: 3599999ms
    expect:
      batches: []
  - name: at the deadline
    inputs:
      - topic: orders
        key: k1
        value: {record}
      - advance: 1h
    expect:
      batches:
        - key: k1
          value: [{record}]
  - name: the clock stands still when no step moves it
    inputs:
      - topic: orders
        key: k1
        value: {record}
    expect:
      batches: []
""",
    )
    # An hour-long deadline: waiting for it on the wall clock would pass the runner's
    # REAL_TIME_LIMIT and fail the case, so passing proves the clock was virtual.
    status, out, _ = run(capsys, str(tmp_path))
    assert status == 0, out
    assert out.splitlines()[-1] == "3 passed, 0 failed"


def test_a_hook_that_sleeps_takes_virtual_time_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shop(
        tmp_path,
        "agent big_orders = from orders | process slow | to big\n",
        """\
cases:
  - name: an hour-long hook
    inputs:
      - topic: orders
        key: k1
        value: {id: o1, amount: 150}
    expect:
      big:
        - key: k1
          value: {id: o1, amount: 150}
""",
    )
    # On the wall clock the hook would take an hour, and the runner stops a case after
    # REAL_TIME_LIMIT real seconds with a failure: passing proves the hour was virtual.
    status, out, _ = run(capsys, str(tmp_path))
    assert status == 0, out
    assert "1 passed, 0 failed" in out


def test_dead_letters_are_expected_by_type_and_message_and_unexpected_ones_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shop(
        tmp_path,
        "agent big_orders = from orders | process check | to big\n",
        """\
cases:
  - name: expected
    inputs:
      - topic: orders
        key: k1
        value: {id: o1, amount: -5}
    dead_letters:
      - topic: orders
        agent: big_orders
        type: ValueError
        error: negative amount
  - name: not expected
    inputs:
      - topic: orders
        key: k1
        value: {id: o1, amount: -5}
""",
    )
    status, out, _ = run(capsys, str(tmp_path))
    assert status == 1
    assert f"PASS {tmp_path}/shop.test.yaml::expected\n" in out
    assert (
        f"FAIL {tmp_path}/shop.test.yaml::not expected\n"
        "    1 unexpected dead letter (the case expects none):\n"
        "      actual:   {topic: orders, key: k1, agent: big_orders, type: ValueError, "
        "error: negative amount -5.0}\n"
    ) in out


def test_update_writes_what_the_program_produced_and_keeps_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shop(
        tmp_path,
        AGENTS,
        """\
# kept
cases:
  - name: one
    inputs:  # kept too
      - topic: orders
        key: k1
        value: {id: o1, amount: 150}
      - topic: orders
        key: k2
        value: {id: o2, amount: 10}
    expect:
      big: []

  - name: two
    inputs: []
""",
    )
    status, out, _ = run(capsys, str(tmp_path), "--update", "-k", "ONE")
    assert status == 0, out
    assert (
        (tmp_path / "shop.test.yaml").read_text(encoding="utf-8")
        == """\
# kept
cases:
  - name: one
    inputs:  # kept too
      - topic: orders
        key: k1
        value: {id: o1, amount: 150}
      - topic: orders
        key: k2
        value: {id: o2, amount: 10}
    expect:
      big:
        - key: k1
          value: {id: o1, amount: 150.0, country: null}

  - name: two
    inputs: []
"""
    )
    status, out, _ = run(capsys, str(tmp_path))
    assert status == 0
    assert out.splitlines()[-1] == "2 passed, 0 failed"


def test_k_selects_cases_and_junit_xml_reports_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shop(
        tmp_path,
        AGENTS,
        """\
cases:
  - name: passes
    expect: {big: []}
  - name: fails
    inputs:
      - {topic: orders, key: k1, value: {id: o1, amount: 150}}
    expect: {big: []}
  - name: other one
""",
    )
    report = tmp_path / "report.xml"
    status, out, _ = run(capsys, str(tmp_path / "shop.sdl"), "-k", "A", "--junit-xml", str(report))
    assert status == 1
    assert out.splitlines()[-1] == "1 passed, 1 failed"
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    cases = {c.get("name"): c.find("failure") for c in suite.iter("testcase")}
    assert set(cases) == {"passes", "fails"}
    assert cases["passes"] is None
    failure = cases["fails"]
    assert failure is not None
    assert (failure.get("message") or "").startswith("topic big: 1 record more than expected")


def test_an_invalid_test_file_exits_2_and_check_reports_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shop(
        tmp_path,
        AGENTS,
        """\
cases:
  - name: typo
    inputs:
      - {topic: oders, value: {id: o1, amount: 150}}
""",
    )
    status, out, err = run(capsys, str(tmp_path))
    assert status == 2
    expected = (
        f"{tmp_path}/shop.test.yaml:4:17: error[E403]: the program has no topic 'oders'\n"
        "    |       - {topic: oders, value: {id: o1, amount: 150}}\n"
        "    |                 ^^^^^\n"
        "hint: did you mean 'orders'?\n"
    )
    assert expected in err
    assert out.splitlines()[-1] == "0 passed, 0 failed"
    assert main(["check", str(tmp_path / "shop.sdl")]) == 1
    _, err = capsys.readouterr()
    assert expected in err


# ---------------------------------------------------------------------------------------------
# Property: the harness is deterministic, so what --update writes is what the next run sees.

OPS = [
    "where amount > {n}",
    "group_by id",
    "take {small} within {secs}s",
    "echo copy",
]


@st.composite
def programs_and_cases(draw: st.DrawFn) -> tuple[str, str]:
    agents = []
    for i in range(draw(st.integers(1, 3))):
        ops = draw(st.lists(st.sampled_from(OPS), max_size=3, unique=True))
        pipeline = []
        batched = False
        for op in ops:
            if op.startswith("take"):
                if batched:
                    continue
                batched = True
            elif batched:
                continue  # later operations would need list[Order]
            pipeline.append(
                op.format(
                    n=draw(st.integers(0, 100)),
                    small=draw(st.integers(1, 4)),
                    secs=draw(st.integers(1, 10)),
                )
            )
        out = "batches" if batched else "big"
        source = draw(st.sampled_from(["orders", "orders & more"]))
        agents.append(f"agent a{i} = from {source} | " + " | ".join([*pipeline, f"to {out}"]))
    program = (
        "app prop\nrecord Order {\n    id: str\n    amount: int\n}\n"
        "topic orders: Order key str partitions 3\ntopic more: Order key str partitions 2\n"
        "topic copy: Order key str partitions 2\ntopic big: Order key str partitions 2\n"
        "topic batches: list[Order] key str\n" + "\n".join(agents) + "\n"
    )
    window = draw(st.sampled_from([None, "", "window tumbling 5s ", "window session 2s "]))
    if window is not None:  # a table: --update writes its rows, and the next run reads them
        program += (
            "record Count {\n    id: str\n    n: int\n    total: int\n}\n"
            "topic counted: Count key str\ntable counts: Count key str\n"
            f"agent tally = from orders | group_by id | aggregate counts {window}"
            "{ id = key, n = count(), total = sum(amount) } | to counted\n"
        )
    steps = []
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.integers(0, 4)) == 0:
            steps.append(f"      - advance: {draw(st.integers(1, 8000))}ms")
            continue
        topic = draw(st.sampled_from(["orders", "more"]))
        key = draw(st.sampled_from(["a", "b", "c", None]))
        ident = draw(st.sampled_from(["x", "y", "z"]))
        amount = draw(st.integers(-5, 200))
        keyed = "" if key is None else f"key: {key}, "
        if draw(st.integers(0, 9)) == 0:
            steps.append(f"      - {{topic: {topic}, {keyed}raw: 'not an order'}}")
        else:
            value = f"{{id: {ident}, amount: {amount}}}"
            steps.append(f"      - {{topic: {topic}, {keyed}value: {value}}}")
    tests = "cases:\n  - name: random\n    inputs:\n" + ("\n".join(steps) or "      []") + "\n"
    return program, tests


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs_and_cases())
def test_update_then_test_passes_for_random_programs(case: tuple[str, str]) -> None:
    import tempfile

    program, tests = case
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "prop.sdl").write_text(program, encoding="utf-8")
        (Path(folder) / "prop.test.yaml").write_text(tests, encoding="utf-8")
        assert main(["test", folder, "--update"]) == 0
        updated = (Path(folder) / "prop.test.yaml").read_text(encoding="utf-8")
        assert main(["test", folder]) == 0, program + updated


def test_an_invalid_program_exits_2_with_its_diagnostics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shop(tmp_path, "agent big_orders = from orders | where amout > 100 | to big\n", "cases: []\n")
    status, out, err = run(capsys, str(tmp_path))
    assert status == 2
    assert "error[E201]: record Order has no field 'amout'" in err
    assert f"{tmp_path}/shop.sdl: the program has errors\n" in err
    assert out.splitlines()[-1] == "0 passed, 0 failed"


KEEPER = """\
app keeper_{name}
record Order {{ id: str }}
topic orders: Order key str
topic kept: Order key str
hooks "hooks.py" {{ keep(Order) -> bool }}
agent keep = from orders | filter keep | to kept
"""

KEEPER_TESTS = """\
cases:
  - name: {name} keeps only its own orders
    inputs:
      - {{topic: orders, key: k, value: {{id: a}}}}
      - {{topic: orders, key: k, value: {{id: b}}}}
    expect:
      kept:
        - {{key: k, value: {{id: {name}}}}}
  - name: {name} counts from zero in every case
    inputs:
      - {{topic: orders, key: k, value: {{id: {name}}}}}
    expect:
      kept:
        - {{key: k, value: {{id: {name}}}}}
"""


def test_each_program_and_case_imports_its_own_helper_modules(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Two programs whose hooks import a local module of the same name, `helpers`, which also
    # keeps state: each must get its own module, and each case a fresh one.
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "keeper.sdl").write_text(KEEPER.format(name=name), encoding="utf-8")
        (folder / "keeper.test.yaml").write_text(KEEPER_TESTS.format(name=name), "utf-8")
        (folder / "hooks.py").write_text(
            "import helpers\n\n\ndef keep(order):\n    return helpers.admit(order.id)\n",
            encoding="utf-8",
        )
        (folder / "helpers.py").write_text(
            f"SEEN = []\n\n\ndef admit(id):\n    SEEN.append(id)\n"
            f"    return id == {name!r} and len(SEEN) <= 2\n",
            encoding="utf-8",
        )
    status, out, err = run(capsys, str(tmp_path / "a"), str(tmp_path / "b"))
    assert (status, err) == (0, "")
    assert out.splitlines()[-1] == "4 passed, 0 failed"
    assert "helpers" not in sys.modules


def test_a_hooks_module_that_exits_at_import_is_an_invalid_program_not_a_silent_pass(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "keeper.sdl").write_text(KEEPER.format(name=name), encoding="utf-8")
        (folder / "keeper.test.yaml").write_text(KEEPER_TESTS.format(name=name), "utf-8")
        (folder / "helpers.py").write_text("def admit(id):\n    return True\n", "utf-8")
    (tmp_path / "a" / "hooks.py").write_text(
        "import sys\n\nsys.exit(0)\n\n\ndef keep(order):\n    return True\n", "utf-8"
    )
    (tmp_path / "b" / "hooks.py").write_text(
        "def keep(order):\n    return order.id == 'b'\n", encoding="utf-8"
    )
    status, out, err = run(capsys, str(tmp_path / "a"), str(tmp_path / "b"))
    assert status == 2
    assert err.splitlines()[0] == (
        f"{tmp_path / 'a' / 'keeper.test.yaml'}: importing the program failed: SystemExit: 0"
    )
    assert out.splitlines()[-1] == "2 passed, 0 failed"


# ---------------------------------------------------------------------------------------------
# Expected table contents

LEDGER = """\
app ledger

record Order {
    id: str
    account: str
    amount: float
}
record Totals {
    account: str
    orders: int
    amount: float
}
record Minute {
    account: str
    start: time
    orders: int
}

topic orders: Order key str partitions 2
topic totals: Totals key str partitions 2
topic minutes: Minute key str partitions 2
table by_account: Totals key str
table per_minute: Minute key str

agent totals =
    from orders
    | group_by account
    | aggregate by_account { account = key, orders = count(), amount = sum(amount) }
    | to totals
agent minutes =
    from orders
    | group_by account
    | aggregate per_minute window tumbling 1m grace 5m
        { account = key, start = window.start, orders = count() }
    | to minutes
"""

LEDGER_INPUTS = """\
    inputs:
      - {topic: orders, key: a1, value: {id: o1, account: a1, amount: 10}, timestamp: 1772366405000}
      - {topic: orders, key: a2, value: {id: o2, account: a2, amount: 2}, timestamp: 1772366410000}
      - {topic: orders, key: a1, value: {id: o3, account: a1, amount: 20}, timestamp: 1772366470000}
"""


def ledger(tmp_path: Path, cases: str) -> Path:
    (tmp_path / "ledger.sdl").write_text(LEDGER, encoding="utf-8")
    (tmp_path / "ledger.test.yaml").write_text(cases, encoding="utf-8")
    return tmp_path


def test_expected_table_rows_pass_by_key_and_window_in_any_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger(
        tmp_path,
        f"""\
cases:
  - name: rows
{LEDGER_INPUTS}\
    tables:
      by_account:
        - key: a2
          value: {{account: a2, orders: 1, amount: 2.0}}
        - key: a1
          value: {{account: a1, orders: 2, amount: 30}}
      per_minute:
        - key: a1
          window: [1772366460000, "2026-03-01T12:02:00Z"]
          value: {{account: a1, start: "2026-03-01T13:01:00+01:00", orders: 1}}
        - {{key: a2, window: ["2026-03-01T12:00:00Z", "2026-03-01T12:01:00Z"]}}
        - key: a1
          window: ["2026-03-01T12:00:00Z", "2026-03-01T12:01:00Z"]
          value: {{account: a1, start: 1772366400000, orders: 1}}
""",
    )
    status, out, _ = run(capsys, str(tmp_path))
    assert (status, out.splitlines()[-1]) == (0, "1 passed, 0 failed"), out


def test_a_differing_table_row_names_the_field_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger(
        tmp_path,
        f"""\
cases:
  - name: rows
{LEDGER_INPUTS}\
    tables:
      by_account:
        - key: a1
          value: {{account: a1, orders: 2, amount: 31}}
        - key: a2
          value: {{account: a2, orders: 1, amount: 2.0}}
""",
    )
    status, out, _ = run(capsys, str(tmp_path))
    assert status == 1
    assert (
        "    table by_account, row 1 (line 9) does not match: at value.amount: expected 31.0, "
        "got 30.0\n"
        "      expected: {key: a1, value: {account: a1, orders: 2, amount: 31.0}}\n"
        "      actual:   {key: a1, value: {account: a1, orders: 2, amount: 30.0}}\n"
    ) in out
    assert out.splitlines()[-1] == "0 passed, 1 failed"


def test_a_missing_and_an_extra_table_row_fail_the_case(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger(
        tmp_path,
        f"""\
cases:
  - name: rows
{LEDGER_INPUTS}\
    tables:
      by_account:
        - {{key: a3}}
        - {{key: a1}}
      per_minute:
        - {{key: a1, window: [1772366460000, 1772366520000]}}
        - {{key: a1, window: [1772366520000, 1772366580000]}}
        - {{key: a2, window: [1772366400000, 1772366460000]}}
""",
    )
    status, out, _ = run(capsys, str(tmp_path))
    assert status == 1
    assert (
        "    table by_account, row 1 (line 9) is not in the table (no row has key a3):\n"
        "      expected: {key: a3}\n"
        "    table by_account: 1 row more than expected:\n"
        "      actual:   {key: a2, value: {account: a2, orders: 1, amount: 2.0}}\n"
        "    table per_minute, row 2 (line 13) is not in the table (no row has key a1 and "
        "window ['2026-03-01T12:02:00.000Z', '2026-03-01T12:03:00.000Z']):\n"
        "      expected: {key: a1, window: ['2026-03-01T12:02:00.000Z', "
        "'2026-03-01T12:03:00.000Z']}\n"
        "    table per_minute: 1 row more than expected:\n"
        "      actual:   {key: a1, window: ['2026-03-01T12:00:00.000Z', "
        "'2026-03-01T12:01:00.000Z'], value: {account: a1, start: '2026-03-01T12:00:00.000Z', "
        "orders: 1}}\n"
    ) in out


def test_an_empty_table_expectation_fails_when_the_table_has_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger(
        tmp_path,
        f"""\
cases:
  - name: no orders
    tables: {{by_account: []}}
  - name: orders
{LEDGER_INPUTS}\
    tables: {{by_account: []}}
""",
    )
    status, out, _ = run(capsys, str(tmp_path))
    assert status == 1
    assert "PASS " in out.splitlines()[0] and out.splitlines()[0].endswith("::no orders")
    assert "    table by_account: 2 rows more than expected:\n" in out
    assert out.splitlines()[-1] == "1 passed, 1 failed"


def test_update_writes_the_tables_of_a_case_and_the_next_run_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger(
        tmp_path,
        f"""\
cases:
  - name: new
{LEDGER_INPUTS}\
    expect: {{}}

  - name: stale
    inputs:
      - {{topic: orders, value: {{id: o1, account: a1, amount: 10}}, timestamp: 0}}
    expect: {{}}
    tables:  # replaced
      per_minute: []
      by_account:
        - {{key: a9}}

  - name: nothing
    expect: {{}}
    tables:
      by_account: [{{key: a1}}]
""",
    )
    status, out, _ = run(capsys, str(tmp_path), "--update")
    assert status == 0, out
    written = (tmp_path / "ledger.test.yaml").read_text(encoding="utf-8")
    # The topics the case's agents wrote go under `expect:` as before; the tables follow.
    assert (
        """\
    tables:
      by_account:
        - key: a1
          value: {account: a1, orders: 2, amount: 30.0}
        - key: a2
          value: {account: a2, orders: 1, amount: 2.0}
      per_minute:
        - key: a1
          window: ['2026-03-01T12:00:00.000Z', '2026-03-01T12:01:00.000Z']
          value: {account: a1, start: '2026-03-01T12:00:00.000Z', orders: 1}
        - key: a1
          window: ['2026-03-01T12:01:00.000Z', '2026-03-01T12:02:00.000Z']
          value: {account: a1, start: '2026-03-01T12:01:00.000Z', orders: 1}
        - key: a2
          window: ['2026-03-01T12:00:00.000Z', '2026-03-01T12:01:00.000Z']
          value: {account: a2, start: '2026-03-01T12:00:00.000Z', orders: 1}

  - name: stale
"""
        in written
    )
    assert (
        """\
          headers: {streamc.position: 'orders:0:0'}
    tables:
      by_account:
        - key: a1
          value: {account: a1, orders: 1, amount: 10.0}
      per_minute:
        - key: a1
          window: ['1970-01-01T00:00:00.000Z', '1970-01-01T00:01:00.000Z']
          value: {account: a1, start: '1970-01-01T00:00:00.000Z', orders: 1}

  - name: nothing
    expect: {}
    tables:
      by_account: []
"""
        in written
    )
    assert "replaced" not in written and "a9" not in written
    status, out, _ = run(capsys, str(tmp_path))
    assert (status, out.splitlines()[-1]) == (0, "3 passed, 0 failed"), out
