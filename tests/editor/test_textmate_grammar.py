"""The VS Code extension's files: the TextMate grammar parses, its regexes compile, and it
gives a keyword scope to every keyword of grammar/streamc.lark."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EXTENSION = REPO / "editors" / "vscode"
GRAMMAR = EXTENSION / "syntaxes" / "streamc.tmLanguage.json"
KEYWORD_SCOPES = ("keyword.", "storage.type.", "constant.language.")


def rules(node: Any) -> Iterator[dict[str, Any]]:
    """Every rule of the grammar, in its top-level patterns and its repository."""
    if isinstance(node, dict):
        if "match" in node or "begin" in node:
            yield node
        for value in node.values():
            yield from rules(value)
    elif isinstance(node, list):
        for item in node:
            yield from rules(item)


def lark_keywords() -> set[str]:
    text = (REPO / "grammar" / "streamc.lark").read_text(encoding="utf-8")
    return set(re.findall(r'"([a-z_]+)"', text))


def scope_of(word: str, grammar: dict[str, Any]) -> str | None:
    """The scope the grammar gives `word`, alone or before a name. (Not after `|`: there any
    word is an operation, and each keyword must have a scope of its own.)"""
    for text in (word, f"{word} x"):
        start = text.index(word)
        for rule in rules(grammar):
            m = re.search(rule.get("match", "(?!)"), text)
            if m is None:
                continue
            if m.span() == (start, start + len(word)) and "name" in rule:
                return str(rule["name"])
            for group, capture in rule.get("captures", {}).items():
                if m.span(int(group)) == (start, start + len(word)):
                    return str(capture["name"])
    return None


def test_the_grammar_parses_and_its_regexes_compile() -> None:
    grammar = json.loads(GRAMMAR.read_text(encoding="utf-8"))
    assert grammar["scopeName"] == "source.streamc"
    found = list(rules(grammar))
    assert len(found) >= 15
    for rule in found:
        for key in ("match", "begin", "end"):
            if key in rule:
                re.compile(rule[key])
    for include in re.findall(r'"include": "#([^"]+)"', GRAMMAR.read_text(encoding="utf-8")):
        assert include in grammar["repository"]


def test_every_keyword_of_the_language_gets_a_keyword_scope() -> None:
    grammar = json.loads(GRAMMAR.read_text(encoding="utf-8"))
    keywords = lark_keywords()
    assert {"agent", "group_by", "within", "null", "and"} <= keywords
    unscoped = {k for k in keywords if not (scope_of(k, grammar) or "").startswith(KEYWORD_SCOPES)}
    assert unscoped == set()


def test_comments_strings_and_names_are_told_apart() -> None:
    grammar = json.loads(GRAMMAR.read_text(encoding="utf-8"))
    assert scope_of("# a comment", grammar) == "comment.line.number-sign.streamc"
    assert scope_of("`from`", grammar) == "variable.other.streamc"
    assert scope_of("10s", grammar) == "constant.numeric.duration.streamc"


def test_the_extension_names_files_that_exist_and_launches_the_server() -> None:
    package = json.loads((EXTENSION / "package.json").read_text(encoding="utf-8"))
    [language] = package["contributes"]["languages"]
    [grammar] = package["contributes"]["grammars"]
    assert language["extensions"] == [".sdl"]
    assert grammar["scopeName"] == "source.streamc" and grammar["language"] == language["id"]
    for path in (language["configuration"], grammar["path"], package["main"]):
        assert (EXTENSION / path).is_file(), path
    config = json.loads((EXTENSION / "language-configuration.json").read_text(encoding="utf-8"))
    assert config["comments"]["lineComment"] == "#"
    assert 'args: ["lsp"]' in (EXTENSION / package["main"]).read_text(encoding="utf-8")
