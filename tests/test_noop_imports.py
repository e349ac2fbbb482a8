"""A no-op `ft run` / `ft status` on a warm compiled-program cache imports neither the
compiler's libraries nor the training stack; a corrupt or stale cache is never used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import example_files, run_ft
from ftlang.runtime import progcache

pytestmark = pytest.mark.e2e

# Training included (a 2-step run of a tiny model), so the no-op walks every kind of node.
PIPELINE = '''ft 0.1

use "shared.ft" { corpus }

curate texts {
  sql "SELECT text FROM corpus WHERE length(text) > 3"
}

model base {
  init = tiny(hidden = 16, layers = 1, heads = 2, vocab = 128, context = 32, data = texts)
}

train pre {
  from = base
  data = texts
  objective = clm
  max_steps = 2
  max_length = 16
}
'''
SHARED = '''ft 0.1

dataset corpus {
  source = jsonl("data/corpus.jsonl")
}
'''
FORBIDDEN = ("torch", "transformers", "peft", "trl", "sqlglot", "networkx", "lark", "duckdb")


def _project(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    rows = [json.dumps({"text": f"row {i}: the cat sat on mat {i}"}) for i in range(40)]
    (root / "data" / "corpus.jsonl").write_text("\n".join(rows) + "\n")
    (root / "shared.ft").write_text(SHARED)
    (root / "p.ft").write_text(PIPELINE)
    return root


def _imports(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Runs `ft ARGS` under -X importtime; the top-level packages it imported."""
    env = dict(os.environ, NO_COLOR="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "ftlang.runtime.cli", *args],
                       cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    return r, {m.split(".")[0] for m in _modules(r)}


def _modules(r: subprocess.CompletedProcess[str]) -> set[str]:
    """Every module (dotted names) an `_imports` run imported."""
    return {line.rsplit("|", 1)[1].strip()
            for line in r.stderr.splitlines() if line.startswith("import time:") and "|" in line}


def test_warm_noop_run_and_status_import_nothing_heavy(tmp_path: Path) -> None:
    proj = _project(tmp_path / "p")
    first = run_ft("run", "p.ft", cwd=proj)
    assert first.returncode == 0, first.stderr
    assert list((proj / ".ft" / "progcache").glob("*.bin")), "the first run writes the cache"
    # Where ftlang's own files changed during that run (a checkout being edited), this
    # compiles again and stores the entry the measured runs below then use.
    assert run_ft("plan", "p.ft", cwd=proj).returncode == 0

    states = {f: f.stat().st_mtime_ns for f in (proj / ".ft" / "state").rglob("*.json")}
    run, mods = _imports(["run", "p.ft"], proj)
    assert run.returncode == 0, run.stderr[-2000:]
    assert states and {f: f.stat().st_mtime_ns for f in states} == states  # no state file rewritten
    assert "nothing to do: 4 steps cached" in run.stderr
    assert "ftlang" in mods  # the probe itself works: it saw imports
    assert sorted(set(FORBIDDEN) & mods) == []

    status, mods = _imports(["status", "p.ft"], proj)
    assert status.returncode == 0, status.stderr[-2000:]
    assert "cached" in status.stdout and "last run" in status.stdout
    assert sorted(set(FORBIDDEN) & mods) == []


def test_check_after_an_edit_outside_the_queries_imports_neither_sqlglot_nor_networkx(tmp_path: Path) -> None:
    """After an edit, the compile memo answers for every unchanged curate query (its Shape)
    and the graph is a list of edges: `ft check` compiles without sqlglot or networkx."""
    proj = _project(tmp_path / "p")
    (proj / ".ft").mkdir()
    assert run_ft("check", "p.ft", cwd=proj).returncode == 0
    (proj / "p.ft").write_text(PIPELINE.replace("max_steps = 2", "max_steps = 3"))
    r, mods = _imports(["check", "p.ft"], proj)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "lark" in mods  # it compiled: the edited block was parsed again
    assert sorted({"sqlglot", "networkx", "torch", "transformers"} & mods) == []
    # Only a model card reads package versions: importlib.metadata (with email and zipfile
    # behind it) costs every compile otherwise.
    assert "importlib.metadata" not in _modules(r)
    (proj / "p.ft").write_text(PIPELINE.replace("length(text) > 3", "length(text) > 4"))
    r, mods = _imports(["check", "p.ft"], proj)
    assert r.returncode == 0 and "sqlglot" in mods  # a changed query is parsed


def test_check_of_a_parquet_dataset_does_not_import_pyarrow(tmp_path: Path) -> None:
    """The compile reads a Parquet file's column names from its footer with DuckDB: a
    consumer's missing column is still found, and pyarrow (with numpy) is not imported."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"prompt": ["a"], "answer": ["b"]}), tmp_path / "data" / "rows.parquet")
    text = ('ft 0.1\ndataset rows {\n  source = parquet("data/rows.parquet")\n}\n'
            'curate c {\n  sql "SELECT prompt, completion FROM rows"\n}\n')
    (tmp_path / "p.ft").write_text(text)
    r, mods = _imports(["check", "p.ft"], tmp_path)
    assert r.returncode != 0 and "no column `completion` in rows" in r.stderr, r.stderr[-2000:]
    assert sorted({"pyarrow", "numpy", "pandas", "torch"} & mods) == []


def _blocks(n: int) -> str:
    return "ft 0.1\n\n" + "".join(
        f'dataset d{i} {{\n  source = jsonl("data/c.jsonl")\n}}\n\n' for i in range(n))


def _small(root: Path, text: str = "") -> Path:
    (root / ".ft").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data" / "c.jsonl").write_text('{"text": "a"}\n')
    (root / "p.ft").write_text(text or _blocks(2))
    return root / "p.ft"


def test_cache_is_used_when_nothing_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = _small(tmp_path)
    monkeypatch.chdir(tmp_path)
    first = progcache.compile_cached(f)
    assert not isinstance(first, progcache.CachedProgram)
    again = progcache.compile_cached(f)
    assert isinstance(again, progcache.CachedProgram)
    assert again.order() == first.order() and list(again.nodes) == list(first.nodes)
    assert sorted(again.graph.edges) == sorted(first.graph.edges)  # rebuilt on demand
    assert again.nodes == first.nodes and again.sources == first.sources  # specs, params, spans
    assert again.nodes["dataset.d0"].spec.signature.attrs[0].required  # sentinels keep identity


def _entry(tmp_path: Path) -> Path:
    (entry,) = (tmp_path / ".ft" / "progcache").glob("*.bin")
    return entry


@pytest.mark.parametrize("damage", ["edit", "flip", "truncate", "garbage", "empty"])
def test_corrupt_cache_is_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    f = _small(tmp_path)
    monkeypatch.chdir(tmp_path)
    progcache.compile_cached(f)
    entry = _entry(tmp_path)
    blob = bytearray(entry.read_bytes())
    if damage == "edit":  # still a valid pickle, of another program: only the digest tells
        at = blob.rindex(b"dataset.d0")
        blob[at + 9:at + 10] = b"7"
    elif damage == "flip":  # one byte of the pickled program, same size
        blob[-20] ^= 0x01
    elif damage == "truncate":
        blob = blob[:-30]
    elif damage == "garbage":
        blob = bytearray(b"ftprog2\n{}\n" + os.urandom(200))
    else:
        blob = bytearray()
    entry.write_bytes(bytes(blob))
    assert progcache.load(tmp_path, "p.ft", f.read_text()) is None
    fresh = progcache.compile_cached(f)
    assert not isinstance(fresh, progcache.CachedProgram) and list(fresh.nodes) == ["dataset.d0", "dataset.d1"]
    assert isinstance(progcache.compile_cached(f), progcache.CachedProgram)  # rewritten, whole


def test_stale_cache_is_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = 'ft 0.1\n\nuse "lib.ft" { qa }\n\ndataset d {\n  source = jsonl(env("SRC", "data/c.jsonl"))\n}\n'
    f = _small(tmp_path, text)
    (tmp_path / "lib.ft").write_text('ft 0.1\n\ntemplate qa = plain(separator = "\\n")\n')
    (tmp_path / "data" / "b.jsonl").write_text('{"text": "b"}\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SRC", raising=False)

    def cached() -> bool:
        return isinstance(progcache.compile_cached(f), progcache.CachedProgram)

    progcache.compile_cached(f)
    assert cached()
    # The .ft text itself.
    f.write_text(text + "\n")
    assert not cached() and cached()
    # A `use`d file.
    (tmp_path / "lib.ft").write_text('ft 0.1\n\ntemplate qa = plain(separator = " ")\n')
    p = progcache.compile_cached(f)
    assert not isinstance(p, progcache.CachedProgram)
    assert cached()
    # A variable env(...) reads: the dataset now names another file.
    monkeypatch.setenv("SRC", "data/b.jsonl")
    p = progcache.compile_cached(f)
    assert not isinstance(p, progcache.CachedProgram)
    assert p.nodes["dataset.d"].params["source"].args["path"].rel == "data/b.jsonl"
    assert cached()
    # An input file the compiler peeked at (its columns).
    (tmp_path / "data" / "b.jsonl").write_text('{"text": "b", "extra": 1}\n')
    assert not cached() and cached()
    # ftlang or a library the compiler uses (a stdlib declaration, a step version).
    monkeypatch.setattr(progcache, "_package_fingerprint", lambda: "another install")
    assert not cached() and cached()
    # The working folder (paths are shown relative to it).
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    p = progcache.compile_cached(f)
    assert not isinstance(p, progcache.CachedProgram) and str(p.file) == str(f)


@pytest.mark.parametrize("example", example_files(), ids=lambda p: p.name)
def test_every_example_round_trips(example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each shipped example can be cached (nothing in it that pickling loses) and comes back equal."""
    import shutil

    proj = tmp_path / "ex"
    shutil.copytree(example.parent, proj, ignore=shutil.ignore_patterns(".ft", "out"))
    (proj / ".ft").mkdir(exist_ok=True)
    monkeypatch.chdir(proj)
    first = progcache.compile_cached(proj / example.name)
    again = progcache.compile_cached(proj / example.name)
    assert isinstance(again, progcache.CachedProgram)
    assert again.nodes == first.nodes and again.order() == first.order()
    assert again.warnings == first.warnings


def test_no_cache_without_ft_folder_or_with_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftlang.lang.diagnostics import FtError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "c.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "p.ft").write_text(_blocks(1))
    progcache.compile_cached(tmp_path / "p.ft")
    assert not (tmp_path / ".ft").exists()  # `ft check` on a file never run writes nothing
    (tmp_path / ".ft").mkdir()
    (tmp_path / "p.ft").write_text(_blocks(1).replace("c.jsonl", "missing.jsonl"))
    with pytest.raises(FtError):
        progcache.compile_cached(tmp_path / "p.ft")
    assert not list((tmp_path / ".ft").rglob("*.bin"))


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_off_while_compiling_and_as_it_was_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, enabled: bool) -> None:
    """compile_cached turns Python's cyclic collector off for the compile, the cache read
    and the write, and leaves it as it found it, also when the compile fails."""
    import gc

    from ftlang.lang.diagnostics import FtError

    from ftlang import compiler

    f = _small(tmp_path)
    monkeypatch.chdir(tmp_path)
    seen: list[bool] = []
    real = compiler.compile_source

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(gc.isenabled())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(compiler, "compile_source", spy)
    (gc.enable if enabled else gc.disable)()
    try:
        progcache.compile_cached(f)
        assert seen == [False] and gc.isenabled() is enabled
        f.write_text(f.read_text() + "\nnot a block\n")
        with pytest.raises(FtError):
            progcache.compile_cached(f)
        assert seen == [False, False] and gc.isenabled() is enabled
    finally:
        gc.enable()
