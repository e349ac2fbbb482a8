"""method = ppo(...): ftlang's own PPO loop (stdlib/ppo.py) on a tiny model, on CPU.

- on a task with a programmatic reward the mean reward rises and the KL to the reference
  stays bounded; a large kl_coef holds the policy much closer to the reference;
- with LoRA the reference is the policy with its adapter disabled (its KL moves off 0);
- a reward function that raises fails the step naming the function and the row;
- bad input is a compile error at its line (no reward, clip_range <= 0, more mini-batches
  than rollouts, virtual-token adapters).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import run_ft
from ftlang.compiler import compile_source
from ftlang.lang.diagnostics import FtError
from ftlang.stdlib.spec import Call, StepError

REWARDS = '''\
def cat_letters(prompts, completions, **columns):
    """Share of the completion's characters that are c, a or t: dense, so a few steps move it."""
    return [sum(ch in "cat" for ch in c) / max(len(c), 1) for c in completions]


def boom(prompts, completions, **columns):
    for p in prompts:
        if p.endswith("moon"):
            raise ValueError("no moons here")
    return [0.0] * len(prompts)
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("transformers")
    from ftlang.stdlib import model as model_step
    from stepkit import Store
    from test_stdlib_ml import TINY, _tasks

    root = tmp_path_factory.mktemp("ppo")
    store = Store(root)
    rows = _tasks(32, seed=2)
    data = store.dataset("dataset.prompts", rows)
    text = store.dataset("dataset.text", [{"text": f"{r['prompt']} {r['completion']}"} for r in rows])
    base, _ = store.run(model_step.run, "model.base", {"init": Call("tiny", {**TINY, "data": text})})
    (root / "rewards.py").write_text(REWARDS)
    return store, base, data, rows, root


def _ppo(setup: Any, fn: str = "cat_letters", steps: int = 16, lr: float = 2e-2, **args: Any) -> dict[str, Any]:
    from ftlang.stdlib import train

    store, base, data, _, root = setup
    reward = Call("py", {"file": str(root / "rewards.py"), "function": fn})
    _, meta = store.run(train.run, "train.ppo", {
        "from": base, "data": data, "max_steps": steps, "batch_size": 16, "logging_steps": 2, "lr": lr,
        "method": Call("ppo", {"reward": [reward], "max_new_tokens": 4, **args})})
    return meta


def test_ppo_raises_a_programmatic_reward_with_bounded_kl(setup: Any) -> None:
    m = _ppo(setup)
    r, kl = m["reward"], m["kl"]
    first, last = r[0], sum(r[-3:]) / 3
    assert last > first + 0.25 and last > 3 * first, r  # measured: 0.07 -> 0.56
    assert kl[0] == pytest.approx(0.0, abs=1e-4), kl  # the reference is the starting policy
    assert 0 < max(kl) < 12.0, kl  # nats per 4-token completion (measured: at most 8.4)
    for k in ("policy_loss", "value_loss", "clip_fraction", "entropy"):
        assert len(m[k]) == len(r) == len(m["reward_steps"]), k
    assert all(0 <= c <= 1 for c in m["clip_fraction"]) and max(m["clip_fraction"]) > 0
    assert m["steps"] == 16 and m["optimizer_steps"] == 16 * 4 * 2
    # The KL penalty does its job: 40 times the coefficient keeps the policy far closer.
    tight = _ppo(setup, kl_coef=2.0)
    assert max(tight["kl"]) < 0.5 * max(kl), (tight["kl"], kl)


def test_lora_ppo_uses_the_policy_with_its_adapter_disabled_as_reference(setup: Any) -> None:
    lora = Call("lora", {"r": 8, "dropout": 0.0})
    m = _ppo(setup, steps=6, lr=3e-2, adapter=lora)
    assert m["kl"][0] == pytest.approx(0.0, abs=1e-4)  # LoRA starts as the identity
    # The reference did not move with the policy: a reference that were the policy itself
    # would give exactly 0 at every step.
    assert max(abs(k) for k in m["kl"][1:]) > 0.02, m["kl"]
    assert m["trainable_params"] < 20_000


