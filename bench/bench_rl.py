"""PPO vs RLOO vs GRPO on one task, with one sample budget: the table in docs/methods.md.

    .venv/bin/python bench/bench_rl.py [--steps 16] [--seed 0]

The task: 32 "Reverse: w1 w2 w3" prompts, a tiny Llama (hidden 32, 1 layer, vocab 300)
built in-process from those prompts, full-weight training at lr 1e-2, 4 new tokens per
completion, a KL penalty of 0.05 to the starting model, and a programmatic reward: the
share of a completion's characters that are c, a or t (dense, so a few steps move it).
Every method samples 16 completions per step for `--steps` steps (PPO: 16 prompts x 1,
RLOO and GRPO: 4 prompts x 4 generations), so each sees the same number of samples.

Each trained policy is then measured the same way, outside its trainer: the mean reward
of 4 sampled completions (temperature 1, seeded) per prompt, and the exact KL to the
starting model summed over those completions' tokens. RLOO (trl's RLHF step) is the
baseline of the ratios. Appends the table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

REWARD = '''\
def cat_letters(prompts, completions, **columns):
    return [sum(ch in "cat" for ch in c) / max(len(c), 1) for c in completions]
'''
NEW_TOKENS = 4


def reward(text: str) -> float:
    return sum(ch in "cat" for ch in text) / max(len(text), 1)


def measure(policy_art: Any, base_art: Any, prompts: list[str], seed: int) -> tuple[float, float]:
    """(mean reward, mean summed KL(policy || base)) over 4 sampled completions per prompt."""
    import torch
    from ftlang.stdlib import modelio

    tok = modelio.load_tokenizer(base_art)
    policy = modelio.load_model(policy_art, merged=True).eval()
    base = modelio.load_model(base_art).eval()
    torch.manual_seed(seed)
    rewards, kls = [], []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([tok(p + "\n")["input_ids"]] * 4)
            out = policy.generate(input_ids=ids, do_sample=True, top_k=0, max_new_tokens=NEW_TOKENS,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            width = ids.shape[1]
            lp = torch.log_softmax(policy(out).logits[:, width - 1:-1], -1)
            lb = torch.log_softmax(base(out).logits[:, width - 1:-1], -1)
            keep = torch.ones(out.shape[0], out.shape[1] - width)
            for r, row in enumerate(out[:, width:].tolist()):  # tokens after EOS do not count
                if tok.eos_token_id in row:
                    keep[r, row.index(tok.eos_token_id) + 1:] = 0
                text = tok.decode([t for t in row if t != tok.eos_token_id], skip_special_tokens=True)
                rewards.append(reward(text))
            kls += ((lp.exp() * (lp - lb)).sum(-1) * keep).sum(-1).tolist()
    return sum(rewards) / len(rewards), sum(kls) / len(kls)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from ftlang.stdlib import model as model_step
    from ftlang.stdlib import train
    from ftlang.stdlib.spec import Call
    from stepkit import Store
    from test_stdlib_ml import TINY, _tasks

    root = Path(tempfile.mkdtemp(prefix="bench_rl-"))
    store = Store(root)
    rows = _tasks(32, seed=2)
    data = store.dataset("dataset.prompts", rows)
    text = store.dataset("dataset.text", [{"text": f"{r['prompt']} {r['completion']}"} for r in rows])
    base, _ = store.run(model_step.run, "model.base", {"init": Call("tiny", {**TINY, "data": text})})
    (root / "rewards.py").write_text(REWARD)
    fn = Call("py", {"file": str(root / "rewards.py"), "function": "cat_letters"})
    common = {"reward": [fn], "max_new_tokens": NEW_TOKENS}
    methods = {
        "ppo": Call("ppo", {**common, "kl_coef": 0.05}),
        "rloo": Call("rloo", {**common, "generations": 4, "beta": 0.05}),
        "grpo": Call("grpo", {**common, "generations": 4, "beta": 0.05}),
    }
    prompts = [r["prompt"] for r in rows]
    start_reward, _ = measure(base, base, prompts, args.seed)
    results: dict[str, dict[str, float]] = {}
    for name, method in methods.items():
        started = time.perf_counter()
        art, meta = store.run(train.run, f"train.{name}", {
            "from": base, "data": data, "max_steps": args.steps, "batch_size": 16, "logging_steps": 4,
            "lr": 1e-2, "seed": args.seed, "method": method})
        seconds = time.perf_counter() - started
        r, kl = measure(art, base, prompts, args.seed)
        results[name] = {"reward": r, "kl": kl, "seconds": seconds,
                         "updates": meta.get("optimizer_steps", meta["steps"])}
    base_gain = results["rloo"]["reward"] - start_reward
    head = ("| method | reward before -> after | gain vs RLOO | KL to start (nats/completion) | "
            "optimiser steps | seconds | time vs RLOO |\n|---|---|---|---|---|---|---|")
    lines = [head]
    for name, r in results.items():
        gain = (r["reward"] - start_reward) / base_gain if base_gain else float("nan")
        lines.append(f"| {name} | {start_reward:.3f} -> {r['reward']:.3f} | {gain:.2f}x | {r['kl']:.3f} | "
                     f"{r['updates']} | {r['seconds']:.1f} | {r['seconds'] / results['rloo']['seconds']:.2f}x |")
    table = "\n".join(lines)
    command = f".venv/bin/python bench/bench_rl.py --steps {args.steps} --seed {args.seed}"
    print(table)
    print(f"\n(command: {command}; {args.steps} steps x 16 samples each, tiny model, CPU)")
    with (ROOT / "bench" / "RESULTS.md").open("a", encoding="utf-8") as f:
        f.write(f"\n## bench_rl ({time.strftime('%Y-%m-%d')})\n\n`{command}`\n\n{table}\n")


if __name__ == "__main__":
    main()
