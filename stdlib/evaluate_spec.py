"""Declarations of the `eval` step and the metric family (the compiler reads these).

Nothing here imports torch or sacrebleu: the implementations live in
ftlang.stdlib.metrics (text metrics, custom Python metrics), ftlang.stdlib.generate
(generation, reward-model scoring) and ftlang.stdlib.evaluate (the step).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ftlang.lang import ast
from ftlang.lang.diagnostics import Diagnostic, did_you_mean
from ftlang.stdlib import safety_spec
from ftlang.stdlib.dataset import summary
from ftlang.stdlib.spec import (
    REQUIRED,
    Attr,
    BlockView,
    Metric,
    Need,
    Signature,
    StepSpec,
    error,
    fields,
)

# Text normalisation shared by exact_match and contains. `normalize = false` turns
# every option off; otherwise each option applies on its own.
_NORMALIZE = (
    Attr("normalize", "bool", True, "apply the options below; false compares the raw text"),
    Attr("strip", "bool", True, "ignore leading and trailing whitespace"),
    Attr("casefold", "bool", True, "compare case-insensitively (Unicode casefold)"),
    Attr("collapse_whitespace", "bool", False, "treat every run of whitespace as one space"),
    Attr("strip_punctuation", "bool", False, "drop punctuation characters (Unicode category P)"),
)

_METRICS = (
    Metric(Signature("loss", (), "Mean cross-entropy over completion tokens (EOS included)."),
           higher_is_better=False, generates=False),
    Metric(Signature("perplexity", (), "exp(loss)."), higher_is_better=False, generates=False),
    Metric(Signature("exact_match", _NORMALIZE, "Share of generations equal to the reference completion."),
           higher_is_better=True, generates=True),
    Metric(Signature("contains", _NORMALIZE, "Share of generations that contain the reference completion."),
           higher_is_better=True, generates=True),
    Metric(Signature("regex", (
        Attr("pattern", "str", "", "a Python regular expression; empty: each reference is the pattern",
             regex=True),
        Attr("fullmatch", "bool", False, "the pattern must match the whole (stripped) generation"),
        Attr("ignore_case", "bool", False, "match case-insensitively"),
    ), "Share of generations the pattern matches. With a capturing group, the group's text "
       'must equal the reference (stripped, case-insensitive): `regex("answer: (\\d+)")`.',
        positional=("pattern",)), higher_is_better=True, generates=True),
    Metric(Signature("bleu", (
        Attr("tokenize", "enum", "13a", "sacrebleu tokenizer",
             choices=("13a", "none", "intl", "char", "zh")),
        Attr("lowercase", "bool", False, "lowercase before scoring"),
    ), "Corpus BLEU (sacrebleu), 0-100."), higher_is_better=True, generates=True),
    Metric(Signature("chrf", (
        Attr("char_order", "int", 6, "character n-gram order", ge=1),
        Attr("word_order", "int", 0, "word n-gram order (2 gives chrF++)", ge=0),
        Attr("beta", "float", 2.0, "recall weight", gt=0),
        Attr("lowercase", "bool", False, "lowercase before scoring"),
    ), "Corpus chrF (sacrebleu), 0-100."), higher_is_better=True, generates=True),
    Metric(Signature("rouge_l", (
        Attr("lowercase", "bool", True, "lowercase before tokenizing"),
    ), "Mean ROUGE-L F1 (longest common subsequence of word tokens), 0-1."), higher_is_better=True,
        generates=True),
    Metric(Signature("reward", (
        Attr("model", "model", REQUIRED, "a sequence-classification (reward) model"),
    ), "Mean reward-model score of prompt + generation.", positional=("model",)), higher_is_better=True,
        generates=True),
    Metric(Signature("win_rate", (
        Attr("judge", "model", REQUIRED, "the reward model that judges each pair"),
        Attr("against", "model", REQUIRED, "the model every other model is compared with"),
    ), "Share of rows where this model's generation scores higher than `against`'s "
       "under the judge (ties count half; `against` itself scores 0.5)."), higher_is_better=True,
        generates=True),
    Metric(Signature("py", (
        Attr("file", "path", REQUIRED, "a Python file, relative to the .ft file (its content enters the key)"),
        Attr("function", "str", REQUIRED, "fn(predictions, references, prompts) -> float"),
    ), "A custom metric: a Python function over the generations. Its value is named after "
       "the function (`assert sft.my_metric > 0.5`).", positional=("file", "function")),
        higher_is_better=None, generates=True),
    *safety_spec.SAFETY_METRICS,  # refusal_rate, judge, toxicity
)

METRIC_INDEX: dict[str, Metric] = {m.name: m for m in _METRICS}
METRICS = {name: m.signature for name, m in METRIC_INDEX.items()}  # the call family

# Metrics that need the models' generations (the rest read only the logits).
GENERATIVE = frozenset(n for n, m in METRIC_INDEX.items() if m.generates)
LOWER_IS_BETTER = frozenset(n for n, m in METRIC_INDEX.items() if m.higher_is_better is False)


def metric_key(call: Any) -> str:
    """The name a metric's value is stored under (the table column, what `assert` names):
    the call's name, except `py(...)`, which is named after its function."""
    name = getattr(call, "name", None) or str(call)
    if name == "py":
        args = getattr(call, "args", None) or {}
        fn = args.get("function")
        if isinstance(fn, str) and fn:
            return fn
    return name


