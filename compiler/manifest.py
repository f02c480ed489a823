"""The build manifest: which files in an output folder streamc wrote, and what it wrote.

`streamc build` keeps `.streamc-manifest.json` at the root of its output folder, listing every
file it wrote with the SHA-256 of its contents. A rebuild overwrites and deletes only files the
manifest lists, so whatever else the user keeps in the folder is never touched. The text is
deterministic (sorted, no times or versions): the golden trees pin it like any generated file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import PurePosixPath

MANIFEST = PurePosixPath(".streamc-manifest.json")
_NOTE = "Files written by `streamc build`; a rebuild changes or deletes only these."


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_text(files: Mapping[PurePosixPath, str]) -> str:
    """The manifest of a build that writes `files` (relative path -> text)."""
    return digests_text({path: digest(text.encode("utf-8")) for path, text in files.items()})


def digests_text(digests: Mapping[PurePosixPath, str]) -> str:
    """A manifest listing `digests` (relative path -> digest)."""
    entries = {str(path): digests[path] for path in sorted(digests)}
    return json.dumps({"note": _NOTE, "files": entries}, indent=2) + "\n"


def with_manifest(files: Mapping[PurePosixPath, str]) -> dict[PurePosixPath, str]:
    """The whole output tree: the generated files and their manifest."""
    assert MANIFEST not in files
    return {**files, MANIFEST: manifest_text(files)}


def parse_manifest(text: str) -> dict[PurePosixPath, str] | None:
    """The files a manifest lists (path -> digest), or None if `text` is not a manifest.

    Paths that are absolute or climb out with `..` make the whole manifest invalid: a
    manifest is read from a folder anyone may have edited, and must not steer deletions.
    """
    try:
        data = json.loads(text)
    except ValueError:
        return None
    entries = data.get("files") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        return None
    files: dict[PurePosixPath, str] = {}
    for name, hashed in entries.items():
        path = PurePosixPath(name)
        if (
            not isinstance(hashed, str)
            or not name
            or "\\" in name
            or path.is_absolute()
            or ".." in path.parts
            or path == MANIFEST
        ):
            return None
        files[path] = hashed
    return files
