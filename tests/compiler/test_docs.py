"""docs/language.md documents every diagnostic code with a failing example and its output.

The examples are the golden cases themselves, so the docs cannot drift from what the
compiler prints. To rewrite the generated parts after changing cases:

    STREAMC_REGEN=1 .venv/bin/python -m pytest tests/compiler/test_docs.py
"""

from __future__ import annotations

import os
import re

from streamc.diagnostics import CODES

from .conftest import CASES, REPO

DOC = REPO / "docs" / "language.md"


def _table() -> str:
    return "\n".join(f"| {code} | {title} |" for code, title in CODES.items())


def _examples() -> str:
    out: list[str] = []
    seen: set[str] = set()
    for case in sorted(CASES.iterdir()):
        code = case.name.split("-")[0]
        expected = case / "expected.txt"
        if code in seen or not expected.exists() or code == "E101":
            continue  # E101 needs bytes that are not UTF-8: they cannot be shown here
        seen.add(code)
        title = case.name.split("-", 1)[1].replace("-", " ")
        source = (case / "input.sdl").read_text(encoding="utf-8")
        if len(source) > 2_000:
            continue
        hooks = ""
        for name in ("hooks.py", "hooks.py.txt"):
            if (case / name).exists():
                text = (case / name).read_text(encoding="utf-8").rstrip()
                hooks = f"with `hooks.py`:\n\n```python\n{text}\n```\n\n"
        if (case / "input.test.yaml").exists():
            text = (case / "input.test.yaml").read_text(encoding="utf-8").rstrip()
            hooks += f"with `input.test.yaml`:\n\n```yaml\n{text}\n```\n\n"
        out.append(
            f"#### {code}: {title}\n\n```sdl\n{source.rstrip()}\n```\n\n{hooks}"
            f"```\n{expected.read_text(encoding='utf-8').rstrip()}\n```\n"
        )
    out.append(
        "#### E100, E101: files that cannot be read\n\n```\n"
        "missing.sdl: error[E100]: cannot read file: No such file or directory\n"
        "input.sdl:2:19: error[E101]: file is not valid UTF-8 (byte 0xe9)\n```\n"
    )
    return "\n".join(out)


def _generated(doc: str) -> str:
    doc = re.sub(
        r"(\| code \| meaning \|\n\|---\|---\|\n)(.*?)(\n\n)",
        lambda m: m.group(1) + "<!-- codes -->" + m.group(3),
        doc,
        flags=re.S,
    )
    head, _, _ = doc.partition("<!-- examples -->")
    return (
        head.replace("<!-- codes -->", _table()) + "<!-- examples -->\n\n" + _examples()
    )


def test_language_doc_is_in_step_with_the_cases() -> None:
    doc = DOC.read_text(encoding="utf-8")
    wanted = _generated(doc)
    if os.environ.get("STREAMC_REGEN"):
        DOC.write_text(wanted, encoding="utf-8")
        doc = wanted
    assert doc == wanted, "run STREAMC_REGEN=1 pytest tests/compiler/test_docs.py"
    for code in CODES:
        assert f"| {code} |" in doc
        assert f"{code}" in doc.partition("### Examples")[2]
