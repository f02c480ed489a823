"""Rewrite every golden expectation from the current compiler: `python tests/golden/regenerate.py`.

Also refreshes the copy of samples/ in tests/golden/orders and the sample's diagram in
docs/architecture.md.

Review the diff before committing it: a golden change is a change in what users get.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from golden import cases, refresh_docs_diagram, refresh_sample_copies, regenerate


def main() -> None:
    refresh_sample_copies()
    refresh_docs_diagram()
    for case in cases():
        regenerate(case)
        print(f"regenerated {case.name}")


if __name__ == "__main__":
    main()
