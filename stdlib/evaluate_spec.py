"""Declarations of the `eval` step and the metric family (the compiler reads these)."""

from __future__ import annotations

from ftlang.stdlib.spec import REQUIRED, Attr, Signature, StepSpec

METRICS = {
    "loss": Signature("loss", (), "Mean cross-entropy over completion tokens."),
    "perplexity": Signature("perplexity", (), "exp(loss)."),
    "exact_match": Signature("exact_match", (
        Attr("normalize", "bool", True, "strip whitespace and compare case-insensitively"),
    ), "Share of greedy generations equal to the reference completion."),
}

EVAL_SPEC = StepSpec(
    kind="eval", version=1, output="metrics", run="ftlang.stdlib.evaluate:run",
    signature=Signature("eval", (
        Attr("models", "list[model]", REQUIRED, "models to compare side by side"),
        Attr("data", "dataset", REQUIRED, "held-out rows with prompt and completion"),
        Attr("metrics", "list[call[metric]]", ["loss", "perplexity", "exact_match"], "what to measure"),
        Attr("template", "template", None, "overrides each model's own training template"),
        Attr("prompt_field", "str", "prompt", "column holding the prompt"),
        Attr("completion_field", "str", "completion", "column holding the reference"),
        Attr("max_new_tokens", "int", 32, "generation budget for exact match", ge=1),
        Attr("limit", "int", None, "evaluate at most this many rows", ge=1),
        Attr("batch_size", "int", 16, "examples per forward pass", ge=1, semantic=False),
    ), "Measure models on held-out data; `assert` lines gate the run."),
    statements=("assert",),
)
