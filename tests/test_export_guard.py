"""Exports never replace what ftlang did not write (issue: never lose a user's data).

Every case runs the real `ft` on a real file, with HOME pointed at a temp folder so a
`to = "~"` can never touch the real one.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import ft_bin

pytestmark = pytest.mark.e2e

PIPELINE = '''ft 0.1

dataset corpus {
  source = jsonl("data/corpus.jsonl")
}

model base {
  init = tiny(hidden = 16, layers = 1, heads = 2, vocab = 128, context = 32, seed = SEED, data = corpus)
}

export release {
  model = base
  to = TO
}
'''


def project(root: Path, to: str = '"out/release"', seed: int = 1, extra: str = "") -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    corpus = root / "data" / "corpus.jsonl"
    if not corpus.exists():
        corpus.write_text("".join(json.dumps({"text": f"row {i} of the corpus"}) + "\n" for i in range(30)))
    text = PIPELINE.replace("TO", to).replace("SEED", str(seed))
    if extra:
        text = text.replace("  to = ", f"  {extra}\n  to = ")
    (root / "p.ft").write_text(text)
    return root


def ft(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NO_COLOR="1", HOME=str(root.parent / "home"))
    return subprocess.run([*ft_bin(), *args, "p.ft"], cwd=root, capture_output=True, text=True,
                          timeout=300, env=env)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    (h / "docs").mkdir(parents=True)
    (h / "docs" / "thesis.txt").write_text("years of work\n")
    return h


@pytest.mark.parametrize("to, why", [
    ('"."', "the project folder"),
    ('".."', "a folder that holds the project"),
    ('"~"', "the home folder"),
    ('"data"', 'holds the input "data/corpus.jsonl"'),
    ('".ft/objects"', "inside the `.ft/` cache"),
    ('"../elsewhere"', "outside the project folder"),
    ('"link"', "the project folder"),  # a symlink to "." is resolved first
])
def test_unsafe_targets_are_compile_errors(tmp_path: Path, home: Path, to: str, why: str) -> None:
    root = project(tmp_path / "proj", to)
    (root / "link").symlink_to(root)
    before = snapshot(home), snapshot(root / "data")
    for cmd in ("check", "run"):
        out = ft(root, cmd)
        assert out.returncode == 2, out.stderr
        assert "error[FT0140]" in out.stderr and why in out.stderr, out.stderr
        assert "p.ft:13:3" in out.stderr and "Traceback" not in out.stderr
    assert (snapshot(home), snapshot(root / "data")) == before


@pytest.mark.parametrize("to", ['"dat"', '"data-out"', '"../proj-out"'])
def test_a_folder_whose_name_only_begins_like_a_guarded_one_is_not_inside_it(
        tmp_path: Path, home: Path, to: str) -> None:
    """"dat" does not hold "data/corpus.jsonl", and "../proj-out" is not inside "proj"
    (outside the project, so it needs allow_outside, but it is not the project)."""
    root = project(tmp_path / "proj", to)
    out = ft(root, "check")
    if to == '"../proj-out"':
        assert out.returncode == 2 and "outside the project folder" in out.stderr, out.stderr
    else:
        assert out.returncode == 0, out.stderr


def test_outside_the_project_needs_allow_outside(tmp_path: Path, home: Path) -> None:
    root = project(tmp_path / "proj", '"../shipped"', extra="allow_outside = true")
    out = ft(root, "run")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "shipped" / "config.json").is_file()


def test_a_changed_to_never_replaces_a_user_folder_on_a_cached_rerun(tmp_path: Path, home: Path) -> None:
    root = project(tmp_path / "proj")
    assert ft(root, "run").returncode == 0
    notes = root / "notes"
    notes.mkdir()
    (notes / "plan.md").write_text("mine\n")
    project(root, '"notes"')  # the export is cached: only `to` changed
    out = ft(root, "run")
    assert out.returncode == 1, out.stderr
    assert "non-empty folder that ftlang did not write" in out.stderr and "Traceback" not in out.stderr
    assert snapshot(notes) == {"plan.md": b"mine\n"}
    assert "failed" in ft(root, "runs").stdout.splitlines()[2]  # recorded as failed, not ok


def test_a_user_folder_is_refused_before_a_first_run_builds_anything(tmp_path: Path, home: Path) -> None:
    root = project(tmp_path / "proj", '"notes"')
    (root / "notes").mkdir()
    (root / "notes" / "plan.md").write_text("mine\n")
    out = ft(root, "run")
    assert out.returncode == 1 and "ftlang did not write" in out.stderr, out.stderr
    assert snapshot(root / "notes") == {"plan.md": b"mine\n"}


def test_a_file_target_is_refused(tmp_path: Path, home: Path) -> None:
    root = project(tmp_path / "proj", '"model.bin"')
    (root / "model.bin").write_bytes(b"weights")
    out = ft(root, "run")
    assert out.returncode == 1 and "is not a folder" in out.stderr, out.stderr
    assert (root / "model.bin").read_bytes() == b"weights"


def test_an_own_export_is_replaced_and_an_edited_one_is_not(tmp_path: Path, home: Path) -> None:
    root = project(tmp_path / "proj")
    assert ft(root, "run").returncode == 0
    out_dir = root / "out" / "release"
    marker = json.loads((out_dir / ".ftlang-export").read_text())
    assert marker["node"] == "export.release" and "config.json" in marker["files"]
    first = snapshot(out_dir)

    project(root, seed=2)  # a different model: ftlang replaces its own, untouched export
    assert ft(root, "run").returncode == 0
    second = snapshot(out_dir)
    assert second["model.safetensors"] != first["model.safetensors"]

    (out_dir / "README.md").write_text("my notes on this model\n")  # the user edits the export
    project(root, seed=3)
    out = ft(root, "run")
    assert out.returncode == 1 and "was changed after ftlang published it" in out.stderr, out.stderr
    assert (out_dir / "README.md").read_text() == "my notes on this model\n"
    assert snapshot(out_dir)["model.safetensors"] == second["model.safetensors"]
    assert not [p for p in out_dir.parent.iterdir() if p.name.startswith(".release.")]  # no temp left


def test_an_export_edited_before_a_no_op_rerun_is_reported_not_called_cached(
        tmp_path: Path, home: Path) -> None:
    root = project(tmp_path / "proj")
    assert ft(root, "run").returncode == 0
    out_dir = root / "out" / "release"
    os.utime(out_dir / "config.json")  # touched only, same bytes: still up to date
    again = ft(root, "run")
    assert again.returncode == 0 and "changed" not in again.stderr, again.stderr

    (out_dir / "config.json").write_text('{"my": "edit"}\n')  # nothing else changed: a no-op rerun
    out = ft(root, "run")
    assert out.returncode == 1 and "was changed after ftlang published it" in out.stderr, out.stderr
    assert (out_dir / "config.json").read_text() == '{"my": "edit"}\n'  # the edit is kept

    (out_dir / "extra.txt").write_text("a file the user added\n")
    (out_dir / "config.json").unlink()
    out = ft(root, "run")
    assert out.returncode == 1 and "was changed after ftlang published it" in out.stderr, out.stderr
    assert (out_dir / "extra.txt").exists()


def test_an_unchanged_export_is_checked_by_stat_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftlang.runtime import publish as pub

    src = tmp_path / "artifact"
    src.mkdir()
    (src / "model.bin").write_bytes(b"weights" * 1000)
    dest = tmp_path / "out"
    assert pub.publish(src, dest, "d" * 64, "export.x")

    def no_rehash(_: Path) -> dict[str, str]:
        raise AssertionError("an unchanged export was re-hashed")

    monkeypatch.setattr(pub, "tree_files", no_rehash)
    assert not pub.publish(src, dest, "d" * 64, "export.x")  # up to date: nothing copied, nothing hashed