def higher_is_better(metric: str) -> bool | None:
    """The direction of a stored metric value (a py(...) metric's is unknown: None)."""
    m = METRIC_INDEX.get(metric)
    return m.higher_is_better if m is not None else None


# ---- compile-time hooks --------------------------------------------------------------------

def rules(b: BlockView) -> list[Diagnostic]:
    """`models` is not empty; each `assert` compares `model.metric` values of this eval's models
    and metrics (one of numbers only is always true or always false: an error too)."""
    models: set[str] | None = {r.node.split(".", 1)[1] for r in b.params.get("models") or []
                               if isinstance(getattr(r, "node", None), str)}
    metrics: set[str] | None = {metric_key(c) for c in b.params.get("metrics") or [] if hasattr(c, "name")}
    # A written list that failed its own check is absent from params: its error is already
    # reported, and every assert naming its entries would only repeat it (None: not checked).
    if b.given("models") and "models" not in b.params:
        models = None
    if b.given("metrics") and "metrics" not in b.params:
        metrics = None
    out: list[Diagnostic] = []
    if b.params.get("models") == []:  # required, and given as an empty list
        out.append(error("FT0105", f"eval `{b.name}` evaluates no model", b.at("models"), "an empty list",
                         help="list the models to compare: models = [base, sft]"))
        models = None  # every assert would only repeat it
    for expr in b.asserts:
        _check_assert(expr, models, metrics, b, out)
        if _constant(expr):
            out.append(_always(expr, models, metrics))
    return out + safety_spec.rules(b)


def _constant(expr: Any) -> bool:
    """Whether the expression is made of numbers only (`1 > 2`): it compares no metric."""
    if isinstance(expr, ast.Num):
        return True
    if isinstance(expr, ast.Neg):
        return _constant(expr.operand)
    return isinstance(expr, ast.BinOp) and _constant(expr.left) and _constant(expr.right)


def assert_value(expr: Any, metrics: Mapping[str, Mapping[str, Any]]) -> float:
    """The number an `assert` expression stands for; `model.metric` reads the metrics table
    (runtime/asserts.py evaluates assertions with it after the eval; `rules` folds a
    constant one with an empty table)."""
    if isinstance(expr, ast.Num):
        return float(expr.value)
    if isinstance(expr, ast.Ref):
        model, metric = expr.parts
        return float(metrics[model][metric])
    if isinstance(expr, ast.Neg):
        return -assert_value(expr.operand, metrics)
    if isinstance(expr, ast.BinOp):
        a, b = assert_value(expr.left, metrics), assert_value(expr.right, metrics)
        ops = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else math.inf,
               ">=": float(a >= b), "<=": float(a <= b), ">": float(a > b), "<": float(a < b),
               "==": float(a == b), "!=": float(a != b)}
        return ops[expr.op]
    raise ValueError(f"cannot evaluate {type(expr).__name__}")


def _always(expr: Any, models: set[str] | None, metrics: set[str] | None) -> Diagnostic:
    """FT0118 for an assert that compares no metric: always false (or true) after any eval."""
    try:
        state: str | None = "true" if assert_value(expr, {}) else "false"
    except (OverflowError, KeyError):  # an integer past the float range, an unknown operator
        state = None
    model = min(models) if models else "sft"
    metric = min(metrics) if metrics else "exact_match"
    return error("FT0118", "the assertion compares no metric" + (f": it is always {state}" if state else ""),
                 expr.span, f"always {state}" if state else "numbers only",
                 help=f"an assert checks measured values: compare `model.metric`, e.g. "
                      f"assert {model}.{metric} > 0.5")


