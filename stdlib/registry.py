"""Every block kind and call family the language knows, as declarations.

The compiler checks `.ft` files against these; the runtime imports `StepSpec.run`
only when a node executes. Keep this module free of heavy imports.
"""

from __future__ import annotations

from ftlang.stdlib.evaluate_spec import EVAL_SPEC, METRICS
from ftlang.stdlib.spec import REQUIRED, Attr, Signature, StepSpec

# ---- call families: values written as `name(args)` or a bare `name` ----------

SOURCES = {
    "jsonl": Signature("jsonl", (Attr("path", "path", REQUIRED, "a JSON Lines file, one object per line"),),
                       "Rows from a local JSON Lines file.", positional=("path",)),
    "csv": Signature("csv", (Attr("path", "path", REQUIRED, "a CSV file with a header row"),
                             Attr("delimiter", "str", ",", "the field separator")),
                     "Rows from a local CSV file.", positional=("path",)),
    "parquet": Signature("parquet", (Attr("path", "path", REQUIRED, "a Parquet file"),),
                         "Rows from a local Parquet file.", positional=("path",)),
}

METHODS = {
    "full": Signature("full", (), "Full fine-tuning: every weight trains."),
    "lora": Signature("lora", (
        Attr("r", "int", 16, "rank of the update", ge=1),
        Attr("alpha", "int", None, "scaling numerator; default 2 * r", ge=1),
        Attr("dropout", "float", 0.05, "dropout on the adapter input", ge=0, le=0.99),
        Attr("target_modules", "any", "all-linear", 'module names, or "all-linear"'),
        Attr("bias", "enum", "none", "which biases train", choices=("none", "all", "lora_only")),
        Attr("rslora", "bool", False, "rank-stabilised scaling alpha / sqrt(r)"),
        Attr("dora", "bool", False, "weight-decomposed LoRA (DoRA)"),
    ), "Low-rank adapters (LoRA) on the chosen modules.", positional=("r",)),
}

INITS = {
    "tiny": Signature("tiny", (
        Attr("arch", "enum", "llama", "architecture", choices=("llama",)),
        Attr("hidden", "int", 64, "hidden size", ge=8),
        Attr("layers", "int", 2, "number of decoder layers", ge=1),
        Attr("heads", "int", 4, "attention heads", ge=1),
        Attr("intermediate", "int", None, "MLP size; default 4 * hidden", ge=8),
        Attr("vocab", "int", 1024, "BPE vocabulary size", ge=64),
        Attr("context", "int", 256, "maximum positions", ge=16),
        Attr("data", "dataset", REQUIRED, "the dataset the BPE tokenizer is trained on"),
        Attr("seed", "int", 0, "weight initialisation seed"),
    ), "A small randomly initialised model with a BPE tokenizer trained in-process."),
}


TEMPLATES = {
    "chatml": Signature("chatml", (Attr("system", "str", "", "system message"),),
                        "ChatML: <|im_start|>role ... <|im_end|>."),
    "plain": Signature("plain", (Attr("separator", "str", "\n", "text between prompt and completion"),),
                       "Prompt, separator, completion."),
}

CALLS: dict[str, dict[str, Signature]] = {
    "source": SOURCES,
    "method": METHODS,
    "init": INITS,
    "metric": METRICS,
    "template": TEMPLATES,
}

# ---- block kinds -------------------------------------------------------------

_TRAIN_COMMON = (
    Attr("lr", "float", None, "peak learning rate; default 2e-4 for lora, 5e-5 for full", gt=0),
    Attr("epochs", "float", 1.0, "passes over the data", gt=0),
    Attr("max_steps", "int", -1, "stop after this many optimiser steps (-1: use epochs)", ge=-1),
    Attr("batch_size", "int", 8, "examples per device step", ge=1),
    Attr("grad_accum", "int", 1, "gradient accumulation steps", ge=1),
    Attr("max_length", "int", 512, "tokens per example; longer ones are truncated", ge=8),
    Attr("warmup", "float", 0.0, "warmup: a ratio when < 1, else a step count", ge=0),
    Attr("scheduler", "enum", "linear", "learning-rate schedule", choices=("linear", "cosine", "constant")),
    Attr("weight_decay", "float", 0.0, "AdamW weight decay", ge=0),
    Attr("max_grad_norm", "float", 1.0, "gradient clipping norm", gt=0),
    Attr("seed", "int", 0, "seed for data order, dropout and initialisation"),
    Attr("logging_steps", "int", 10, "log the loss every N steps", ge=1, semantic=False),
)

