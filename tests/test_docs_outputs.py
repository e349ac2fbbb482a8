"""Every output shown in README.md and docs/*.md is the real output of the command next to it.

Deterministic outputs (`ft check` diagnostics, `ft plan` of a fresh file) are compared
exactly. The quickstart's run output has timings and losses that vary by machine: the
README shows one real run, recorded by the slow test below
(`FT_DOCS_RECORD=DIR pytest -m slow tests/test_docs_outputs.py` writes what it saw to DIR),
and that test checks every line of the README block against a fresh run with the numbers
masked. A fast test ties the `ft plan` lines after appending rows to a real (partial) run.
docs/language.md and docs/errors.md are generated and checked by tests/test_docs.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, copy_tree, ft_bin

README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
GENERATED = {"language.md", "errors.md"}  # tests/test_docs.py compares them with docgen


def _ft(*args: str, cwd: Path, timeout: float = 120) -> tuple[int, str]:
    """The real `ft`, stderr and stdout in one stream in the order a terminal shows them."""
    env = dict(os.environ, NO_COLOR="1", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", COLUMNS="100")
    out = subprocess.run([*ft_bin(), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=timeout, env=env)
    return out.returncode, out.stdout


def _block(after: str) -> str:
    """The first fenced block of README.md after the line holding `after`."""
    text = README.read_text()
    m = re.search(re.escape(after) + r".*?\n```[a-z]*\n(.*?)```", text, re.S)
    assert m, f"README.md: no block after {after!r}"
    return m.group(1)


def _pipeline(tmp_path: Path, text: str | None = None) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    shutil.copy(ROOT / "examples" / "data" / "tasks.jsonl", tmp_path / "data" / "tasks.jsonl")
    (tmp_path / "pipeline.ft").write_text(text if text is not None else _block("## A pipeline"))
    return tmp_path


# ---- exact: compile-time outputs ---------------------------------------------------------------

PLAN_MARK = "`ft plan pipeline.ft` (and `ft check`) says"
DIAG_MARK = "Diagnostics look like this"


def test_the_plan_of_the_short_pipeline_is_real(tmp_path: Path) -> None:
    """The README's short pipeline, saved as pipeline.ft: `ft plan` prints exactly the block,
    the FT0320 warning (LoRA on a randomly initialised model) included."""
    code, out = _ft("plan", "pipeline.ft", cwd=_pipeline(tmp_path))
    assert code == 0, out
    assert out == _block(PLAN_MARK)
    assert "warning[FT0320]" in out


def test_the_diagnostic_example_is_real(tmp_path: Path) -> None:
    text = _block("## A pipeline")
    assert text.count("from     = base") == 1
    code, out = _ft("check", "pipeline.ft", cwd=_pipeline(tmp_path, text.replace("from     = base", "from     = bse")))
    assert code == 2
    assert out == _block(DIAG_MARK)


def test_the_data_prep_counts_are_real(tmp_path: Path) -> None:
    """docs/data.md's two done lines come from `ft run examples/data_prep.ft`: the row counts
    and what each stage removed exactly (only the durations may differ)."""
    work = tmp_path / "examples"
    (work / "data").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "data_prep.ft", work)
    shutil.copy(ROOT / "examples" / "data" / "tasks.jsonl", work / "data")
    code, out = _ft("run", "data_prep.ft", "--select", "clean.tidy", "--select", "mix.sft_data", cwd=work,
                    timeout=300)
    assert code == 0, out
    doc = (ROOT / "docs" / "data.md").read_text()
    block = re.search(r"```\n(  done    clean\.tidy.*?)```", doc, re.S)
    assert block, "docs/data.md: the example's output block is gone"
    seconds = re.compile(r"\d+(\.\d+)?s  ")
    want = [seconds.sub("Ts  ", line) for line in block.group(1).splitlines()]
    got = [seconds.sub("Ts  ", line) for line in out.splitlines() if line.startswith("  done ")]
    assert [w for w in want if w not in got] == [], out


# ---- the quickstart: structure against a fresh run, numbers from a recorded one ------------------

RUN_MARK = "### What `make run` prints"
REPLAN_MARK = "`ft plan` says exactly what will run and why"


def _mask(text: str) -> list[str]:
    """Lines with every number, run id and duration masked, and runs of spaces collapsed:
    what must not change between machines. Off a terminal a training step also prints a
    progress line every few seconds (a terminal redraws them in place): those are dropped."""
    text = "\n".join(line for line in text.splitlines() if not line.startswith("  running "))
    text = re.sub(r"\(run [0-9a-f-]+\)", "(run ID)", text)
    text = re.sub(r"\d[\d,]*(\.\d+)?(e-?\d+)?", "#", text)
    text = re.sub(r"#m#s|#s", "#s", text)
    return [re.sub(r" +", " ", line).rstrip() for line in text.splitlines()]


def _append_rows(data: Path, n: int) -> None:
    rows = data.read_text().splitlines(keepends=True)
    with data.open("a") as f:
        for i in range(n):  # new prompts: rows the split and the dedup keep
            f.write(rows[i].replace('"prompt": "', f'"prompt": "({i}) ', 1))


def test_the_replan_lines_are_real(tmp_path: Path) -> None:
    """After a run of the data steps, appending 120 rows gives the README's first plan lines."""
    project = copy_tree(ROOT / "examples", tmp_path / "examples").parent
    code, out = _ft("run", "examples/quickstart.ft", "--select", "curate.task_split", cwd=project)
    assert code == 0, out
    _append_rows(project / "examples" / "data" / "tasks.jsonl", 120)
    code, out = _ft("plan", "examples/quickstart.ft", cwd=project)
    assert code == 0, out
    shown = _block(REPLAN_MARK).splitlines()
    for node in ("dataset.tasks", "curate.task_split"):
        want = next(line for line in shown if re.match(rf"  \w+ +{re.escape(node)} ", line))
        assert want in out.splitlines(), (want, out)


