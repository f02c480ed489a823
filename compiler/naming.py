"""Safe Python names and literals for generated code.

Every name that comes from a `.sdl` file reaches generated code through `Namer.claim`, and every
user string through `py_literal` or `doc_text`. Names are readable first (an `.sdl` name that
is already a fine identifier is kept as it is) and safe always: keywords, soft keywords,
builtins and the names the generated modules themselves use get a trailing underscore, and
collisions within one namespace get a numeric suffix.
"""

from __future__ import annotations

import builtins
import keyword
import re
import unicodedata
from dataclasses import dataclass, field

KEYWORDS = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist)

MODULE_LEVEL_UNSAFE = (
    frozenset(keyword.kwlist)
    | frozenset(keyword.softkwlist)
    | frozenset(dir(builtins))
    # Names the generated modules import or define themselves.
    | frozenset(
        {
            "annotations",
            "msgspec",
            "Any",
            "App",
            "Event",
            "Record",
            "Stream",
            "sink",
            "awaitable",
            "result_check",
            "worker_main",
            "app",
            "agents",
            "hooks",
            "records",
            "topics",
            "main",
        }
    )
)

_NOT_IDENT_CHAR = re.compile(r"[^0-9A-Za-z_]+")


def identifier(text: str) -> str:
    """A plain ASCII identifier spelled like `text` (not yet checked for clashes)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    name = _NOT_IDENT_CHAR.sub("_", ascii_text).strip("_") or "x"
    if name[0].isdigit():
        name = "_" + name
    return name


def is_safe(name: str, unsafe: frozenset[str]) -> bool:
    return (
        name.isidentifier() and name.isascii() and name not in unsafe and not name.startswith("__")
    )


@dataclass
class Namer:
    """Hands out distinct safe identifiers within one Python namespace.

    `unsafe` are the names that must never be handed out as they are; the default suits module
    level names. Record fields use a narrower set, so that a field called `id` stays `id`.
    """

    taken: set[str] = field(default_factory=set)
    unsafe: frozenset[str] = MODULE_LEVEL_UNSAFE

    def reserve(self, *names: str) -> None:
        self.taken.update(names)

    def claim(self, wanted: str) -> str:
        base = identifier(wanted)
        if not is_safe(base, self.unsafe):
            base += "_"
        name, suffix = base, 2
        while name in self.taken:
            name = f"{base}_{suffix}"
            suffix += 1
        self.taken.add(name)
        return name


def snake(name: str) -> str:
    """`OrderLine` -> `order_line`, for loop variables named after their record."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def py_literal(value: object) -> str:
    """A Python expression that evaluates to `value` (str, int, float, bool, None, tuples)."""
    if isinstance(value, str):
        text = repr(value)
        # Double quotes, as black writes them, so formatting the output is a single pass.
        if text[0] == "'" and '"' not in value:
            return '"' + text[1:-1].replace("\\'", "'") + '"'
        return text
    if value is None or isinstance(value, bool | int):
        return repr(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return f'float("{value}")'
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(py_literal(item) for item in value) + "]"
    raise TypeError(f"no Python literal for {type(value).__name__}")


def doc_text(text: str) -> str:
    """Text that can stand inside a triple-quoted docstring and reads back as `text`.

    Backslashes, quotes and every character that could end a line or confuse an editor are
    escaped; printable unicode is kept as it is.
    """
    out: list[str] = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append('\\"')
        elif char.isprintable() or char == " ":
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)
