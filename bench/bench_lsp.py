"""How soon `streamc lsp` publishes diagnostics after an edit of a 1,000-line program.

    .venv/bin/python bench/bench_lsp.py [--edits N] [--agents N] [--records N]

The server runs as an editor runs it, a subprocess spoken to over stdio (JSON-RPC); each
edit sends the whole text (`didChange`) and the time is taken until the diagnostics for the
document arrive. Edits alternate between a typo (an unknown field: one error) and its fix.
Prints the median and the worst time; the target is under 200 ms. No test asserts on time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "editor"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lsp_client import LspClient
from programs import big_program


def errors(diagnostics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in diagnostics if d["severity"] == 1]  # (its warnings are W501 loops)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--edits", type=int, default=40)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--records", type=int, default=40)
    args = parser.parse_args()
    text, hooks = big_program(args.agents, args.records)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "hooks.py").write_text(hooks, encoding="utf-8")
        path = root / "big.sdl"
        path.write_text(text, encoding="utf-8")
        client = LspClient(root)
        try:
            uri = client.open(path)
            assert not errors(client.diagnostics(uri)), "the generated program must be valid"
            typo = text.replace("group_by account_id", "group_by acount_id", 1)
            times = []
            for i in range(args.edits):
                edited = typo if i % 2 == 0 else text
                started = time.perf_counter()
                client.change(uri, edited)
                found = client.diagnostics(uri)
                times.append(time.perf_counter() - started)
                assert len(errors(found)) == (1 if i % 2 == 0 else 0), found
        finally:
            client.close()
    lines = text.count("\n") + 1
    print(f"program: {lines} lines, {args.agents} agents, {args.records} records")
    print(f"diagnostics after an edit: median {statistics.median(times) * 1000:.0f} ms, "
          f"worst {max(times) * 1000:.0f} ms over {args.edits} edits (target: under 200 ms)")


if __name__ == "__main__":
    main()