STEPS: dict[str, StepSpec] = {
    "dataset": StepSpec(
        kind="dataset", version=1, output="dataset", run="ftlang.stdlib.dataset:run",
        signature=Signature("dataset", (
            Attr("source", "call[source]", REQUIRED, "where the rows come from: jsonl(...), csv(...), parquet(...)"),
        ), "Rows read from a local file, checked against an optional schema."),
        subblocks={"schema": Signature("schema", (), "column: type pairs (str, int, float, bool)")},
    ),
    "curate": StepSpec(
        kind="curate", version=1, output="dataset", run="ftlang.stdlib.curate:run",
        signature=Signature("curate", (
            Attr("from", "list[dataset]", None, "the datasets the query reads, each a table named after "
                 "its block; default: the tables the query names"),
        ), "A DuckDB SQL query over datasets, optionally split into named parts."),
        subblocks={"split": Signature("split", (
            Attr("by", "ident", REQUIRED, "the column whose hash decides the part"),
            Attr("seed", "int", 0, "changes the assignment"),
        ), "name = fraction pairs summing to 1, plus `by` and `seed`")},
        statements=("sql",),
    ),
    "template": StepSpec(
        kind="template", version=1, output="template", run="ftlang.stdlib.template:run",
        signature=Signature("template", (
            Attr("style", "enum", REQUIRED, "the template family", choices=tuple(TEMPLATES)),
            Attr("system", "str", "", "system message (chatml)"),
            Attr("separator", "str", "\n", "text between prompt and completion (plain)"),
        ), "How a prompt and its completion become one training text."),
    ),
    "model": StepSpec(
        kind="model", version=1, output="model", run="ftlang.stdlib.model:run",
        signature=Signature("model", (
            Attr("path", "path", None, "a local Hugging Face model folder"),
            Attr("hub", "str", None, "a hub model id such as org/name"),
            Attr("revision", "str", None, "the hub commit to pin"),
            Attr("init", "call[init]", None, "a model built in-process: tiny(...)"),
        ), "A base model: a local folder, a pinned hub model, or one built in-process."),
    ),
    "train": StepSpec(
        kind="train", version=1, output="model", run="ftlang.stdlib.train:run", trains=True,
        signature=Signature("train", (
            Attr("from", "model", REQUIRED, "the model to start from"),
            Attr("data", "dataset", REQUIRED, "training rows"),
            Attr("method", "call[method]", "full", "full, or lora(...)"),
            Attr("objective", "enum", "sft", "sft: prompt/completion, loss on the completion; clm: raw text",
                 choices=("sft", "clm")),
            Attr("template", "template", None, "how prompt and completion are joined (sft)"),
            Attr("prompt_field", "str", "prompt", "column holding the prompt (sft)"),
            Attr("completion_field", "str", "completion", "column holding the completion (sft)"),
            Attr("text_field", "str", "text", "column holding the text (clm)"),
            *_TRAIN_COMMON,
        ), "Fine-tune a model on a dataset."),
    ),
    "eval": EVAL_SPEC,
    "export": StepSpec(
        kind="export", version=1, output="model", run="ftlang.stdlib.export:run",
        signature=Signature("export", (
            Attr("model", "model", REQUIRED, "the model to export"),
            Attr("merge", "bool", True, "merge adapters into the base weights"),
            Attr("to", "outpath", REQUIRED, "folder the safetensors model is copied to", semantic=False),
        ), "A self-contained safetensors model folder that transformers loads."),
    ),
}

# What a reference of each expected kind may point at.
PRODUCES = {kind: spec.output for kind, spec in STEPS.items()}