@pytest.mark.slow
def test_the_quickstart_outputs_have_the_readme_shape(tmp_path: Path) -> None:
    """A fresh `ft run examples/quickstart.ft`: the README block line for line, numbers
    masked; a second run is a no-op; appending rows plans as the README shows."""
    project = copy_tree(ROOT / "examples", tmp_path / "examples").parent
    record = os.environ.get("FT_DOCS_RECORD")
    seen = {}
    code, seen["run"] = _ft("run", "examples/quickstart.ft", cwd=project, timeout=3600)
    assert code == 0, seen["run"]
    code, seen["rerun"] = _ft("run", "examples/quickstart.ft", cwd=project)
    lines = seen["rerun"].splitlines()
    # Each step says it is cached, then one summary line (README: "lists every step as cached").
    assert code == 0 and lines[-1].startswith("nothing to do: 10 steps cached"), seen["rerun"]
    assert len(lines) == 11 and all(line.startswith("  cached  ") for line in lines[:-1]), seen["rerun"]
    _append_rows(project / "examples" / "data" / "tasks.jsonl", 120)
    code, seen["plan"] = _ft("plan", "examples/quickstart.ft", cwd=project)
    if record:
        Path(record).mkdir(parents=True, exist_ok=True)
        for name, text in seen.items():
            (Path(record) / f"quickstart_{name}.txt").write_text(text)
    assert _mask(seen["run"]) == _mask(_block(RUN_MARK))
    shown = [line for line in _block(REPLAN_MARK).splitlines() if line.strip() != "..."]
    lines = iter(seen["plan"].splitlines())
    assert all(line in lines for line in shown), (shown, seen["plan"])  # in order, `...` elided
    assert "`nothing to do: 10 steps cached`" in README.read_text()


# ---- no output block escapes these tests -------------------------------------------------------

# The first line of every output block in the docs, and the test that produces it.
TESTED = {
    "warning[FT0320]: lora on `base`, a randomly initialised model, learns little":
        test_the_plan_of_the_short_pipeline_is_real,
    "error[FT0102]: unknown reference `bse`": test_the_diagnostic_example_is_real,
    "  run     dataset.corpus    new": test_the_quickstart_outputs_have_the_readme_shape,
    "  done    clean.tidy       7.0s  1160 rows; removed: near-duplicate 348, overlaps eval set 0 (0 n-grams); "
    "pii: none found": test_the_data_prep_counts_are_real,
}


# Outputs in docs other work is still writing, that no test here produces yet: each is named
# so that it is seen, and the test fails once it is gone (then drop it from this list).
PENDING = {
    ("scale.md", "  run     train.sft      distributed.world_size 8 -> 4"),  # needs an 8-process run
}
COMMANDS = re.compile(r"(ft|python|pip|make|sbatch|srun|sky|torchrun|cd|export|\.venv/bin/\w+)( |$)")


def _fenced(path: Path) -> list[tuple[str, str]]:
    return re.findall(r"^```([a-z]*)\n(.*?)^```", path.read_text(), re.S | re.M)


def _is_source(body: str) -> bool:
    """`.ft` text: a file, or the body of a block (`distributed { processes = 8 }`)."""
    from ftlang.lang.diagnostics import FtError
    from ftlang.lang.parser import parse

    for text in (body, f"train _ {{\n{body}\n}}\n"):
        try:
            parse(text, "doc.ft")
            return True
        except FtError:
            continue
    return False


def _is_commands(body: str) -> bool:
    """Shell commands (a trailing `\\` continues one), with `#` comments."""
    lines = [line.split("#", 1)[0].strip() for line in body.splitlines()]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    cmds = [line for line in joined.splitlines() if line.strip()]
    return bool(cmds) and all(COMMANDS.match(c) for c in cmds)


def test_every_output_block_is_tested() -> None:
    """A fenced block that is not `.ft` source, a shell command or Python is an output: it
    must be one of the blocks the tests above compare with the real command."""
    outputs = []
    for path in DOCS:
        if path.name in GENERATED:
            continue
        for lang, body in _fenced(path):
            if lang in ("sh", "python", "ft") or _is_source(body) or _is_commands(body):
                continue
            outputs.append((path.name, body.splitlines()[0] if body.strip() else ""))
    assert outputs, "no output block found: the scan is broken"
    untested = [o for o in outputs if o[1] not in TESTED]
    # The plan after appending rows is checked by the slow test and, in part, by the fast one.
    untested = [o for o in untested if not (o[0] == "README.md" and _block(REPLAN_MARK).startswith(o[1]))]
    assert set(untested) - PENDING == set(), f"output blocks no test compares with the real output: {untested}"
    assert PENDING <= set(untested) | {o for o in PENDING if not (ROOT / "docs" / o[0]).exists()}, \
        "a pending output is gone or tested now: remove it from PENDING"
