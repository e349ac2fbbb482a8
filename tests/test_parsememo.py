"""The parse memo on disk (runtime/parsememo.py): `ft check` after an edit parses only the
edited block, reports errors at the right lines, and a damaged or foreign memo is ignored."""

from __future__ import annotations

from pathlib import Path

from conftest import run_ft
from ftlang.runtime import parsememo

BLOCK = 'dataset d{i} {{\n  source = jsonl("data/rows.jsonl")\n}}\n\n'


def _project(tmp_path: Path, n: int = 20) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    (tmp_path / "p.ft").write_text("ft 0.1\n\n" + "".join(BLOCK.format(i=i) for i in range(n)))
    return tmp_path / "p.ft"


def _memos(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / ".ft" / "progcache").glob("*.parse"))


def test_check_writes_the_memo_only_where_ft_exists_and_an_edit_reads_it(tmp_path: Path) -> None:
    path = _project(tmp_path)
    assert run_ft("check", "p.ft", cwd=tmp_path).returncode == 0
    assert not (tmp_path / ".ft").exists()  # a file never run: nothing written
    (tmp_path / ".ft").mkdir()
    assert run_ft("check", "p.ft", cwd=tmp_path).returncode == 0
    (memo_file,) = _memos(tmp_path)
    memo = parsememo.load(memo_file.with_suffix(".bin"), _package())
    assert len(memo) == 21  # the version line and 20 blocks
    # A line inserted above block 15 and an error in block 17: the diagnostic's line is the
    # new one, though blocks 0-14 came from the memo.
    text = path.read_text().replace("dataset d15 {", "# moved\ndataset d15 {")
    text = text.replace('dataset d17 {\n  source = jsonl("data/rows.jsonl")',
                        'dataset d17 {\n  source = jsonl("data/rows.jsonl")\n  sorce = 1')
    path.write_text(text)
    out = run_ft("check", "p.ft", cwd=tmp_path)
    line = text.splitlines().index("  sorce = 1") + 1
    assert out.returncode != 0 and f"p.ft:{line}:3" in out.stderr, out.stderr
    memo = parsememo.load(memo_file.with_suffix(".bin"), _package())
    assert any(key[1] == line - 2 for key in memo)  # the edited block, stored at its new line


def test_a_damaged_or_foreign_memo_is_ignored(tmp_path: Path) -> None:
    _project(tmp_path, 3)
    (tmp_path / ".ft").mkdir()
    assert run_ft("check", "p.ft", cwd=tmp_path).returncode == 0
    (memo_file,) = _memos(tmp_path)
    blob = bytearray(memo_file.read_bytes())
    blob[-5] ^= 0xFF
    memo_file.write_bytes(bytes(blob))
    assert parsememo.load(memo_file.with_suffix(".bin"), _package()) == {}
    assert parsememo.load(memo_file.with_suffix(".bin"), "another ftlang") == {}
    (tmp_path / "p.ft").write_text((tmp_path / "p.ft").read_text() + BLOCK.format(i=9))
    out = run_ft("check", "p.ft", cwd=tmp_path)
    assert out.returncode == 0 and "4 steps" in out.stdout
    # A pickle of anything but AST classes is refused, even with a matching digest.
    import hashlib
    import json
    import pickle

    payload = pickle.dumps({("p.ft", 1, b"x"): (None, [Path("/")])})
    memo_file.write_bytes(parsememo.MAGIC + json.dumps(
        {"package": _package(), "payload": hashlib.sha256(payload).hexdigest()}).encode() + b"\n" + payload)
    assert parsememo.load(memo_file.with_suffix(".bin"), _package()) == {}


def _package() -> str:
    from ftlang.runtime.progcache import _package_fingerprint

    return _package_fingerprint()
