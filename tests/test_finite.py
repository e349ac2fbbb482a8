"""Values that cannot work are refused: non-finite numbers and absurd integers at compile
time, a loss that turns nan or inf during training, and non-finite weights at save time."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import run_ft
from ftlang.compiler import compile_source
from ftlang.lang.diagnostics import Diagnostic, FtError
from ftlang.stdlib.spec import Artifact, Call, StepError
from stepkit import Store

HEAD = """ft 0.1
dataset corpus { source = jsonl("d.jsonl") }
model base { init = tiny(data = corpus) }
"""


def _compile(tmp_path: Path, body: str) -> list[Diagnostic]:
    """The diagnostics (errors and warnings) of HEAD + body."""
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    text = HEAD + body
    try:
        return compile_source(text, "p.ft", tmp_path).warnings
    except FtError as e:
        return e.diagnostics


def _train(attrs: str) -> str:
    return "train sft {\n  from = base\n  data = corpus\n" + attrs + "\n}\n"


def _one_error(diags: list[Diagnostic]) -> Diagnostic:
    errors = [d for d in diags if d.level == "error"]
    assert len(errors) == 1, [d.message for d in diags]
    return errors[0]


def _covers(d: Diagnostic, source: str, text: str) -> bool:
    """Whether the diagnostic's caret is exactly under `text` in its line of `source`."""
    s = d.span
    assert s is not None
    line = source.splitlines()[s.line - 1]
    return line[s.col - 1:s.end_col - 1] == text


# ---- compile time --------------------------------------------------------------------

@pytest.mark.parametrize("value, shown", [("1e999", "1e999"), ("-1e999", "-1e999"), ("nan", "`nan`"),
                                          ("-inf", "`-inf`"), ("1e308 * 10", "inf"), ('"inf"', '"inf"')])
def test_non_finite_lr_is_a_compile_error_at_the_literal(tmp_path: Path, value: str, shown: str) -> None:
    body = _train(f"  lr = {value}")
    d = _one_error(_compile(tmp_path, body))
    assert d.code == "FT0107"
    # Not "must be > 0" for -1e999: the message says what is wrong with the number.
    assert d.message == f"`lr` must be a finite number, found {shown}"
    assert _covers(d, HEAD + body, value) and d.help and "finite" in d.help


def test_non_finite_call_arguments_and_lists_are_refused(tmp_path: Path) -> None:
    body = _train("  method = dpo(beta = nan)") + _train("  method = lora(r = 1e999)").replace("sft", "b") \
        + "merge m {\n  models = [sft, b]\n  weights = [1, 0 * 1e999]\n}\n"
    diags = [d for d in _compile(tmp_path, body) if d.level == "error"]
    assert [(d.code, d.message) for d in diags] == [
        ("FT0107", "`beta` must be a finite number, found `nan`"),
        ("FT0107", "`r` must be a finite number, found 1e999"),
        ("FT0107", "`weights` must be a finite number, found 1e999")]
    assert _covers(diags[2], HEAD + body, "1e999")


def test_env_values_must_be_finite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FT_TEST_LR", "inf")
    d = _one_error(_compile(tmp_path, _train('  lr = env("FT_TEST_LR")')))
    assert d.message == "`lr` must be a finite number, found inf"


@pytest.mark.parametrize("attrs, message", [
    ("  max_steps = 99999999999999999999999999",
     "`max_steps` must be <= 1000000000, found 99999999999999999999999999"),
    ("  max_steps = 2000000000", "`max_steps` must be <= 1000000000, found 2000000000"),
    ("  batch_size = 100000", "`batch_size` must be <= 65536, found 100000"),
    ("  seed = 4294967296", "`seed` must be <= 4294967295, found 4294967296"),
    ("  method = lora(r = 99999999999999999999)", "`r` must be <= 65536, found 99999999999999999999"),
    # Past Python's 4300-digit int conversion guard: still a range error, not a crash.
    ("  max_steps = " + "9" * 5000, "`max_steps` must be <= 1000000000, found 100000... (4001 digits)"),
])
def test_integers_have_upper_bounds(tmp_path: Path, attrs: str, message: str) -> None:
    d = _one_error(_compile(tmp_path, _train(attrs)))
    assert (d.code, d.message) == ("FT0107", message)
    assert d.help and "most" in d.help


def test_every_int_is_bounded_even_without_a_declared_bound(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    text = 'ft 0.1\ndataset corpus { source = jsonl("d.jsonl") }\n' \
           "model base { init = tiny(data = corpus, seed = 99999999999999999999) }\n"
    with pytest.raises(FtError) as e:
        compile_source(text, "p.ft", tmp_path)
    (d,) = e.value.diagnostics
    assert d.code == "FT0107" and "found 99999999999999999999" in d.message and "2**53" in (d.help or "")
    text = text.replace("99999999999999999999", str(2**53))
    compile_source(text, "p.ft", tmp_path)  # the limit itself is allowed


def test_a_huge_learning_rate_warns_but_compiles(tmp_path: Path) -> None:
    (w,) = _compile(tmp_path, _train("  lr = 10"))
    assert (w.level, w.code) == ("warning", "FT0107") and "unusually large" in w.message
    assert _compile(tmp_path, _train("  lr = 1")) == []


# ---- training: a loss that becomes nan or inf fails the step ------------------------------

WORDS = ("cat", "dog", "sun", "moon", "tree", "bird", "fish", "star")


def _rows(n: int) -> list[dict[str, str]]:
    rng = random.Random(3)
    rows = []
    for _ in range(n):
        w = rng.sample(WORDS, 3)
        rows.append({"prompt": "Reverse: " + " ".join(w), "completion": " ".join(reversed(w)),
                     "chosen": " ".join(reversed(w)), "rejected": " ".join(w)})
    return rows


TINY = {"arch": "llama", "hidden": 32, "layers": 1, "heads": 2, "intermediate": None, "vocab": 300,
        "context": 64, "seed": 0}
TRAIN: dict[str, Any] = {
    "method": Call("full", {}), "objective": "sft", "template": None, "prompt_field": "prompt",
    "completion_field": "completion", "lr": 1e30, "epochs": 1.0, "max_steps": 10, "batch_size": 8,
    "grad_accum": 1, "max_length": 32, "warmup": 0.0, "scheduler": "linear", "weight_decay": 0.0,
    "max_grad_norm": 1.0, "seed": 0, "logging_steps": 1}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("finite"))


