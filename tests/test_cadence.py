"""Training cadence as people write it (stdlib/cadence.py): eval_every / save_every in steps
or fractions of an epoch, keep_checkpoints + `ft checkpoints`, the loss watchdog, pad_token."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from ftlang.compiler import compile_source
from ftlang.lang.diagnostics import FtError
from ftlang.runtime import keys
from ftlang.runtime.hashing import StatCache
from ftlang.runtime.store import Entry
from ftlang.stdlib import cadence, modelio, train
from ftlang.stdlib import model as model_step
from ftlang.stdlib.spec import Artifact, Call, StepError
from stepkit import Store
from test_stdlib_ml import TINY, TRAIN, _tasks

HEAD = 'ft 0.1\ndataset d { source = jsonl("d.jsonl") }\nmodel base { init = tiny(data = d) }\n'


def _program(tmp_path: Path, train_body: str) -> Any:
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    return compile_source(HEAD + "train t {\n  from = base\n  data = d\n" + train_body + "}\n", "p.ft", tmp_path)


def _errors(tmp_path: Path, body: str) -> list[str]:
    try:
        _program(tmp_path, body)
    except FtError as e:
        return [f"{d.code} {d.message}" for d in e.diagnostics]
    return []


@pytest.mark.parametrize("body,says", [
    ("  eval_data = d\n  eval_every = 0.25\n  eval_steps = 20\n", "both set the same cadence"),
    ("  save_every = 100\n  save_steps = 20\n", "`save_every` and `save_steps` both"),
    ("  eval_data = d\n  eval_every = 2.5\n", "a step count is a whole number"),
    ("  eval_data = d\n  eval_every = 0.5\n  patience = 2\n", "needs validations every N steps"),
    ("  keep_checkpoints = 2\n", "keeps nothing: no checkpoint is written"),
    ("  stop_if_loss_above_steps = 3\n", "without `stop_if_loss_above`"),
])
def test_contradictory_cadence_is_a_compile_error(tmp_path: Path, body: str, says: str) -> None:
    errors = _errors(tmp_path, body)
    assert any(e.startswith("FT0283") and says in e for e in errors), errors


def _key(tmp_path: Path, body: str) -> str:
    program = _program(tmp_path, body)
    node = program.nodes["train.t"]
    ups = {r.node: Entry("k", r.node, f"d-{r.node}", {"data.parquet": "x"}, {}) for r in node.refs()}
    return keys.node_key(keys.components(node, ups, StatCache(tmp_path / "stat.json")))


def test_semantic_and_non_semantic_cadence(tmp_path: Path) -> None:
    """eval_every and pad_token enter the key only when written; where checkpoints go, how
    many are kept and the watchdog never do (they do not change a successful result)."""
    base = _key(tmp_path, "")
    assert _key(tmp_path, "  save_every = 0.5\n  keep_checkpoints = 3\n  stop_if_loss_above = 10\n"
                          "  stop_if_loss_above_steps = 3\n") == base
    assert _key(tmp_path, "  eval_every = 0.5\n") != base
    assert _key(tmp_path, '  pad_token = "<pad>"\n') != base


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Artifact, Artifact]:
    store = Store(tmp_path_factory.mktemp("cadence"))
    data = store.dataset("dataset.train", _tasks(32))
    text = store.dataset("dataset.text", [{"text": f"{r['prompt']}\n{r['completion']}"} for r in _tasks(64)])
    art, _ = store.run(model_step.run, "model.base", {
        "path": None, "hub": None, "revision": None, "gguf": None,
        "init": Call("tiny", {**TINY, "data": text})})
    return store, art, data


def test_epoch_fractions_and_kept_checkpoints(base: tuple[Store, Artifact, Artifact],
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """32 rows at batch 8: 4 steps an epoch. eval_every = 0.5 validates at steps 2 and 4
    (not the default eval_steps = 50); save_every = 0.25 saves at 1..4; the last 2 are kept
    after success and listed by `ft checkpoints`."""
    store, model, data = base
    ctx = dataclasses.replace(store.ctx("train.sft", {
        **TRAIN, "from": model, "data": data, "eval_data": data, "eval_every": 0.5, "save_every": 0.25,
        "keep_checkpoints": 2, "logging_steps": 1}), key="k" * 64)
    meta = train.run(ctx)
    assert meta["eval_steps"] == [2, 4], meta
    found = cadence.listing(store.root / "cache", "train.sft")
    assert [c["step"] for c in found] == [3, 4]
    assert all(isinstance(c["loss"], float) for c in found)
    assert not list((store.root / "cache" / "checkpoints" / ("k" * 64)).glob("checkpoint-*"))  # not resumable
    from ftlang.runtime import checkpoints
    from ftlang.runtime.checkpoints import cmd_checkpoints

    # The listing alone: that the file has a train.sft is pinned in test_cli_guards.py.
    monkeypatch.setattr(checkpoints, "_unknown", lambda args: None)
    project = store.root / "p.ft"
    project.write_text("ft 0.1\n")  # the command reads the cache beside an existing .ft file
    assert cmd_checkpoints(argparse.Namespace(file=str(project), node="train.sft")) == 1  # .ft/ is elsewhere
    (store.root / ".ft").mkdir(exist_ok=True)
    (store.root / ".ft" / "cache").symlink_to(store.root / "cache")
    capsys.readouterr()
    assert cmd_checkpoints(argparse.Namespace(file=str(project), node="train.sft")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "train.sft (key kkkkkkkkkkkk)"
    assert [ln.split()[:2] for ln in lines[1:]] == [["step", "3"], ["step", "4"]]
    assert lines[2].endswith("checkpoint-4") and f"loss {found[1]['loss']:.4f}" in lines[2]


def test_loss_watchdog_fails_the_node_cleanly(base: tuple[Store, Artifact, Artifact]) -> None:
    store, model, data = base
    with pytest.raises(StepError, match=r"stayed above 0\.001 for 2 logged steps \(last .* at step 2\)"):
        store.run(train.run, "train.watch", {**TRAIN, "from": model, "data": data, "logging_steps": 1,
                                             "stop_if_loss_above": 0.001, "stop_if_loss_above_steps": 2})


def test_pad_token_other_than_eos(base: tuple[Store, Artifact, Artifact]) -> None:
    store, model, data = base
    tok = modelio.load_tokenizer(model)
    cadence.set_pad_token(tok, {"pad_token": "<|im_end|>"})
    assert tok.pad_token_id == tok.convert_tokens_to_ids("<|im_end|>") != tok.eos_token_id
    with pytest.raises(StepError, match="is not a token of this tokenizer"):
        cadence.set_pad_token(tok, {"pad_token": "<nope>"})
    art, _ = store.run(train.run, "train.pad", {**TRAIN, "from": model, "data": data, "max_steps": 1,
                                                "pad_token": "<|im_end|>"})
    saved = json.loads((modelio.tokenizer_folder(art) / "tokenizer_config.json").read_text())
    assert saved["pad_token"] == "<|im_end|>"


def test_a_batch_of_equal_rows_collates_as_the_padding_path_would() -> None:
    """Rows of one length (the common case after packing to a fixed length): the same
    tensors, types and keys as the padding path gives."""
    import torch
    from ftlang.stdlib.examples import IGNORE, make_collator

    rows = [{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [8, 9, 1], "labels": [8, 9, IGNORE]}]
    out = make_collator(0)(rows)
    assert list(out) == ["input_ids", "attention_mask", "labels"]
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 9, 1]]
    assert out["labels"].tolist() == [[IGNORE, 6, 7], [8, 9, IGNORE]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 1]]
    assert {t.dtype for t in out.values()} == {torch.int64}
    padded = make_collator(0, 4)(rows)  # pad_to wider than the rows: the padding path
    assert padded["input_ids"][:, :3].tolist() == out["input_ids"].tolist()
    assert padded["attention_mask"][:, 3].tolist() == [0, 0]


def test_pad_to_length_and_checkpointing_kwargs(tmp_path: Path) -> None:
    from ftlang.stdlib.examples import IGNORE, make_collator
    from ftlang.stdlib.trainer import trainer_settings
    from stepkit import complete

    batch = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    out = make_collator(0, 16)(batch)
    assert tuple(out["input_ids"].shape) == (2, 16)
    assert out["attention_mask"][0].tolist() == [1, 1, 1] + [0] * 13
    assert out["labels"][1].tolist() == [8] + [IGNORE] * 15
    assert tuple(make_collator(0)(batch)["input_ids"].shape) == (2, 3)  # default: the longest row
    p = complete("train", {"gradient_checkpointing": True, "gradient_checkpointing_reentrant": True})
    kw = trainer_settings(p, 1e-4, tmp_path, "cpu", has_eval=False)
    assert kw["activation_checkpointing_kwargs"] == {"use_reentrant": True}
    p = complete("train", {"gradient_checkpointing": True})
    assert trainer_settings(p, 1e-4, tmp_path, "cpu", has_eval=False)["activation_checkpointing_kwargs"] == \
        {"use_reentrant": False}
    assert _errors(tmp_path, "  max_length = 64\n  pad_to_length = 32\n")[0].startswith(
        "FT0283 `pad_to_length = 32` is shorter than max_length (64)")


def test_chat_rows_default_to_the_tokenizers_own_template(base: tuple[Store, Artifact, Artifact]) -> None:
    """objective = chat without `template`: a tokenizer with a chat_template renders with it
    (an instruct model's own format), recorded as the trained model's template."""
    store, model, _ = base
    from ftlang.stdlib import chat_templates

    # Any Jinja template (short: the tiny tokenizer spells markup out byte by byte).
    own = ("{% for m in messages %}{{ m['role'][0] + ':' + m['content'] + '|' }}{% endfor %}"
           "{% if add_generation_prompt %}a:{% endif %}")
    folder = store.root / "with_template"
    shutil.copytree(model.path, folder)
    tok = modelio.load_tokenizer(model)
    tok.chat_template = own
    tok.save_pretrained(str(modelio.tokenizer_folder(Artifact(model.node, "x", folder))))
    chats = store.dataset("dataset.chats", [{"messages": [{"role": "user", "content": f"Say {w}"},
                                                          {"role": "assistant", "content": w}]}
                                            for w in ("red", "green", "blue", "gold")])
    art, _ = store.run(train.run, "train.chat", {**TRAIN, "from": Artifact(model.node, "y", folder), "data": chats,
                                                 "objective": "chat", "messages_field": "messages", "max_steps": 1})
    tpl = modelio.template_of(art)
    assert tpl["style"] == "jinja" and tpl["name"] == "tokenizer" and tpl["source"] == own
    assert chat_templates.stop_marker(tpl) == "|"
    assert chat_templates.segments(tpl, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "yo"}]) \
        == [("u:Hi|a:", False), ("yo|", True)]
