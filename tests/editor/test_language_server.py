"""`streamc lsp`, driven over JSON-RPC on its stdio as an editor drives it: one test per
feature, on a copy of the sample program and its hooks module."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streamc.loader import load

from .lsp_client import LspClient

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for name in ("orders.sdl", "hooks.py"):
        shutil.copy(REPO / "samples" / name, root / name)
    return root


@pytest.fixture(scope="module")
def client(project: Path) -> Iterator[LspClient]:
    lsp = LspClient(project)
    yield lsp
    lsp.close()


@pytest.fixture(scope="module")
def sample(client: LspClient, project: Path) -> tuple[str, str]:
    path = project / "orders.sdl"
    uri = client.open(path)
    assert client.diagnostics(uri) == []
    return uri, path.read_text(encoding="utf-8")


def at(text: str, needle: str, into: int = 0) -> dict[str, int]:
    """The LSP position `into` characters into the first `needle` of `text`."""
    offset = text.index(needle) + into
    line = text.count("\n", 0, offset)
    return {"line": line, "character": offset - (text.rfind("\n", 0, offset) + 1)}


def doc(uri: str, position: dict[str, int]) -> dict[str, Any]:
    return {"textDocument": {"uri": uri}, "position": position}


def test_diagnostics_have_the_codes_and_ranges_of_streamc_check(
    client: LspClient, project: Path
) -> None:
    path = project / "typo.sdl"
    text = (
        (project / "orders.sdl")
        .read_text(encoding="utf-8")
        .replace("group_by account_id", "group_by acount_id", 1)
        .replace("| to large_orders", "| to large")
    )
    path.write_text(text, encoding="utf-8")
    uri = client.open(path, text)
    got = client.diagnostics(uri)
    expected = load(path).diagnostics
    assert [(d["code"], d["range"]["start"], d["range"]["end"]) for d in got] == [
        (d.code, {"line": d.line - 1, "character": d.col - 1},
         {"line": d.end_line - 1, "character": d.end_col - 1}) for d in expected
    ]  # fmt: skip
    assert [d["code"] for d in got] == ["E201", "E203"]
    assert got[0]["message"] == (
        "record Order has no field or hook 'acount_id'\nhint: did you mean the field 'account_id'?"
    )
    client.change(
        uri, text.replace("acount_id", "account_id").replace("to large\n", "to large_orders\n")
    )
    assert client.diagnostics(uri) == []


def test_diagnostics_of_hook_modules_and_test_files_are_published_to_them(
    client: LspClient, tmp_path: Path
) -> None:
    (tmp_path / "p.sdl").write_text(
        'topic t: int\nhooks "h.py" { show(int) }\nagent a = from t | sink show\n',
        encoding="utf-8",
    )
    (tmp_path / "h.py").write_text("def show(x: int) -> None:\n    print(x\n", encoding="utf-8")
    (tmp_path / "p.test.yaml").write_text(
        "cases:\n  - name: one\n    inputs:\n      - topic: nowhere\n        value: 1\n",
        encoding="utf-8",
    )
    uri = client.open(tmp_path / "p.sdl")
    hooks_uri = (tmp_path / "h.py").resolve().as_uri()
    test_uri = (tmp_path / "p.test.yaml").resolve().as_uri()
    broken = client.diagnostics(hooks_uri)
    assert [(d["code"], d["range"]["start"]["line"]) for d in broken] == [("E206", 1)]
    assert client.diagnostics(uri) == []
    assert client.diagnostics(test_uri) == []  # not checked against a broken program
    # The hooks module is fixed in the editor (not saved): the program is checked with it,
    # and then its test file.
    hooks = client.open(tmp_path / "h.py", "def show(x: int) -> None:\n    print(x)\n")
    assert client.diagnostics(hooks_uri) == []
    assert hooks == hooks_uri
    assert [d["code"] for d in client.diagnostics(test_uri)] == ["E403"]


def test_hover_at_an_operation_shows_the_types_before_and_after(
    client: LspClient, sample: tuple[str, str]
) -> None:
    uri, text = sample
    hover = client.request("textDocument/hover", doc(uri, at(text, "take 100", 1)))
    assert hover["contents"]["value"].splitlines()[-2:] == [
        "in: Order keyed by str  ", "out: list[Order] keyed by str"]  # fmt: skip
    hover = client.request("textDocument/hover", doc(uri, at(text, "| items", 3)))
    assert hover["contents"]["value"].endswith(
        "out: (str, Withdrawal) keyed by str")  # fmt: skip
    hover = client.request("textDocument/hover", doc(uri, at(text, "join stream", 2)))
    assert hover["contents"]["value"].endswith(
        "out: (Order, Payment) keyed by str")  # fmt: skip


def test_hover_at_a_name_shows_what_it_names(client: LspClient, sample: tuple[str, str]) -> None:
    uri, text = sample

    def hover(needle: str, into: int = 0) -> str:
        found = client.request("textDocument/hover", doc(uri, at(text, needle, into)))
        return str(found["contents"]["value"])

    assert hover("Withdrawal key str partitions 2") == (
        "```sdl\nrecord Withdrawal {\n    account_id: str\n    amount: float\n"
        "    country: str\n    atm: bool = false\n}\n```")  # fmt: skip
    assert hover("echo audit", 6) == (
        "```sdl\ntopic audit: Order key str\n```\npartitions: 4  \nKafka topic: `audit.orders.v1`"
    )
    assert hover("sink print_batch", 6) == (
        "```sdl\nprint_batch(list[Order])\n```\nhook from `hooks.py`"
    )
    assert hover("customer.country ==", 10) == (
        "```sdl\nCustomer.country: str?\n```\nfield of record Customer"
    )


def test_inlay_hints_show_the_element_type_after_each_step(
    client: LspClient, sample: tuple[str, str]
) -> None:
    uri, text = sample
    line = at(text, "agent totals")["line"]
    hints = client.request(
        "textDocument/inlayHint",
        {
            "textDocument": {"uri": uri},
            "range": {
                "start": {"line": line, "character": 0},
                "end": {"line": line + 1, "character": 0},
            },
        },
    )
    group_by = "agent totals = from orders | group_by account_id"
    assert [(h["label"], h["position"]["character"]) for h in hints] == [
        (": Order", len(group_by)),
        (": list[Order]", len(group_by + " | take 100 within 10s")),
        (": list[Order]", len(text.splitlines()[line])),
    ]


def test_go_to_definition_of_records_topics_and_hooks(
    client: LspClient, sample: tuple[str, str], project: Path
) -> None:
    uri, text = sample

    def definition(needle: str, into: int = 0) -> tuple[str, int, int]:
        found = client.request("textDocument/definition", doc(uri, at(text, needle, into)))
        start = found["range"]["start"]
        return found["uri"], start["line"], start["character"]

    assert definition("customer: Customer?", 11) == (uri, *at(text, "Customer {").values())
    assert definition("from totals", 6) == (uri, *at(text, "totals: list").values())
    hooks = (project / "hooks.py").read_text(encoding="utf-8").splitlines()
    line = next(i for i, x in enumerate(hooks) if x.startswith("def print_batch"))
    assert definition("sink print_batch", 6) == ((project / "hooks.py").as_uri(), line, 0)


def test_completion_offers_what_fits_where_the_cursor_is(client: LspClient, project: Path) -> None:
    base = (project / "orders.sdl").read_text(encoding="utf-8")
    path = project / "typing.sdl"
    uri = client.open(path, base)
    client.diagnostics(uri)

    def complete(tail: str) -> list[str]:
        text = base + tail
        client.change(uri, text)
        lines = text.split("\n")
        position = {"line": len(lines) - 1, "character": len(lines[-1])}
        result = client.request("textDocument/completion", doc(uri, position))
        return [item["label"] for item in result["items"]]

    assert complete("agent w = from withdrawals | ")[:4] == [
        "process",
        "group_by",
        "take",
        "enumerate",
    ]
    assert complete("agent w = from withdrawals | where ") == [
        "account_id",
        "amount",
        "country",
        "atm",
    ]
    assert complete("agent w = from orders | where customer.") == ["id", "country"]
    assert "account_of" in complete("agent w = from withdrawals | group_by ")
    topics = sorted(re.findall(r"^topic (\w+)", base, re.M))
    assert complete("agent w = from ")[: len(topics)] == topics
    assert complete("agent w = from orders | left join ") == ["stream"]
    assert complete("agent w = from orders | left join stream ")[: len(topics)] == topics
    assert complete("agent w = from orders | process ")[:2] == ["account_of", "add_client_info"]
    records = sorted(re.findall(r"^record (\w+)", base, re.M))
    assert complete("record R { x: ")[-len(records) :] == records


def test_document_symbols_outline_the_file(client: LspClient, sample: tuple[str, str]) -> None:
    uri, text = sample
    found = client.request("textDocument/documentSymbol", {"textDocument": {"uri": uri}})
    # Every declaration of the sample, in source order (kind and name as an outline shows).
    declared = re.findall(r"^(app|record|topic|table|hooks|agent) +\"?([A-Za-z_.]+)", text, re.M)
    assert [s["name"] for s in found] == [
        f"{kind} {name}" if kind in ("app", "hooks") else name for kind, name in declared
    ]
    assert [c["name"] for c in found[1]["children"]] == ["id", "country"]
    assert found[1]["kind"] == 23  # Struct
    assert found[-1]["kind"] == 12  # Function


def test_rename_a_field_changes_it_where_that_record_uses_it(
    client: LspClient, sample: tuple[str, str]
) -> None:
    uri, text = sample
    edit = client.request("textDocument/rename", {**doc(uri, at(text, "amount >= 1000")),
                                                  "newName": "total"})  # fmt: skip
    changed = sorted((e["range"]["start"]["line"], e["range"]["start"]["character"], e["newText"])
                     for e in edit["changes"][uri])  # fmt: skip
    order_amount = at(text, "amount: float")  # Order's, not Withdrawal's
    # the aggregates read Order's amount too
    summed = [at(text, "", m.start() + 4)
              for m in re.finditer(r"sum\(amount\)", text)]  # fmt: skip
    # and so do the selects of enriched_orders and paid_orders, through the element's name
    # (EnrichedOrder's and PaidOrder's own `amount =` are other records' fields and stay)
    selected = [at(text, "", m.start() + len("amount = order."))
                for m in re.finditer(r"amount = order\.amount", text)]  # fmt: skip
    assert len(selected) == 2
    assert changed == sorted([(order_amount["line"], 4, "total"),
                              (at(text, "amount >= 1000")["line"], 12, "total"),
                              *((p["line"], p["character"], "total") for p in selected),
                              *((p["line"], p["character"], "total") for p in summed)])  # fmt: skip


def test_rename_a_topic_or_record_changes_every_use(
    client: LspClient, sample: tuple[str, str]
) -> None:
    uri, text = sample
    edit = client.request("textDocument/rename", {**doc(uri, at(text, "from refunds", 6)),
                                                  "newName": "from"})  # fmt: skip
    assert len(edit["changes"][uri]) == 3  # declared, joined with orders, read by an agent
    assert {e["newText"] for e in edit["changes"][uri]} == {"`from`"}
    edit = client.request("textDocument/rename", {**doc(uri, at(text, "record Order", 7)),
                                                  "newName": "Purchase"})  # fmt: skip
    code = [line.partition("#")[0] for line in text.splitlines()]
    uses = [(i, m.start()) for i, line in enumerate(code) for m in re.finditer(r"\bOrder\b", line)]
    assert sorted((e["range"]["start"]["line"], e["range"]["start"]["character"])
                  for e in edit["changes"][uri]) == uses  # fmt: skip
    assert len(uses) == 12


def test_quick_fix_applies_the_did_you_mean_hint(client: LspClient, project: Path) -> None:
    path = project / "fix.sdl"
    text = (
        (project / "orders.sdl")
        .read_text(encoding="utf-8")
        .replace("sink print_batch", "sink prnt_batch")
    )
    uri = client.open(path, text)
    [diagnostic] = client.diagnostics(uri)
    actions = client.request("textDocument/codeAction", {
        "textDocument": {"uri": uri}, "range": diagnostic["range"],
        "context": {"diagnostics": [diagnostic]}})  # fmt: skip
    assert [a["title"] for a in actions] == ["Change to 'print_batch'"]
    [edit] = actions[0]["edit"]["changes"][uri]
    assert (edit["range"], edit["newText"]) == (diagnostic["range"], "print_batch")
    assert edit["range"]["start"] == at(text, "prnt_batch")


def test_formatting_returns_the_canonical_layout(client: LspClient, project: Path) -> None:
    uri = client.open(project / "messy.sdl", "topic  t:int\n")
    client.diagnostics(uri)
    edits = client.request(
        "textDocument/formatting",
        {"textDocument": {"uri": uri}, "options": {"tabSize": 4, "insertSpaces": True}},
    )
    assert [e["newText"] for e in edits] == ["topic t: int\n"]


def test_hover_after_an_error_says_which_types_are_unknown(
    client: LspClient, project: Path
) -> None:
    text = "topic t: int\ntopic u: int\nagent a = from t | process nothing | take 5 | to u\n"
    uri = client.open(project / "unknown.sdl", text)
    assert [d["code"] for d in client.diagnostics(uri)] == ["E204"]
    hover = client.request("textDocument/hover", doc(uri, at(text, "take")))
    assert hover["contents"]["value"].splitlines()[-2:] == [
        "in: unknown (see the errors) keyed by bytes  ",
        "out: unknown (see the errors) keyed by bytes",
    ]