@pytest.fixture(scope="module")
def base(store: Store) -> tuple[Artifact, Artifact]:
    from ftlang.stdlib import model as model_step

    data = store.dataset("dataset.rows", _rows(40))
    text = store.dataset("dataset.text", [{"text": f"{r['prompt']} {r['completion']}"} for r in _rows(40)])
    art, _ = store.run(model_step.run, "model.base", {
        "path": None, "hub": None, "revision": None, "gguf": None, "init": Call("tiny", {**TINY, "data": text})})
    return art, data


def test_sft_whose_loss_becomes_nan_fails_with_the_step(store: Store, base: tuple[Artifact, Artifact]) -> None:
    from ftlang.stdlib import train

    model, data = base
    ctx = store.ctx("train.sft", {**TRAIN, "from": model, "data": data})
    # lr 1e30: the first update sends the weights to ~1e30, the forward pass overflows.
    with pytest.raises(StepError, match=r"^loss became nan at step 3; nothing was saved$") as e:
        train.run(ctx)
    assert "lower lr" in (e.value.hint or "")
    assert list(ctx.out.iterdir()) == []  # nothing to commit


def test_dpo_whose_loss_becomes_nan_fails_with_the_step(store: Store, base: tuple[Artifact, Artifact]) -> None:
    """trl's trainers (here DPO with a full reference copy) are watched the same way."""
    from ftlang.stdlib import train

    model, data = base
    method = Call("dpo", {"beta": 0.1, "loss": "sigmoid", "label_smoothing": 0.0, "adapter": Call("full", {})})
    ctx = store.ctx("train.dpo", {**TRAIN, "from": model, "data": data, "method": method, "max_steps": 6})
    with pytest.raises(StepError, match=r"^loss became (nan|inf) at step \d+; nothing was saved$"):
        train.run(ctx)
    assert list(ctx.out.iterdir()) == []


def test_grpo_whose_weights_become_nan_fails_with_the_step(store: Store, base: tuple[Artifact, Artifact],
                                                          tmp_path: Path) -> None:
    """Online RL samples from the model: nan weights break the sampling before a loss is
    seen, and the crash is reported as the divergence it is."""
    from ftlang.stdlib import train

    model, data = base
    (tmp_path / "rw.py").write_text("def r(prompts, completions, **kw):\n    return [float(len(c)) for c in completions]\n")
    method = Call("grpo", {"reward": [Call("py", {"file": tmp_path / "rw.py", "function": "r"})],
                           "generations": 4, "max_new_tokens": 4, "temperature": 1.0, "beta": 0.0,
                           "loss": "dapo", "adapter": Call("full", {})})
    ctx = store.ctx("train.grpo", {**TRAIN, "from": model, "data": data, "method": method, "max_steps": 6})
    with pytest.raises(StepError, match=r"^the weights became (nan|inf) at step \d+ \(.+\); nothing was saved$"):
        train.run(ctx)
    assert list(ctx.out.iterdir()) == []


def test_ft_run_fails_the_node_and_exports_nothing(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(40)))
    (tmp_path / "p.ft").write_text(HEAD.replace("data = corpus)", "hidden = 32, layers = 1, heads = 2, "
                                                "vocab = 300, context = 64, data = corpus)") + """
train sft {
  from = base
  data = corpus
  lr = 1e30
  max_steps = 10
  max_length = 32
}
export release {
  model = sft
  to = "out/model"
}
""")
    r = run_ft("run", "p.ft", cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "loss became nan at step 3" in out, out
    assert not (tmp_path / "out").exists()


# ---- saving: a model with a nan or inf weight is never written --------------------------

def _tiny_llama() -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(cfg)


def test_save_full_refuses_a_nan_weight(tmp_path: Path) -> None:
    import torch
    from ftlang.stdlib import modelio

    lm = _tiny_llama()
    with torch.no_grad():
        lm.model.layers[0].mlp.up_proj.weight[3, 5] = float("nan")
    out = tmp_path / "full"
    with pytest.raises(StepError, match=r"model\.layers\.0\.mlp\.up_proj\.weight holds nan"):
        modelio.save_full(lm, None, out, template=None)
    assert not out.exists()


def test_save_adapter_refuses_an_inf_weight(tmp_path: Path) -> None:
    import torch
    from ftlang.stdlib import modelio
    from peft import LoraConfig, get_peft_model

    lm = get_peft_model(_tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"]))
    lora_b = next(p for n, p in lm.named_parameters() if "lora_B" in n)
    with torch.no_grad():
        lora_b[0, 0] = float("inf")
    out = tmp_path / "adapter"
    with pytest.raises(StepError, match=r"lora_B\.weight holds inf"):
        modelio.save_adapter(lm, None, out, base_digest="0" * 24, template=None)
    assert not out.exists()
