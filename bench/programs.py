"""Synthetic `.sdl` programs for the compiler benchmarks: many records, topics and agents
using every operation, so parse, check and emit are all exercised at scale."""

from __future__ import annotations


def big_program(agents: int = 1000, records: int = 200) -> tuple[str, str]:
    """The `.sdl` text and its hooks module."""
    lines = ["app big", ""]
    for r in range(records):
        lines += [
            f"record R{r} {{",
            "    id: str",
            "    account_id: str",
            "    amount: float",
            "    count: int = 0",
            "    note: str? = null",
            "    tags: list[str] = []",
            f"    inner: R{r - 1}?" if r else "    flag: bool = false",
            "}",
        ]
    for r in range(records):
        lines.append(f"topic t{r}: R{r} key str partitions 4")
        lines.append(f"topic u{r}: R{r} key str partitions 4")
        lines.append(f"topic batches{r}: list[R{r}] key str partitions 4")
    lines += [
        'hooks "hooks.py" {',
        "    keep(any) -> bool",
        "    show(any)",
        "    pair(str, any)",
        "}",
    ]
    shapes = [
        "from t{r} | group_by account_id | take 100 within 10s | through batches{r}",
        'from t{r} | where amount > 10 and not (note == null) | echo "copy.{a}" | to t{r}',
        "from t{r} & u{r} | filter keep | enumerate 1 | sink show",
        "from t{r} | items | sink pair",
        "from t{r} | events | sink show",
    ]
    for a in range(agents):
        r = a % records
        lines.append(f"agent a{a} = " + shapes[a % len(shapes)].format(r=r, a=a))
    hooks = (
        "from typing import Any\n\n\n"
        "def keep(value: Any) -> bool:\n    return True\n\n\n"
        "def show(value: Any) -> None:\n    pass\n\n\n"
        "def pair(key: str, value: Any) -> None:\n    pass\n"
    )
    return "\n".join(lines) + "\n", hooks
