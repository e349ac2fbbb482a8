"""`ft compare` and `ft report` on a real tiny pipeline run with the `ft` command.

Two runs: the first trains a 2-point sweep, selects a winner and evaluates on two
datasets with reward-model metrics; the second changes the eval only and fails one
assertion. The report is opened in headless Chromium (Debian's chromium package):
its DOM must hold the rendered SVG plots and tables, and a screenshot is saved.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_ft

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
WORDS = ("cat", "dog", "sun", "moon", "tree", "bird", "fish", "star")

PIPELINE = '''ft 0.1

dataset tasks {
  source = jsonl("data/tasks.jsonl")
  schema { prompt: str, completion: str }
}

dataset general {
  source = jsonl("data/general.jsonl")
}

curate clean {
  from = tasks
  sql """SELECT prompt, completion FROM tasks WHERE length(completion) < 18"""
  split { train = 0.8, heldout = 0.2, by = prompt, seed = 7 }
}

model base {
  init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 300, context = 64, data = tasks)
}

model judge {
  path = "rm"
}

train sft {
  from          = base
  data          = clean.train
  lr            = sweep [5e-3, 1e-2]
  max_steps     = 20
  max_length    = 32
  logging_steps = 4
  select        = min loss on clean.heldout
}

eval report {
  models         = [base, sft]
  data           = clean.heldout
  extra_data     = [general]
  max_new_tokens = 6
  metrics        = [loss, perplexity, exact_match, contains, rouge_l, chrf, reward(judge),
                    win_rate(judge = judge, against = base), py("metrics.py", "mean_words")]
  assert sft.loss < base.loss
}
'''


def _write_data(root: Path) -> None:
    rng = random.Random(0)
    (root / "data").mkdir()
    with (root / "data" / "tasks.jsonl").open("w") as f:
        for i in range(150):
            words = rng.sample(WORDS, rng.randint(2, 4))
            # a few long rows for the filter to drop
            completion = " ".join(reversed(words)) if i % 25 else "a completion far too long to keep"
            f.write(json.dumps({"prompt": "Reverse: " + " ".join(words), "completion": completion}) + "\n")
    with (root / "data" / "general.jsonl").open("w") as f:
        for _ in range(12):
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            f.write(json.dumps({"prompt": f"Add {a} and {b}", "completion": str(a + b)}) + "\n")
    (root / "metrics.py").write_text(
        "def mean_words(predictions, references, prompts):\n"
        "    return sum(len(p.split()) for p in predictions) / len(predictions)\n")


def _write_reward_model(root: Path) -> None:
    """A tiny sequence-classification model in a plain Hugging Face folder (`path = "rm"`)."""
    import torch
    from ftlang.stdlib.model import train_tokenizer
    from transformers import LlamaConfig, LlamaForSequenceClassification

    texts = [line for line in (root / "data" / "tasks.jsonl").read_text().splitlines()]
    tok = train_tokenizer(texts, 300)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64, num_labels=1,
                         pad_token_id=tok.pad_token_id, rope_parameters={"rope_type": "default", "rope_theta": 1e4})
    torch.manual_seed(3)
    LlamaForSequenceClassification(config).save_pretrained(root / "rm")
    tok.save_pretrained(root / "rm")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("report")
    _write_data(root)
    _write_reward_model(root)
    (root / "p.ft").write_text(PIPELINE)
    first = run_ft("run", "p.ft", cwd=root)
    assert first.returncode == 0, first.stderr
    # The second run changes the eval only, and its assertion fails: a failed run keeps its results.
    (root / "p.ft").write_text(PIPELINE.replace("max_new_tokens = 6", "max_new_tokens = 4")
                               .replace("assert sft.loss < base.loss", "assert sft.loss > base.loss"))
    second = run_ft("run", "p.ft", cwd=root)
    assert second.returncode == 1, second.stderr
    assert "assertion failed: sft.loss > base.loss" in second.stderr
    summary = second.stderr.strip().splitlines()[-1]
    assert ", 1 failed," in summary, summary  # the eval whose assert failed counts as failed
    return {"root": root, "first": first, "second": second}


def test_runs_are_quiet_off_a_terminal(project: dict[str, object]) -> None:
    for out in (project["first"], project["second"]):
        assert isinstance(out, subprocess.CompletedProcess)
        assert out.stdout == ""
        noise = [line for line in out.stderr.splitlines()
                 if re.search(r"warn|it/s|%\||Traceback|\r", line, re.I)]
        assert noise == [], noise


def test_compare_lists_runs_sweep_points_and_datasets(project: dict[str, object]) -> None:
    root = project["root"]
    assert isinstance(root, Path)
    text = run_ft("compare", "p.ft", cwd=root)
    assert text.returncode == 0, text.stderr
    header = text.stdout.splitlines()[0].split()
    assert header[:4] == ["run", "node", "dataset", "model"]
    assert {"loss", "perplexity", "exact_match", "reward", "win_rate", "mean_words"} <= set(header)
    assert "sft[lr=0.01]" in text.stdout and "* the sweep point `select` kept" in text.stdout

    rows = json.loads(run_ft("compare", "p.ft", "--json", cwd=root).stdout)
    runs = list(dict.fromkeys(r["run"] for r in rows))
    assert len(runs) == 2  # newest first
    evals = [r for r in rows if r["node"] == "eval.report"]
    assert {(r["dataset"], r["model"]) for r in evals} == {(d, m) for d in ("clean.heldout", "general")
                                                           for m in ("base", "sft")}
    assert len(evals) == 8  # two runs x two datasets x two models
    # select ran in the first run only: the second reused it, and the default view folds it.
    selects = [r for r in rows if r["node"] == "select.sft"]
    assert len(selects) == 2 and {r["run"] for r in selects} == {runs[1]}
    assert sum(r["selected"] for r in selects) == 1 and all(r["dataset"] == "clean.heldout" for r in selects)
    winner = next(r for r in selects if r["selected"])
    loser = next(r for r in selects if not r["selected"])
    assert winner["metrics"]["loss"] <= loser["metrics"]["loss"]
    new, old = ({(r["dataset"], r["model"]): r["metrics"] for r in evals if r["run"] == rid} for rid in runs)
    assert new[("general", "sft")]["loss"] == old[("general", "sft")]["loss"]  # same model, same data
    assert [r["run_status"] for r in rows if r["run"] == runs[0]][0] == "failed"

    listed = json.loads(run_ft("compare", "p.ft", "last", "last~1", "--json", cwd=root).stdout)
    assert len([r for r in listed if r["node"] == "select.sft"]) == 4  # listed runs are shown in full

    table = list(csv.DictReader(io.StringIO(run_ft("compare", "p.ft", "--csv", cwd=root).stdout)))
    assert len(table) == len(rows)
    assert float(table[0]["loss"]) > 0 and table[0]["run"] == runs[0]
    missing = run_ft("compare", "p.ft", "nosuchrun", cwd=root)
    assert missing.returncode == 1 and "no run matches" in missing.stderr


def test_report_is_self_contained(project: dict[str, object]) -> None:
    root = project["root"]
    assert isinstance(root, Path)
    out = run_ft("report", "p.ft", cwd=root)
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip())
    runs = json.loads(run_ft("runs", "p.ft", "--json", cwd=root).stdout)
    assert path == root / ".ft" / "reports" / f"{runs[0]['run_id']}.html"
    page = path.read_text()
    for banned in ("<script", "<link", "<img", "@import", "src=", "url(http"):
        assert banned not in page, banned
    assert re.findall(r"https?://[^\"' )]+", page) == ["http://www.w3.org/2000/svg"] * page.count(
        "http://www.w3.org/2000/svg")
    # the second run: failed assertion, eval reran, everything else cached
    assert 'class="badge st-fail">fail</span> <code>assert sft.loss &gt; base.loss</code>' in page
    older = run_ft("report", "p.ft", "last~1", "-o", "older.html", cwd=root)
    assert older.returncode == 0 and (root / "older.html").is_file()
    # The assertions shown are the file's as it is now, and an older run says so.
    assert "this is an older run" in (root / "older.html").read_text()
    assert "this is an older run" not in page
    assert run_ft("report", "p.ft", "nosuchrun", cwd=root).returncode == 1


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium is not installed at /usr/bin/chromium "
                    "(Debian: apt-get install chromium); .ci/run installs it")
def test_report_renders_in_chromium(project: dict[str, object], tmp_path: Path) -> None:
    root = project["root"]
    assert isinstance(root, Path)
    html = root / "older.html"
    if not html.exists():
        assert run_ft("report", "p.ft", "last~1", "-o", "older.html", cwd=root).returncode == 0
    flags = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    # The pipeline picture: every node drawn, with its status.
    assert page.count('<g class="node') == 9
    for node in ("dataset.tasks", "curate.clean", "train.sft[lr=0.01]", "select.sft", "eval.report", "model.judge"):
        assert f">{node}<" in page, node
    # Loss curves (one line per sweep point), the selection bars, the length histograms.
    assert page.count('class="series"') >= 2
    assert '<svg class="plot hist"' in page
    assert "sft: min loss" in page
    # Metric tables (one per dataset) and side-by-side samples.
    assert page.count('<table class="metrics">') == 2
    assert page.count('<table class="samples">') >= 2
    assert "reward" in page and "win_rate" in page and "mean_words" in page
    assert "rows in" in page and "heldout" in page
    shot = tmp_path / "report.png"
    took = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,2000", html.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert took.returncode == 0 and shot.is_file(), took.stderr[-2000:]
    data = shot.read_bytes()
    assert _png_size(data) == (1280, 2000)
    assert len(data) > 60_000  # a blank or unstyled page compresses to far less


def test_compare_and_report_never_import_torch(project: dict[str, object]) -> None:
    root = project["root"]
    assert isinstance(root, Path)
    code = ("import sys, argparse\n"
            "from ftlang.runtime.report import write_report\n"
            "from ftlang.runtime.compare import cmd_compare\n"
            "from pathlib import Path\n"
            "assert write_report(Path('p.ft'), 'last', Path('r.html')) is not None\n"
            "cmd_compare(argparse.Namespace(file='p.ft', runs=[], json=True, csv=False))\n"
            "heavy = [m for m in ('torch', 'transformers', 'sacrebleu', 'peft') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_graph_layout_and_ticks() -> None:
    from ftlang.runtime.report_charts import nice_ticks
    from ftlang.runtime.report_graph import graph_svg, layout

    nodes = ["dataset.a", "dataset.b", "curate.c", "model.m", "train.t[lr=1]", "train.t[lr=2]", "eval.e"]
    edges = [("dataset.a", "curate.c"), ("dataset.b", "curate.c"), ("dataset.a", "model.m"),
             ("curate.c", "train.t[lr=1]"), ("curate.c", "train.t[lr=2]"), ("model.m", "train.t[lr=1]"),
             ("model.m", "train.t[lr=2]"), ("train.t[lr=1]", "eval.e"), ("train.t[lr=2]", "eval.e"),
             ("model.m", "eval.e")]
    places = layout(nodes, edges)
    assert all(places[u][0] < places[v][0] for u, v in edges)  # every edge points right
    for lay in {p[0] for p in places.values()}:  # rows within a layer are distinct
        rows = [p[1] for p in places.values() if p[0] == lay]
        assert sorted(rows) == list(range(len(rows)))
    svg = graph_svg(nodes, [(u, v, None) for u, v in edges], {"eval.e": "failed"}, {"eval.e": "2.0 s"})
    assert svg.count('class="edge"') == len(edges) and "eval.e: failed 2.0 s" in svg
    for lo, hi in ((0.0, 1.0), (2.3, 5.9), (-3.0, 120.0), (5.0, 5.0), (1e-5, 3e-5)):
        ticks = nice_ticks(lo, hi)
        assert ticks[0] <= lo and ticks[-1] >= hi and 2 <= len(ticks) <= 12


def test_training_curves_show_held_out_loss_dashed(tmp_path: Path) -> None:
    from ftlang.runtime.report_data import Run
    from ftlang.runtime.report_sections import training_section

    def node(name: str, meta: dict[str, object]) -> dict[str, object]:
        return {"node": name, "kind": "train", "status": "ran", "seconds": 1.0, "digest": None,
                "reasons": [], "meta": meta, "params": {}}

    run = Run({"run_id": "r"}, [
        node("train.sft[lr=1e-4]", {"train_loss": [3.0, 2.0, 1.5], "loss_steps": [1, 10, 20],
                                    "eval_loss": [2.4, 1.9], "eval_steps": [10, 20]}),
        node("train.sft[lr=2e-4]", {"train_loss": [3.0, 1.0], "loss_steps": [1, 20]}),
        node("train.other", {"steps": 0})], tmp_path)
    html = training_section(run)
    assert html.count("<figure>") == 1  # one plot per train block, one line per sweep point
    assert html.count('class="series"') == 3 and html.count('stroke-dasharray="6 4"') == 2  # line + legend
    assert "sft[lr=1e-4] (eval)" in html


def test_report_o_never_replaces_a_file_it_did_not_write(project: dict[str, object]) -> None:
    root = project["root"]
    assert isinstance(root, Path)
    mine = root / "notes.html"
    mine.write_text("<html>years of notes</html>\n")
    out = run_ft("report", "p.ft", "-o", "notes.html", cwd=root)
    assert out.returncode == 1 and "was not written by ft report; not overwritten" in out.stderr
    assert mine.read_text() == "<html>years of notes</html>\n"
    again = root / "again.html"
    assert run_ft("report", "p.ft", "-o", "again.html", cwd=root).returncode == 0
    assert run_ft("report", "p.ft", "last~1", "-o", "again.html", cwd=root).returncode == 0  # its own report
    assert "this is an older run" in again.read_text()
