"""One declaration per step kind, per training method and per metric (issue 10, item 1),
and no attribute silently ignored (item 6).

- registry.py only indexes what the step modules declare;
- every declared attribute of every step kind (for train: under every method) and every
  call argument is read by the code that runs it, or is non-semantic, or is refused at
  compile time for that method (Method.unused) - a static walk over the code reachable
  from the step's `run`;
- the attributes that were accepted and ignored are now errors, with a help line;
- target_modules is checked at compile time (its shape) and at run time (its names);
- GRPO/RLOO cap max_new_tokens at the model's context;
- a Call keeps its family, so `py` as a reward never takes the metric's signature in a key.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from ftlang.compiler import compile_source
from ftlang.lang.diagnostics import FtError
from ftlang.stdlib import registry
from ftlang.stdlib.spec import Call, StepError

STDLIB = ROOT / "stdlib"

# ---- the index ---------------------------------------------------------------------------


def test_registry_declares_nothing() -> None:
    """registry.py gathers declarations; none is written there."""
    text = (STDLIB / "registry.py").read_text()
    assert not re.search(r"\b(Attr|Signature|StepSpec|Method|Metric)\(", text)
    assert set(registry.STEPS) == {"dataset", "curate", "template", "model", "train", "eval", "merge", "export",
                                   "generate", "clean", "mix", "judge_pairs", "critique"}
    for kind, spec in registry.SPECS.items():  # each kind's SPEC lives in the module that runs it
        module = spec.run.split(":")[0]
        if kind == "eval":  # evaluate.py imports torch at the top; its declaration is apart
            module = "ftlang.stdlib.evaluate_spec"
        assert __import__(module, fromlist=["SPEC"]).SPEC is spec, kind
    assert registry.METHODS == {n: m.signature for n, m in registry.METHOD_INDEX.items()}


def test_methods_are_declared_where_they_run() -> None:
    import importlib

    homes = {"adapter": "ftlang.stdlib.adapters", "preference": "ftlang.stdlib.preference",
             "online": "ftlang.stdlib.rl"}
    # A method may refuse a sub-block too (ppo: `distributed { ... }`).
    train_attrs = set(registry.STEPS["train"].signature.names) | set(registry.STEPS["train"].subblocks)
    for name, m in registry.METHOD_INDEX.items():
        assert m.family in homes, name
        module, fn = m.run.split(":")
        assert callable(getattr(importlib.import_module(module), fn)), m.run
        declared_in = [mod for mod in homes.values() if any(
            d is m for d in vars(importlib.import_module(mod)).get(
                {"ftlang.stdlib.adapters": "ADAPTER_METHODS", "ftlang.stdlib.preference": "PREFERENCE_METHODS",
                 "ftlang.stdlib.rl": "ONLINE_METHODS"}[mod], ()))]
        assert declared_in == [homes[m.family]], name
        assert set(m.unused) <= train_attrs, (name, set(m.unused) - train_attrs)
        assert m.lr > 0 and (m.lr_adapter is None or m.lr_adapter > 0)
        assert m.family == "adapter" or m.columns, name  # the rest read fixed columns


def test_one_table_of_metric_directions_and_schema_types() -> None:
    from ftlang.compiler import check, contracts
    from ftlang.runtime import report_eval
    from ftlang.stdlib import dataset, evaluate_spec, select

    assert check.SCHEMA_TYPES is dataset.SCHEMA_TYPES
    assert report_eval.LOWER_IS_BETTER is evaluate_spec.LOWER_IS_BETTER == {"loss", "perplexity", "toxicity"}
    assert evaluate_spec.GENERATIVE == {n for n, m in evaluate_spec.METRIC_INDEX.items() if m.generates}
    assert select.BEST == {"loss": "min", "perplexity": "min", "exact_match": "max"}
    for gone in ("SELECT_METRICS", "_block_rules", "_method_rules", "_merge_rules", "_check_assert"):
        assert not hasattr(check, gone), gone
    assert not hasattr(contracts, "OBJECTIVE_COLUMNS") and not hasattr(registry, "DEFAULT_LR")
    # The report colours a delta by the declared direction.
    assert 'class="delta good"' in report_eval._delta("loss", 1.0, 2.0)
    assert 'class="delta good"' in report_eval._delta("bleu", 2.0, 1.0)
    assert 'class="delta neutral"' in report_eval._delta("my_metric", 2.0, 1.0)


def test_the_display_and_the_report_show_the_declared_summary() -> None:
    from ftlang.runtime import executor, report_sections

    metas = {"dataset": {"rows": 6000, "columns": ["text"]},
             "curate": {"rows_in": {"tasks": 4000}, "rows_out": 4000, "parts": {"train": 3578, "heldout": 422}},
             "train": {"final_loss": 1.2544, "steps": 800}, "eval": {"rows": 422},
             "select": {"selected": "train.sft[lr=1e-4]"}, "export": {"params": 1234}, "model": {"params": 9}}
    shown = {"dataset": "6000 rows", "curate": "4000 rows, train 3578, heldout 422",
             "train": "loss 1.254, 800 steps", "eval": "422 rows", "select": "kept sft[lr=1e-4]",
             "export": "1,234 parameters", "model": ""}
    for kind, meta in metas.items():
        spec = registry.SPECS[kind]
        assert spec.summary(meta) == shown[kind], kind
        node = type("N", (), {"spec": spec})()
        assert executor._summary(node, meta) == (f"  {shown[kind]}" if shown[kind] else "")  # type: ignore[arg-type]
        assert report_sections._summary(f"{kind}.x", meta) == shown[kind]
    assert report_sections._summary("train.x", {"error": "boom"}) == "boom"


# ---- every attribute reaches the step, or is refused -------------------------------------------


class _Module:
    """One stdlib module: its top-level functions and classes, and the names it imports."""

    def __init__(self, path: Path) -> None:
        tree = ast.parse(path.read_text())
        self.defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        self.names: dict[str, tuple[str, str]] = {}  # local name -> (module, name) it imports
        self.modules: dict[str, str] = {}  # local name -> stdlib module it imports
        for node in ast.walk(tree):  # imports inside functions too (the heavy ones are lazy)
            if isinstance(node, ast.ImportFrom) and node.module == "ftlang.stdlib":
                self.modules.update({a.asname or a.name: a.name for a in node.names})
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ftlang.stdlib."):
                mod = node.module.rsplit(".", 1)[1]  # type: ignore[union-attr]
                self.names.update({a.asname or a.name: (mod, a.name) for a in node.names})


MODULES = {p.stem: _Module(p) for p in sorted(STDLIB.glob("*.py"))}
HOOKS = {"rules", "needs", "summary", "unused"}  # compile-time hooks: not the step's behaviour


def reads_from(root: str) -> set[str]:
    """The names read as `x["name"]` or `x.get("name")` by the code reachable from the
    function `root` ("ftlang.stdlib.module:function"). Calls and references are followed
    through the module's own definitions and its stdlib imports (`modelio.load_model`,
    `from ftlang.stdlib.trainer import fit`); methods of a class are followed with it."""
    mod, fn = root.split(":")
    todo, seen, names = [(mod.rsplit(".", 1)[1], fn)], set(), set()
    while todo:
        mod, fn = todo.pop()
        if (mod, fn) in seen or fn in HOOKS or mod in ("registry", "spec"):
            continue
        seen.add((mod, fn))
        m = MODULES[mod]
        node = m.defs.get(fn)
        if node is None:
            if fn in m.names:
                todo.append(m.names[fn])
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Subscript) and isinstance(sub.slice, ast.Constant) \
                    and isinstance(sub.slice.value, str):
                names.add(sub.slice.value)
            elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr == "get" \
                    and sub.args and isinstance(sub.args[0], ast.Constant):
                names.add(str(sub.args[0].value))
            elif isinstance(sub, ast.Name) and (sub.id in m.defs or sub.id in m.names):
                todo.append((mod, sub.id))
            elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id in m.modules:
                todo.append((m.modules[sub.value.id], sub.attr))
    return names


def _ignored(sig: Any, reads: set[str], allowed: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    return [a.name for a in sig.attrs if a.semantic and a.name not in reads and a.name not in allowed]


def test_every_block_attribute_reaches_its_step() -> None:
    problems = {}
    for kind, spec in registry.SPECS.items():
        if kind == "train":
            continue  # by method, below
        reads = reads_from(spec.run)
        missing = _ignored(spec.signature, reads) + [s for s in spec.subblocks if s not in reads]
        for sub in spec.subblocks.values():
            missing += [f"{sub.name}.{n}" for n in _ignored(sub, reads)]
        if missing:
            problems[kind] = missing
    assert not problems, f"declared but never read by the step: {problems}"


def test_every_train_attribute_reaches_every_method_or_is_refused() -> None:
    from ftlang.stdlib import train

    problems = {}
    attrs = registry.STEPS["train"].signature
    for name, m in registry.METHOD_INDEX.items():
        reads = reads_from("ftlang.stdlib.train:run") | reads_from(m.run)
        missing = _ignored(attrs, reads, set(m.unused))
        if missing:
            problems[name] = missing
        missing_args = _ignored(m.signature, reads)
        if missing_args:
            problems[f"{name}(...)"] = missing_args
    assert not problems, f"train attributes or method arguments read by nobody: {problems}"
    # Objectives: each field is read by the supervised path, and refused by the others.
    for objective, fields in train.OBJECTIVES.items():
        refused = set(train.unused(Call("lora", {}), objective))
        assert refused == set(train.FIELDS) - set(fields) | set(train._OBJECTIVE_UNUSED.get(objective, {}))


@pytest.mark.parametrize("family,root", [
    ("source", "ftlang.stdlib.dataset:run"), ("init", "ftlang.stdlib.model:run"),
    ("metric", "ftlang.stdlib.evaluate:run"), ("template", "ftlang.stdlib.template:run"),
    ("reward", "ftlang.stdlib.rl:run"), ("merge", "ftlang.stdlib.merge:run"),
    ("parse", "ftlang.stdlib.synth:run"), ("pii", "ftlang.stdlib.clean:run"), ("dedup", "ftlang.stdlib.clean:run"),
    ("language", "ftlang.stdlib.clean:run"), ("decontam", "ftlang.stdlib.clean:run"),
    ("balance", "ftlang.stdlib.train:run"), ("order", "ftlang.stdlib.train:run"),
    ("trainable", "ftlang.stdlib.train:supervised")])
def test_every_call_argument_reaches_its_step(family: str, root: str) -> None:
    from ftlang.stdlib.evaluate_spec import METRICS

    reads = reads_from(root)
    # metrics.normalizer reads exact_match's and contains' options by their declaration.
    generic = {a.name for a in METRICS["exact_match"].attrs} if family == "metric" else set()
    missing = {name: _ignored(sig, reads, generic) for name, sig in registry.CALLS[family].items()}
    assert not {k: v for k, v in missing.items() if v}, missing


def test_the_walk_sees_an_attribute_nobody_reads() -> None:
    """The walk itself: a made-up attribute is reported, a real one is found."""
    from ftlang.stdlib.spec import Attr, Signature

    sig = Signature("x", (Attr("beta", "float", 0.1), Attr("no_such_knob", "int", 1)))
    assert _ignored(sig, reads_from("ftlang.stdlib.preference:run")) == ["no_such_knob"]
    assert "max_length" not in reads_from("ftlang.stdlib.dataset:run")


# ---- the attributes that were silently ignored ------------------------------------------------

HEAD = """ft 0.1
dataset d { source = jsonl("d.jsonl") }
model base { init = tiny(data = d) }
"""


def _check(tmp_path: Path, body: str, rows: str = '{"prompt": "a", "chosen": "b", "rejected": "c"}\n') -> list[str]:
    (tmp_path / "d.jsonl").write_text(rows)
    (tmp_path / "rewards.py").write_text("def r(prompts, completions, **kw):\n    return [0.0] * len(prompts)\n")
    try:
        p = compile_source(HEAD + body, "p.ft", tmp_path)
    except FtError as e:
        return [f"{d.level} {d.message} | {d.help}" for d in e.diagnostics]
    # FT0320 (an adapter on the random `base` learns little) is not what these tests are about.
    return [f"{d.level} {d.message} | {d.help}" for d in p.warnings if d.code != "FT0320"]


@pytest.mark.parametrize("attr,method,value", [
    ("truncation", "dpo(beta = 0.1)", '"keep_end"'),
    ("messages_field", "dpo(beta = 0.1)", '"msgs"'),
    ("prompt_field", "kto()", '"question"'),
    ("max_length", 'grpo(reward = py("rewards.py", "r"))', "64"),
    ("max_length", 'rloo(reward = py("rewards.py", "r"))', "64"),
    ("eval_data", 'grpo(reward = py("rewards.py", "r"))', "d"),
    ("packing", "prompt_tuning(tokens = 4)", "true"),
    ("packing", "dpo(adapter = lora())", "true"),
    ("objective", "orpo()", "clm"),
])
def test_an_attribute_the_method_does_not_read_is_an_error(tmp_path: Path, attr: str, method: str,
                                                           value: str) -> None:
    got = _check(tmp_path, f"train t {{\n  from = base\n  data = d\n  method = {method}\n  {attr} = {value}\n}}\n")
    name = method.split("(")[0]
    errors = [g for g in got if g.startswith("error")]
    assert any(f"`{attr}` has no effect with method = {name}(...) | remove `{attr}`: " in g for g in errors), got


def test_objective_fields_of_another_objective_are_errors(tmp_path: Path) -> None:
    rows = '{"prompt": "a", "completion": "b", "text": "c"}\n'
    got = _check(tmp_path, "train t {\n  from = base\n  data = d\n  text_field = \"text\"\n}\n", rows)
    assert got == ["error `text_field` has no effect with objective = sft | remove `text_field`: "
                   "objective = sft reads prompt_field and completion_field"], got
    got = _check(tmp_path, "train t {\n  from = base\n  data = d\n  objective = clm\n  truncation = \"drop\"\n"
                 "  prompt_field = \"prompt\"\n}\n", rows)
    assert [g.split(" |")[0] for g in got] == ["error `truncation` has no effect with objective = clm",
                                               "error `prompt_field` has no effect with objective = clm"], got


def test_defaults_and_used_attributes_pass(tmp_path: Path) -> None:
    # A swept argument reaches the rules as a sweep (grpo's reference rule compared it with 0).
    assert _check(tmp_path, 'train t {\n  from = base\n  data = d\n  method = grpo(reward = py("rewards.py", '
                  '"r"), beta = sweep [0.0, 0.1])\n}\n') == []
    assert _check(tmp_path, "train t {\n  from = base\n  data = d\n"
                  "  method = lora(double_quant = sweep [true, false], quant = \"nf4\")\n}\n",
                  '{"prompt": "a", "completion": "b"}\n') == []
    assert _check(tmp_path, "train t {\n  from = base\n  data = d\n  method = dpo(beta = 0.1)\n"
                  "  max_length = 64\n  eval_data = d\n}\n") == []
    assert _check(tmp_path, 'train t {\n  from = base\n  data = d\n  method = online_dpo(reward = py("rewards.py", '
                  '"r"))\n  max_length = 64\n}\n') == []
    rows = '{"messages": [{"role": "user", "content": "a"}]}\n'
    assert _check(tmp_path, 'train t {\n  from = base\n  data = d\n  objective = chat\n  messages_field = "messages"\n'
                  "  truncation = \"keep_end\"\n}\n", rows) == []


@pytest.mark.parametrize("value,says", [
    ("5", 'is a list of module names or "all-linear", found 5'),
    ('"all"', 'takes the string "all-linear" only, not "all"'),
    ("[]", "names no module"),
    ('["q_proj", 3]', "is a list of module names (strings), found 3"),
])
def test_target_modules_of_the_wrong_shape_are_compile_errors(tmp_path: Path, value: str, says: str) -> None:
    rows = '{"prompt": "a", "completion": "b"}\n'
    for method in (f"lora(target_modules = {value})", f"dpo(adapter = lora(target_modules = {value}))",
                   f"ia3(target_modules = {value})"):
        got = _check(tmp_path, f"train t {{\n  from = base\n  data = d\n  method = {method}\n}}\n",
                     rows if method[0] != "d" else '{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
        assert any(g.startswith("error ") and says in g for g in got), (method, got)
    for ok in ('"all-linear"', '["q_proj", "v_proj"]'):
        assert _check(tmp_path, f"train t {{\n  from = base\n  data = d\n  method = lora(target_modules = {ok})\n}}\n",
                      rows) == []


def test_an_unknown_module_name_is_a_step_error_naming_the_linear_layers() -> None:
    pytest.importorskip("peft")
    from ftlang.stdlib import adapters
    from stepkit import _fill_value
    from transformers import LlamaConfig, LlamaForCausalLM

    lm = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, vocab_size=64))
    bad = _fill_value("call[method]", Call("lora", {"target_modules": ["q_proj", "output_proj"]}))
    with pytest.raises(StepError, match="no module named 'output_proj'") as info:
        adapters.apply_adapter(lm, bad)
    assert "q_proj" in (info.value.hint or "") and "down_proj" in (info.value.hint or "")
    good = _fill_value("call[method]", Call("lora", {"target_modules": ["q_proj", "v_proj"]}))
    assert adapters.apply_adapter(lm, good).peft_config["default"].target_modules == {"q_proj", "v_proj"}


class _Tok:
    """A tokenizer stand-in: one id per word, plus BOS."""

    def __call__(self, texts: list[str], add_special_tokens: bool = True) -> dict[str, list[list[int]]]:
        return {"input_ids": [[1] + [2] * len(t.split()) for t in texts]}


def test_the_generation_budget_stops_at_the_models_context() -> None:
    from ftlang.stdlib import rl

    logs: list[str] = []
    ctx = type("C", (), {"log": staticmethod(logs.append)})()
    lm = type("M", (), {"config": type("Cfg", (), {"max_position_embeddings": 128})()})()
    assert rl.generation_budget(ctx, lm, _Tok(), ["a b c", "a b c d e f g"], 512) == 120  # 128 - (1 + 7)
    assert "completions stop at 120 new tokens" in logs[-1]
    assert rl.generation_budget(ctx, lm, _Tok(), ["a b c"], 16) == 16 and len(logs) == 1
    with pytest.raises(StepError, match="fills the model's 128 positions"):
        rl.generation_budget(ctx, lm, _Tok(), ["w " * 200], 16)


# ---- a Call keeps its family ---------------------------------------------------------------------


def test_a_call_resolves_in_its_own_family(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from ftlang.runtime import keys
    from ftlang.runtime.hashing import StatCache
    from ftlang.stdlib.spec import Signature

    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    (tmp_path / "f.py").write_text("def r(prompts, completions, **kw):\n    return [0.0] * len(prompts)\n")
    p = compile_source(HEAD + """
