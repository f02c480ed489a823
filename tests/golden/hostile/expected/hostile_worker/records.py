"""Record types of hostile.sdl, decoded and validated by msgspec."""

import msgspec
from streamc_runtime import Record


class class_(Record, kw_only=True):
    """Record class of hostile.sdl."""

    from_: str = msgspec.field(name="from")
    import_: int = msgspec.field(default=0, name="import")
    list_: list[str] = msgspec.field(
        default_factory=lambda: ['a"b', "c\\d", "line\nbreak", "üñíçødé ☃", '"""'], name="list"
    )
    self: float = -1.5
    print: bool = True
    match_: str | None = msgspec.field(default='it\'s "quoted"\r\n\ttabbed', name="match")
    Record: str = '\\"""\\'
    msgspec_: int | None = msgspec.field(default=None, name="msgspec")


class object_(Record, kw_only=True):
    """Record object of hostile.sdl."""

    type: class_
    id: int
