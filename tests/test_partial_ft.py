"""Partial fine-tuning: `trainable = [...]` / layers(a, b) / half(every = N) freeze the rest
(frozen weights come out bit-identical), and lora(modules_to_save = [...]) saves those modules
in the adapter. Plus the compile errors and key stability of the new attributes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ftlang.compiler import compile_source
from ftlang.lang.diagnostics import FtError
from ftlang.stdlib import freeze, train
from ftlang.stdlib import model as model_step
from ftlang.stdlib.spec import Call
from stepkit import Store
from test_stdlib_ml import LORA, TINY, TRAIN, WORDS

ROWS = [{"prompt": f"Say {w}", "completion": f" {w} {w}"} for w in WORDS[:16]]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("partial"))


@pytest.fixture(scope="module")
def base(store: Store) -> Any:
    text = store.dataset("dataset.text", [{"text": r["prompt"] + r["completion"]} for r in ROWS])
    art, _ = store.run(model_step.run, "model.base", {
        "path": None, "hub": None, "revision": None, "gguf": None,
        "init": Call("tiny", {**TINY, "layers": 4, "data": text})})
    return art


def _weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    out: dict[str, Any] = {}
    for f in sorted(folder.rglob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _changed(store: Store, base: Any, node: str, trainable: Any, steps: int = 4) -> tuple[set[str], set[str]]:
    data = store.dataset("dataset.rows", ROWS)
    art, meta = store.run(train.run, node, {**TRAIN, "from": base, "data": data, "max_steps": steps,
                                            "batch_size": 4, "lr": 1e-2, "trainable": trainable})
    before, after = _weights(base.path), _weights(art.path)
    assert set(before) == set(after)
    changed = {n for n in before if not before[n].equal(after[n])}
    return changed, set(before) - changed


def test_a_glob_trains_only_the_matching_weights(store: Store, base: Any) -> None:
    changed, same = _changed(store, base, "train.mlp", Call("match", {"patterns": ["*.mlp.*"]}))
    assert changed and all(".mlp." in n for n in changed)
    assert {n for n in same if ".mlp." in n} == set()  # every MLP weight moved; nothing else did
    assert any("self_attn" in n for n in same) and any("embed_tokens" in n for n in same)


def test_a_layer_range_trains_only_those_blocks(store: Store, base: Any) -> None:
    changed, same = _changed(store, base, "train.range", Call("layers", {"start": 1, "stop": 3,
                                                                         "embeddings": False, "head": False}))
    assert {freeze.layer_of(n) for n in changed} == {1, 2}
    assert {freeze.layer_of(n) for n in same} >= {0, 3, None}
    # every weight of blocks 1 and 2 moved (none of them silently frozen)
    assert not [n for n in same if freeze.layer_of(n) in (1, 2)]


def test_half_fine_tuning_freezes_one_half_then_alternates(store: Store, base: Any) -> None:
    names = list(_weights(base.path))
    a, b = freeze.halves(names, 0)
    assert a and b and not set(a) & set(b) and abs(len(a) - len(b)) <= 1
    # Three steps with every = 3: only half A trained.
    changed, _ = _changed(store, base, "train.half1", Call("half", {"every": 3, "seed": 0}), steps=3)
    assert changed == set(a)
    # Six steps: A in steps 0-2, then B in steps 3-5: both halves moved, embeddings/head did not.
    changed, same = _changed(store, base, "train.half2", Call("half", {"every": 3, "seed": 0}), steps=6)
    assert changed == set(a) | set(b)
    assert all(freeze.layer_of(n) is None for n in same)


def test_modules_to_save_are_in_the_saved_adapter(store: Store, base: Any) -> None:
    data = store.dataset("dataset.rows", ROWS)
    lora = Call("lora", {**LORA.args, "quant": "none", "double_quant": False,
                         "modules_to_save": ["embed_tokens"]})
    art, _ = store.run(train.run, "train.lora_mts", {**TRAIN, "from": base, "data": data, "max_steps": 3,
                                                     "batch_size": 4, "lr": 1e-2, "method": lora})
    saved = _weights(art.path / "adapter")
    embed = [n for n in saved if n.endswith("embed_tokens.weight")]
    assert embed, sorted(saved)
    # the full embedding matrix, trained (not the base's copy)
    assert not saved[embed[0]].equal(_weights(base.path)["model.embed_tokens.weight"])
    cfg = json.loads((art.path / "adapter" / "adapter_config.json").read_text())
    assert cfg["modules_to_save"] == ["embed_tokens"]
    plain, _ = store.run(train.run, "train.lora_plain", {**TRAIN, "from": base, "data": data, "max_steps": 3,
                                                         "batch_size": 4, "lr": 1e-2, "method": LORA})
    assert not any("embed_tokens" in n for n in _weights(plain.path / "adapter"))


SRC = """ft 0.1
dataset d { source = jsonl("d.jsonl") }
model base { init = tiny(hidden = 32, layers = 2, heads = 2, vocab = 300, data = d) }
train t {
  from = base
  data = d
  method = METHOD
  TRAINABLE
}
"""


def _compile(tmp_path: Path, method: str = "full", trainable: str = "") -> Any:
    (tmp_path / "d.jsonl").write_text(json.dumps({"prompt": "a", "completion": "b", "text": "a b"}) + "\n")
    src = SRC.replace("METHOD", method).replace("TRAINABLE", trainable)
    return compile_source(src, str(tmp_path / "p.ft"), tmp_path)


def test_trainable_compiles_and_keeps_old_keys_when_absent(tmp_path: Path) -> None:
    p = _compile(tmp_path, trainable='trainable = ["*.mlp.*"]')
    assert p.nodes["train.t"].params["trainable"] == Call("match", {"patterns": ["*.mlp.*"]})
    p = _compile(tmp_path, trainable="trainable = layers(0, 1, head = true)")
    assert p.nodes["train.t"].params["trainable"].args["head"] is True
    from ftlang.runtime import keys
    from ftlang.runtime.hashing import StatCache

    plain = _compile(tmp_path)
    node = plain.nodes["train.t"]
    assert node.params["trainable"] is None
    comp = keys.components(node, {"model.base": _Entry(), "dataset.d": _Entry()}, StatCache(tmp_path / "s"))
    assert "trainable" not in comp["params"]
    lora = _compile(tmp_path, method="lora(r = 4)").nodes["train.t"]
    comp = keys.components(lora, {"model.base": _Entry(), "dataset.d": _Entry()}, StatCache(tmp_path / "s"))
    assert "modules_to_save" not in comp["params"]["method"]["args"]


class _Entry:
    def port_digest(self, port: Any) -> str:
        return "0" * 8


@pytest.mark.parametrize(("method", "trainable", "code", "line"), [
    ("lora(r = 4)", 'trainable = ["*.mlp.*"]', "FT0410", 8),
    ("full", "trainable = layers(3, 3)", "FT0411", 8),
    ("full", "trainable = []", "FT0411", 8),
    ("full", "trainable = layer(0, 2)", "FT0112", 8),
])
def test_bad_trainable_is_a_compile_error_at_its_line(tmp_path: Path, method: str, trainable: str,
                                                      code: str, line: int) -> None:
    with pytest.raises(FtError) as e:
        _compile(tmp_path, method=method, trainable=trainable)
    errors = [d for d in e.value.diagnostics if d.level == "error"]
    assert [(d.code, d.labels[0].span.line) for d in errors] == [(code, line)], errors


def test_head_of_a_tied_model_is_its_embedding_matrix() -> None:
    tied = ["model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight", "model.norm.weight"]
    untied = [*tied, "lm_head.weight"]
    call = Call("layers", {"start": 5, "stop": 6, "embeddings": False, "head": True})
    assert freeze.selected(call, tied) == ["model.embed_tokens.weight"]
    assert freeze.selected(call, untied) == ["lm_head.weight"]