train g { from = base, data = d, method = grpo(reward = py("f.py", "r")) }
eval e { models = [base], data = d, metrics = [py("f.py", "r")] }
""", "p.ft", tmp_path)
    reward = p.nodes["train.g"].params["method"].args["reward"][0]
    metric = p.nodes["eval.e"].params["metrics"][0]
    assert (reward.family, metric.family, p.nodes["train.g"].params["method"].family) == ("reward", "metric", "method")
    assert keys._call_signature(reward) is registry.REWARDS["py"]
    assert keys._call_signature(metric) is registry.METRICS["py"]
    # Were the two signatures to differ in what is semantic, each key would follow its own.
    quiet = Signature("py", tuple(replace(a, semantic=a.name == "function") for a in registry.REWARDS["py"].attrs))
    monkeypatch.setitem(registry.CALLS, "reward", {**registry.REWARDS, "py": quiet})
    canon = keys.canon(reward, {}, StatCache(tmp_path / "stat.json"))
    assert canon == {"call": "py", "args": {"function": "r"}}
    assert "file" in keys.canon(metric, {}, StatCache(tmp_path / "stat.json"))["args"]
    assert Call("py", {"x": 1}, "reward") == Call("py", {"x": 1})  # the family is not part of the value


def test_grpo_generates_within_the_models_context(tmp_path: Path) -> None:
    """512 new tokens asked of a 32-position model: capped (and said so), not 10 minutes of
    generation past the context."""
    pytest.importorskip("trl")
    import time

    from ftlang.stdlib import model as model_step
    from ftlang.stdlib import train
    from stepkit import Store
    from test_stdlib_ml import TINY, _tasks

    store = Store(tmp_path)
    rows = _tasks(16, seed=2)
    data = store.dataset("dataset.prompts", rows)
    text = store.dataset("dataset.text", [{"text": f"{r['prompt']} {r['completion']}"} for r in rows])
    base, _ = store.run(model_step.run, "model.base", {"init": Call("tiny", {**TINY, "context": 32, "data": text})})
    (tmp_path / "rewards.py").write_text("def r(prompts, completions, **kw):\n    return [float(len(c)) for c in completions]\n")
    reward = Call("py", {"file": str(tmp_path / "rewards.py"), "function": "r"})
    started = time.perf_counter()
    _, meta = store.run(train.run, "train.grpo", {
        "from": base, "data": data, "max_steps": 1, "batch_size": 4, "logging_steps": 1,
        "method": Call("grpo", {"reward": [reward], "max_new_tokens": 512, "generations": 2})})
    assert 0 < meta["max_new_tokens"] < 32, meta
    assert any(f"completions stop at {meta['max_new_tokens']} new tokens" in m for m in store.logs), store.logs
    assert time.perf_counter() - started < 120


def test_columns_come_from_the_method_and_every_point_of_a_sweep(tmp_path: Path) -> None:
    prefs = '{"prompt": "a", "chosen": "b", "rejected": "c"}\n'
    # A swept preference method reads its own columns (it used to be taken for sft's).
    assert _check(tmp_path, "train t {\n  from = base\n  data = d\n"
                  "  method = sweep [dpo(beta = 0.1), dpo(beta = 0.2)]\n}\n", prefs) == []
    got = _check(tmp_path, "train t {\n  from = base\n  data = d\n  method = sweep [lora(r = 4), lora(r = 8)]\n}\n",
                 prefs)
    assert any("needs columns `prompt`, `completion`" in g for g in got) or \
        any("needs column `completion`" in g for g in got), got
    # eval_data must have the columns data has.
    (tmp_path / "e.jsonl").write_text('{"question": "a", "completion": "b"}\n')
    got = _check(tmp_path, 'dataset e { source = jsonl("e.jsonl") }\n'
                 "train t {\n  from = base\n  data = d\n  eval_data = e\n}\n", '{"prompt": "a", "completion": "b"}\n')
    assert any("needs column `prompt`, which e does not have" in g for g in got), got


def test_a_call_keeps_its_family_through_sweep_expansion(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    (tmp_path / "f.py").write_text("def r(prompts, completions, **kw):\n    return [0.0] * len(prompts)\n")
    p = compile_source(HEAD + 'train g { from = base, data = d, method = grpo(reward = py("f.py", "r"), '
                       "beta = sweep [0.0, 0.1]) }\n", "p.ft", tmp_path)
    for nid in ("train.g[beta=0]", "train.g[beta=0.1]"):
        assert p.nodes[nid].params["method"].args["reward"][0].family == "reward"


def test_every_code_the_stdlib_hooks_raise_is_declared() -> None:
    from ftlang.lang.diagnostics import CODES

    used = set()
    for path in STDLIB.glob("*.py"):
        used |= set(re.findall(r'"(FT\d{4})"', path.read_text()))
    assert used and used <= set(CODES), sorted(used - set(CODES))


@pytest.mark.parametrize("method", ["grpo", "rloo", "online_dpo"])
@pytest.mark.parametrize("adapter", ["prompt_tuning", "prefix_tuning"])
def test_online_rl_refuses_virtual_token_adapters(tmp_path: Path, method: str, adapter: str) -> None:
    (tmp_path / "f.py").write_text("def r(prompts, completions, **kw):\n    return [0.0] * len(prompts)\n")
    got = _check(tmp_path, f'train t {{\n  from = base\n  data = d\n  method = {method}(reward = [py("f.py", "r")], '
                 f"adapter = {adapter}(tokens = 4))\n}}\n", '{"prompt": "a"}\n')
    assert any(g.startswith(f"error {method} cannot train a {adapter} adapter") for g in got), got