def test_a_reward_that_raises_names_the_function_and_the_row(setup: Any) -> None:
    rows = setup[3]
    with pytest.raises(StepError) as info:
        _ppo(setup, fn="boom", steps=2)
    text = str(info.value)
    assert "reward boom raised ValueError: no moons here on row " in text, text
    row = int(text.split(" on row ")[1].split()[0])
    assert rows[row - 1]["prompt"].endswith("moon"), (row, rows[row - 1])
    assert "rewards.py:" in (info.value.hint or ""), info.value.hint


HEAD = """ft 0.1
dataset d { source = jsonl("d.jsonl") }
model base { init = tiny(data = d) }
"""


def _errors(tmp_path: Path, method: str, extra: str = "") -> list[tuple[str, int, str]]:
    (tmp_path / "d.jsonl").write_text('{"prompt": "a"}\n')
    (tmp_path / "rewards.py").write_text(REWARDS)
    try:
        compile_source(HEAD + f"train t {{\n  from = base\n  data = d\n  method = {method}\n{extra}}}\n",
                       "p.ft", tmp_path)
    except FtError as e:
        return [(d.code, d.labels[0].span.line if d.labels else 0, d.message) for d in e.diagnostics]
    return []


R = 'py("rewards.py", "cat_letters")'


@pytest.mark.parametrize("method,extra,code,says", [
    ("ppo()", "", "FT0105", "reward"),
    ("ppo(reward = [])", "", "FT0240", "ppo has no reward"),
    (f"ppo(reward = {R}, clip_range = 0)", "", "FT0107", "clip_range"),
    (f"ppo(reward = {R}, clip_range_value = -0.1)", "", "FT0107", "clip_range_value"),
    (f"ppo(reward = {R}, mini_batches = 8)", "  batch_size = 4\n", "FT0241", "into 8 mini-batches"),
    (f"ppo(reward = {R}, adapter = prefix_tuning())", "", "FT0114", "cannot train a prefix_tuning adapter"),
    (f"ppo(reward = {R}, adapter = prompt_tuning())", "", "FT0114", "cannot train a prompt_tuning adapter"),
    (f"ppo(reward = {R}, top_p = 1.5)", "", "FT0107", "top_p"),
])
def test_bad_ppo_input_is_a_compile_error_at_its_line(tmp_path: Path, method: str, extra: str, code: str,
                                                      says: str) -> None:
    got = _errors(tmp_path, method, extra)
    assert any(c == code and line == 7 and says in msg for c, line, msg in got), got


def test_ppo_compiles_and_unused_attributes_are_refused(tmp_path: Path) -> None:
    assert _errors(tmp_path, f"ppo(reward = {R}, kl_target = 6.0, adapter = lora(r = 4))") == []
    got = _errors(tmp_path, f"ppo(reward = {R})", "  grad_accum = 4\n")
    assert any(c == "FT0114" and "grad_accum" in msg for c, _, msg in got), got
    # ft check shows it with file:line:col and a caret.
    (tmp_path / "p.ft").write_text(HEAD + "train t {\n  from = base\n  data = d\n  method = ppo(reward = [])\n}\n")
    out = run_ft("check", "p.ft", cwd=tmp_path)
    assert out.returncode == 2 and "p.ft:7:" in out.stderr and "FT0240" in out.stderr, out.stderr


@pytest.mark.gpu
def test_ppo_on_cuda_in_bf16_raises_the_reward(setup: Any) -> None:
    """On a GPU precision = auto is bf16 autocast: the same task still learns."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from ftlang.stdlib import train

    store, base, data, _, root = setup
    reward = Call("py", {"file": str(root / "rewards.py"), "function": "cat_letters"})
    _, m = store.run(train.run, "train.ppo_gpu", {
        "from": base, "data": data, "max_steps": 16, "batch_size": 16, "logging_steps": 2, "lr": 2e-2,
        "device": "cuda", "method": Call("ppo", {"reward": [reward], "max_new_tokens": 4})})
    assert m["device"] == "cuda"
    assert sum(m["reward"][-3:]) / 3 > m["reward"][0] + 0.15, m["reward"]
