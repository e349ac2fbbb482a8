"""Generation of adapter models: what eval and select report is the adapter model's own output.

- Greedy generation equals an argmax decode by repeated full forward passes of the model
  (no cache, one row, no padding), token for token, for every adapter kind and for full
  weights. Through peft's generate, prefix tuning generated as its base model (transformers
  5 ignored peft's prefix cache) and prompt tuning re-inserted its virtual tokens at every
  step; so the prefix and prompt tuned generations must also differ from the base's.
- Generations do not depend on the batch size (left padding): peft's generate drops the
  position ids of prompt tuning, so padding moved the prompt away from the virtual tokens.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from ftlang.stdlib import generate as gen
from ftlang.stdlib import model as model_step
from ftlang.stdlib import modelio, train
from ftlang.stdlib import template as templates
from ftlang.stdlib.spec import Artifact, Call
from stepkit import Store
from test_stdlib_ml import LORA, TINY, TRAIN, WORDS, _counts, _tasks

KINDS = {  # method, learning rate: 20 steps each, so that no adapter is the identity
    "lora": (LORA, 1e-2),
    "ia3": (Call("ia3", {"target_modules": None, "feedforward_modules": None}), 1e-1),
    "prompt_tuning": (Call("prompt_tuning", {"tokens": 8, "init_text": None}), 1e-1),
    "prefix_tuning": (Call("prefix_tuning", {"tokens": 8, "projection": False}), 1e-1),
}
NEW_TOKENS = 6


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("genadapters"))


@pytest.fixture(scope="module")
def models(store: Store) -> dict[str, Artifact]:
    """A tiny model warmed up by a full fine-tune, and each adapter kind trained briefly on it."""
    rows, counts = _tasks(200, seed=5), _counts(120, seed=6)
    train_data = store.dataset("dataset.train", rows)
    count_data = store.dataset("dataset.count", counts)
    text = store.dataset("dataset.text", [{"text": f"{r['prompt']}\n{r['completion']}"} for r in rows + counts])
    base, _ = store.run(model_step.run, "model.base", {
        "path": None, "hub": None, "revision": None, "gguf": None, "init": Call("tiny", {**TINY, "data": text})})
    full, _ = store.run(train.run, "train.full", {**TRAIN, "from": base, "data": train_data, "lr": 5e-3,
                                                  "max_steps": 40})
    out = {"full": full}
    for name, (method, lr) in KINDS.items():
        out[name], _ = store.run(train.run, f"train.{name}", {
            **TRAIN, "from": full, "data": count_data, "method": method, "lr": lr, "max_steps": 20})
    return out


def _prompts() -> list[str]:
    """Both tasks, 1 to 5 words: the rows of a batch differ in length, so most are padded."""
    rng, out = random.Random(11), []
    while len(out) < 24:
        i = len(out)
        prompt = ("Reverse: " if i % 2 else "Count: ") + " ".join(rng.sample(WORDS, 1 + i % 5))
        if prompt not in out:
            out.append(prompt)
    return out


def _loaded(art: Artifact) -> tuple[Any, Any, dict[str, Any], int, list[int]]:
    tok = modelio.load_tokenizer(art)
    lm = modelio.load_model(art, merged=True)  # as eval loads it
    tpl = modelio.template_of(art) or templates.load(None)
    return lm, tok, tpl, int(lm.config.max_position_embeddings), gen.stop_ids(tok, tpl)


def _generate(art: Artifact, prompts: list[str], batch_size: int) -> list[str]:
    lm, tok, tpl, max_length, _ = _loaded(art)
    return gen.generate(lm, tok, tpl, prompts, gen.Sampling(max_new_tokens=NEW_TOKENS), batch_size, max_length)


def _forward_decode(art: Artifact, prompts: list[str]) -> list[str]:
    """Greedy by hand: the model's full forward pass on the whole sequence for every new token."""
    import torch
    from ftlang.stdlib.examples import prompt_ids

    lm, tok, tpl, _, stop = _loaded(art)
    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = prompt_ids(tok, tpl, prompt)
            new: list[int] = []
            for _ in range(NEW_TOKENS):
                logits = lm(input_ids=torch.tensor([ids + new])).logits
                assert logits.shape[1] == len(ids) + len(new)  # virtual tokens cut off
                nxt = int(logits[0, -1].argmax())
                if nxt in stop:
                    break
                new.append(nxt)
            out.append(tok.decode(new, skip_special_tokens=True))
    return out


@pytest.mark.parametrize("name", ["full", *KINDS])
def test_greedy_generation_is_the_forward_argmax(models: dict[str, Artifact], name: str) -> None:
    prompts = _prompts()
    generated = _generate(models[name], prompts, batch_size=8)
    reference = _forward_decode(models[name], prompts)
    wrong = [(p, g, r) for p, g, r in zip(prompts, generated, reference) if g != r]
    assert not wrong, f"{name}: {len(wrong)} of {len(prompts)} rows differ from the forward decode: {wrong[:3]}"
    assert sum(bool(g) for g in generated) >= len(prompts) // 4, generated  # tokens, not only EOS
    if name in ("prompt_tuning", "prefix_tuning"):
        # The virtual tokens change the answers: this is not the base model generating.
        base = _generate(models["full"], prompts, batch_size=8)
        differ = sum(a != b for a, b in zip(generated, base))
        assert differ >= len(prompts) // 4, f"{name}: only {differ} of {len(prompts)} rows differ from the base"


@pytest.mark.parametrize("name", ["full", *KINDS])
def test_generations_do_not_depend_on_the_batch_size(models: dict[str, Artifact], name: str) -> None:
    prompts = _prompts()
    single = _generate(models[name], prompts, batch_size=1)
    for batch_size in (3, 16):
        batched = _generate(models[name], prompts, batch_size=batch_size)
        changed = [i for i, (a, b) in enumerate(zip(single, batched)) if a != b]
        assert not changed, f"{name}: {len(changed)} of {len(prompts)} rows change at batch size {batch_size}"