def _check_assert(expr: Any, models: set[str] | None, metrics: set[str] | None, b: BlockView,
                  out: list[Diagnostic]) -> None:
    if isinstance(expr, ast.BinOp):
        _check_assert(expr.left, models, metrics, b, out)
        _check_assert(expr.right, models, metrics, b, out)
    elif isinstance(expr, ast.Neg):
        _check_assert(expr.operand, models, metrics, b, out)
    elif isinstance(expr, ast.Ref):
        if len(expr.parts) != 2:
            out.append(error("FT0118", f"`{expr.dotted}`: assertions compare `model.metric` values", expr.span,
                             "not model.metric", help="e.g. assert sft.exact_match >= base.exact_match"))
            return
        model, metric = expr.parts
        if models is None:
            return
        if model not in models:
            guess = did_you_mean(model, models)
            out.append(error("FT0118", f"`{model}` is not one of this eval's models", expr.span,
                             "not evaluated here", help=(f"did you mean `{guess}`? " if guess else "")
                             + f"models: {', '.join(sorted(models))}"))
        elif metrics is not None and metric not in metrics:
            guess = did_you_mean(metric, metrics)
            out.append(error("FT0118", f"`{metric}` is not measured by this eval", expr.span, "unknown metric",
                             help=(f"did you mean `{guess}`? " if guess else "")
                             + f"metrics: {', '.join(sorted(metrics))}"))
    elif not isinstance(expr, ast.Num):
        out.append(error("FT0118", f"assertions use numbers and model.metric values, found {b.describe(expr)}",
                         expr.span, "not allowed here"))


def needs(p: Mapping[str, Any]) -> list[Need]:
    cols = fields(p, ("messages_field",) if p.get("messages_field") else ("prompt_field", "completion_field"))
    return [Need("data", cols), Need("extra_data", cols)]


SPEC = StepSpec(
    kind="eval", version=3, output="metrics", run="ftlang.stdlib.evaluate:run",
    signature=Signature("eval", (
        Attr("models", "list[model]", REQUIRED, "models to compare side by side", unique=True),
        Attr("data", "dataset", REQUIRED, "held-out rows with prompt and completion; `assert` lines "
             "read the metrics measured on it"),
        Attr("extra_data", "list[dataset]", None, "more datasets measured the same way (a general "
             "held-out set for a forgetting check); tables show model x dataset", unique=True),
        Attr("metrics", "list[call[metric]]", ["loss", "perplexity", "exact_match"], "what to measure",
             unique=True),
        Attr("template", "template", None, "overrides each model's own training template"),
        Attr("prompt_field", "str", "prompt", "column holding the prompt"),
        Attr("completion_field", "str", "completion", "column holding the reference"),
        Attr("messages_field", "str", None, "column holding chat rows ([{role, content}, ...]) instead "
             "of prompt/completion: the last assistant turn is the reference, the turns before it "
             "(system and multi-turn context) the prompt"),
        Attr("max_new_tokens", "int", 32, "generation budget per row", ge=1),
        Attr("do_sample", "bool", False, "sample instead of greedy decoding"),
        Attr("temperature", "float", 1.0, "sampling temperature (do_sample = true)", gt=0),
        Attr("top_p", "float", 1.0, "nucleus sampling mass (do_sample = true)", gt=0, le=1),
        Attr("seed", "int", 0, "sampling seed: the same seed gives the same generations"),
        Attr("limit", "int", None, "evaluate at most this many rows per dataset", ge=1),
        Attr("samples", "int", 20, "rows per dataset written to samples.jsonl for the report", ge=0),
        Attr("batch_size", "int", 16, "examples per forward pass", ge=1, semantic=False),
        Attr("device", "enum", None, "where every model of this step runs: auto (the default) picks "
             "cuda, then mps, then cpu, as train does; one choice for generation, losses and judges",
             choices=("auto", "cuda", "mps", "cpu")),
        Attr("adapter_base", "enum", None, "how a quantised LoRA (QLoRA) adapter is measured: merged "
             "(the default) folds it into the full-precision base; quantized runs it unmerged on the "
             "4- or 8-bit base it trained against", choices=("merged", "quantized")),
    ), "Measure models on held-out data; `assert` lines gate the run."),
    statements=("assert",),
    rules=rules, needs=needs, summary=summary,  # the rows measured, as dataset reports its rows
)
EVAL_SPEC = SPEC
