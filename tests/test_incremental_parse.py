"""lang/incremental.py gives exactly parser.parse's module (spans included) and parses only
the pieces that changed; anything unusual falls back to the whole file's parse and error."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from ftlang.lang import incremental, parser
from ftlang.lang.diagnostics import FtError

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted(p for p in ROOT.rglob("*.ft") if ".venv" not in p.parts and "build" not in p.parts
               and ".ft" not in p.parts)


def _same(text: str, memo: dict | None = None) -> dict:
    memo = {} if memo is None else memo
    try:
        whole = parser.parse(text, "f.ft")
    except FtError as e:
        with pytest.raises(FtError) as again:
            incremental.parse_with(text, "f.ft", memo)
        assert [d.render_plain() if hasattr(d, "render_plain") else (d.code, d.message, d.labels)
                for d in again.value.diagnostics] == \
               [d.render_plain() if hasattr(d, "render_plain") else (d.code, d.message, d.labels)
                for d in e.diagnostics]
        return memo
    assert incremental.parse_with(text, "f.ft", memo) == whole
    return memo


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_ft_file_in_the_repo_parses_to_the_same_module(path: Path) -> None:
    text = path.read_text(encoding="utf-8", errors="replace")
    memo = _same(text)
    _same(text, memo)  # again, served from the memo


def _big() -> str:
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_check import GROUP

    return "ft 0.1\n\n" + "".join(GROUP.format(i=i) for i in range(30))


def test_an_edit_reparses_only_its_block(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _big()
    memo = _same(text)
    calls: list[str] = []
    real = incremental.parse_items
    monkeypatch.setattr(incremental, "parse_items", lambda t, f: calls.append(t) or real(t, f))
    edited = text.replace("max_steps = 10", "max_steps = 11", 1)
    _same(edited, memo)
    assert len(calls) == 1 and "max_steps = 11" in calls[0]
    # A line inserted: the pieces below it move, and only they are parsed again.
    calls.clear()
    moved = edited.replace("dataset text28 {", "# a note\ndataset text28 {", 1)
    _same(moved, memo)
    assert 0 < len(calls) <= incremental.MAX_FRESH
    assert all(re.search(r"\b(raw|text|clean|chat|base|pre|sft|polish|report|release)2[89]\b", c) for c in calls), calls
    # Inserted near the top, most pieces move: the whole file is parsed at once (a piece far
    # down pays for the newlines before it), and the memo is refilled from that parse.
    calls.clear()
    top = moved.replace("dataset text1 {", "# a note\ndataset text1 {", 1)
    _same(top, memo)
    assert calls == [] and len(memo) == len(incremental.split(top))
    calls.clear()
    _same(top.replace("max_steps = 10", "max_steps = 13", 1), memo)
    assert len(calls) == 1


@pytest.mark.parametrize("text", [
    "ft 0.1\ndataset d {\n  source = jsonl(\"a.jsonl\")\n",            # unclosed block
    "ft 0.1\ndataset d }\n",                                              # a stray bracket
    "dataset d { source = jsonl(\"a\") }\nft 0.1\n",                      # version after an item
    "ft 9.9\ndataset d { source = jsonl(\"a\") }\n",                      # unknown version
    "ft 0.1\ndataset d {\n  sql \"\"\"\n  { not a bracket\n\"\"\"\n}\nmodel m { x = 1 }\n",
    "ft 0.1\n# } in a comment\ndataset d { x = \"} { ( [\" }\n\n\n   model m {\n}\n",
    "ft 0.1\r\ndataset d {\r\n  x = 1\r\n}\r\nmodel m { y = 2 }",
    "ft 0.1\ndataset d {\n  x = 1\n}\nmodel = \n",                          # a piece that does not parse
])
def test_unusual_text_gives_the_whole_files_result(text: str) -> None:
    _same(text)


def test_the_memo_keeps_only_the_current_pieces() -> None:
    memo = _same(_big())
    _same("ft 0.1\nmodel m { x = 1 }\n", memo)
    assert len(memo) == 2
