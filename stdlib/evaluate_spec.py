"""Declarations of the `eval` step and the metric family (the compiler reads these).

Nothing here imports torch or sacrebleu: the implementations live in
ftlang.stdlib.metrics (text metrics, custom Python metrics), ftlang.stdlib.generate
(generation, reward-model scoring) and ftlang.stdlib.evaluate (the step).
"""

from __future__ import annotations

from typing import Any

from ftlang.stdlib.spec import REQUIRED, Attr, Signature, StepSpec

# Text normalisation shared by exact_match and contains. `normalize = false` turns
# every option off; otherwise each option applies on its own.
_NORMALIZE = (
    Attr("normalize", "bool", True, "apply the options below; false compares the raw text"),
    Attr("strip", "bool", True, "ignore leading and trailing whitespace"),
    Attr("casefold", "bool", True, "compare case-insensitively (Unicode casefold)"),
    Attr("collapse_whitespace", "bool", False, "treat every run of whitespace as one space"),
    Attr("strip_punctuation", "bool", False, "drop punctuation characters (Unicode category P)"),
)

METRICS = {
    "loss": Signature("loss", (), "Mean cross-entropy over completion tokens (EOS included)."),
    "perplexity": Signature("perplexity", (), "exp(loss)."),
    "exact_match": Signature("exact_match", _NORMALIZE,
                             "Share of generations equal to the reference completion."),
    "contains": Signature("contains", _NORMALIZE,
                          "Share of generations that contain the reference completion."),
    "regex": Signature("regex", (
        Attr("pattern", "str", "", "a Python regular expression; empty: each reference is the pattern"),
        Attr("fullmatch", "bool", False, "the pattern must match the whole (stripped) generation"),
        Attr("ignore_case", "bool", False, "match case-insensitively"),
    ), "Share of generations the pattern matches. With a capturing group, the group's text "
       'must equal the reference (stripped, case-insensitive): `regex("answer: (\\d+)")`.',
        positional=("pattern",)),
    "bleu": Signature("bleu", (
        Attr("tokenize", "enum", "13a", "sacrebleu tokenizer",
             choices=("13a", "none", "intl", "char", "zh")),
        Attr("lowercase", "bool", False, "lowercase before scoring"),
    ), "Corpus BLEU (sacrebleu), 0-100."),
    "chrf": Signature("chrf", (
        Attr("char_order", "int", 6, "character n-gram order", ge=1),
        Attr("word_order", "int", 0, "word n-gram order (2 gives chrF++)", ge=0),
        Attr("beta", "float", 2.0, "recall weight", gt=0),
        Attr("lowercase", "bool", False, "lowercase before scoring"),
    ), "Corpus chrF (sacrebleu), 0-100."),
    "rouge_l": Signature("rouge_l", (
        Attr("lowercase", "bool", True, "lowercase before tokenizing"),
    ), "Mean ROUGE-L F1 (longest common subsequence of word tokens), 0-1."),
    "reward": Signature("reward", (
        Attr("model", "model", REQUIRED, "a sequence-classification (reward) model"),
    ), "Mean reward-model score of prompt + generation.", positional=("model",)),
    "win_rate": Signature("win_rate", (
        Attr("judge", "model", REQUIRED, "the reward model that judges each pair"),
        Attr("against", "model", REQUIRED, "the model every other model is compared with"),
    ), "Share of rows where this model's generation scores higher than `against`'s "
       "under the judge (ties count half; `against` itself scores 0.5)."),
    "py": Signature("py", (
        Attr("file", "path", REQUIRED, "a Python file, relative to the .ft file (its content enters the key)"),
        Attr("function", "str", REQUIRED, "fn(predictions, references, prompts) -> float"),
    ), "A custom metric: a Python function over the generations. Its value is named after "
       "the function (`assert sft.my_metric > 0.5`).", positional=("file", "function")),
}

# Metrics that need the models' generations (the rest read only the logits).
GENERATIVE = frozenset(METRICS) - {"loss", "perplexity"}


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


EVAL_SPEC = StepSpec(
    kind="eval", version=2, output="metrics", run="ftlang.stdlib.evaluate:run",
    signature=Signature("eval", (
        Attr("models", "list[model]", REQUIRED, "models to compare side by side"),
        Attr("data", "dataset", REQUIRED, "held-out rows with prompt and completion; `assert` lines "
             "read the metrics measured on it"),
        Attr("extra_data", "list[dataset]", None, "more datasets measured the same way (a general "
             "held-out set for a forgetting check); tables show model x dataset"),
        Attr("metrics", "list[call[metric]]", ["loss", "perplexity", "exact_match"], "what to measure"),
        Attr("template", "template", None, "overrides each model's own training template"),
        Attr("prompt_field", "str", "prompt", "column holding the prompt"),
        Attr("completion_field", "str", "completion", "column holding the reference"),
        Attr("max_new_tokens", "int", 32, "generation budget per row", ge=1),
        Attr("do_sample", "bool", False, "sample instead of greedy decoding"),
        Attr("temperature", "float", 1.0, "sampling temperature (do_sample = true)", gt=0),
        Attr("top_p", "float", 1.0, "nucleus sampling mass (do_sample = true)", gt=0, le=1),
        Attr("seed", "int", 0, "sampling seed: the same seed gives the same generations"),
        Attr("limit", "int", None, "evaluate at most this many rows per dataset", ge=1),
        Attr("samples", "int", 20, "rows per dataset written to samples.jsonl for the report", ge=0),
        Attr("batch_size", "int", 16, "examples per forward pass", ge=1, semantic=False),
    ), "Measure models on held-out data; `assert` lines gate the run."),
    statements=("assert",),
)
