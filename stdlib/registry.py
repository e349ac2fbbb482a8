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
    "hf_disk": Signature("hf_disk", (
        Attr("path", "path", REQUIRED, "a folder written by datasets' save_to_disk (its files' content enters the key)"),
        Attr("split", "str", None, "the split to read when the folder holds a DatasetDict"),
    ), "Rows from a saved Hugging Face dataset folder (datasets.load_from_disk).", positional=("path",)),
    "hub": Signature("hub", (
        Attr("name", "str", REQUIRED, "a hub dataset id such as org/name"),
        Attr("revision", "str", REQUIRED, "the dataset commit to pin: the key sees only this"),
        Attr("split", "str", "train", "the split to read"),
        Attr("config", "str", None, "the dataset configuration (subset) name"),
    ), "Rows from a hub dataset pinned to a revision. Offline (HF_HUB_OFFLINE=1, or no "
       "network) it fails at once with a clear message.", positional=("name",)),
}

# Which weights train. `adapter` below takes one of these; the preference and RL
# methods further down carry their objective and train through an adapter.
_ADAPTER = Attr("adapter", "call[method]", "full",
                "which weights train: full, lora(...) (qlora too), ia3(...), prompt_tuning(...), prefix_tuning(...)")
# Sanity bounds (checks, not semantics): values beyond them cannot run to the end.
_STEPS = 10**9  # optimiser steps, step intervals
_COUNT = 65536  # examples per batch, ranks, virtual tokens, samples per prompt
_TOKENS = 1_000_000  # tokens per example or completion
_SEED = 2**32 - 1  # numpy's seed range (transformers' set_seed seeds numpy too)
_GEN = (
    Attr("generations", "int", 4, "completions sampled per prompt", ge=2, le=_COUNT),
    Attr("max_new_tokens", "int", 16, "generation budget per completion", ge=1, le=_TOKENS),
    Attr("temperature", "float", 1.0, "sampling temperature", gt=0),
)
_REWARD = Attr("reward", "list[call[reward]]", REQUIRED,
               'py("rewards.py", "fn") functions and/or rm(model) reward models; their scores add up')

METHODS = {
    "full": Signature("full", (), "Full fine-tuning: every weight trains."),
    "lora": Signature("lora", (
        Attr("r", "int", 16, "rank of the update", ge=1, le=_COUNT),
        Attr("alpha", "int", None, "scaling numerator; default 2 * r", ge=1, le=2 * _COUNT),
        Attr("dropout", "float", 0.05, "dropout on the adapter input", ge=0, le=0.99),
        Attr("target_modules", "any", "all-linear", 'module names, or "all-linear"'),
        Attr("bias", "enum", "none", "which biases train", choices=("none", "all", "lora_only")),
        Attr("rslora", "bool", False, "rank-stabilised scaling alpha / sqrt(r)"),
        Attr("dora", "bool", False, "weight-decomposed LoRA (DoRA)"),
        Attr("quant", "enum", "none", "quantise the frozen base (QLoRA): nf4 or fp4 (4-bit), int8 (8-bit); "
             "bitsandbytes", choices=("none", "nf4", "fp4", "int8")),
        Attr("double_quant", "bool", False, "4-bit only: quantise the quantisation constants too"),
    ), "Low-rank adapters (LoRA) on the chosen modules; with `quant`, QLoRA over a 4- or "
       "8-bit base.", positional=("r",)),
    "ia3": Signature("ia3", (
        Attr("target_modules", "any", None, "modules whose activations are rescaled; default: "
             "peft's choice for the architecture (k, v and down projections for Llama)"),
        Attr("feedforward_modules", "any", None, "the subset of target_modules that are feed-forward "
             "layers (scaled at their input)"),
    ), "IA3: learned vectors that rescale keys, values and feed-forward activations."),
    "prompt_tuning": Signature("prompt_tuning", (
        Attr("tokens", "int", 16, "virtual tokens prepended to every input", ge=1, le=_COUNT),
        Attr("init_text", "str", "", "initialise the virtual tokens from this text's embeddings "
             "(empty: random)"),
    ), "Prompt tuning: only a few soft prompt embeddings train.", positional=("tokens",)),
    "prefix_tuning": Signature("prefix_tuning", (
        Attr("tokens", "int", 16, "virtual key/value positions per layer", ge=1, le=_COUNT),
        Attr("projection", "bool", False, "reparameterise the prefix through an MLP"),
    ), "Prefix tuning: trained key/value prefixes in every attention layer.", positional=("tokens",)),
    # ---- preference optimisation: data with prompt, chosen, rejected (KTO: prompt, completion, label)
    "dpo": Signature("dpo", (
        Attr("beta", "float", 0.1, "strength of the KL penalty to the reference model", gt=0),
        Attr("loss", "enum", "sigmoid", "trl's DPO loss variant",
             choices=("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair",
                      "sppo_hard", "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop",
                      "sigmoid_norm")),
        Attr("label_smoothing", "float", 0.0, "conservative DPO / robust: assumed label noise", ge=0, le=0.5),
        _ADAPTER,
    ), "Direct preference optimisation on prompt/chosen/rejected rows. The reference model "
       "is the `from` model, adapters merged.", positional=("beta",)),
    "orpo": Signature("orpo", (
        Attr("beta", "float", 0.1, "weight of the odds-ratio term (lambda in the paper)", gt=0),
        _ADAPTER,
    ), "ORPO: SFT and preference in one loss, no reference model (trl.experimental.orpo).",
        positional=("beta",)),
    "kto": Signature("kto", (
        Attr("beta", "float", 0.1, "strength of the KL penalty to the reference model", gt=0),
        Attr("desirable_weight", "float", 1.0, "loss weight of rows labelled true", gt=0),
        Attr("undesirable_weight", "float", 1.0, "loss weight of rows labelled false", gt=0),
        _ADAPTER,
    ), "KTO on unpaired rows: prompt, completion and a boolean label.", positional=("beta",)),
    "reward_model": Signature("reward_model", (
        Attr("center", "float", 0.0, "penalty that keeps rewards centred on 0 (trl center_rewards_coefficient)", ge=0),
        _ADAPTER,
    ), "A reward model: a sequence-classification head trained on prompt/chosen/rejected "
       "rows (Bradley-Terry). Use it in rm(...) for RL, or in the reward metric."),
    # ---- online RL: data with a prompt column; rewards from Python or a reward model
    "grpo": Signature("grpo", (
        _REWARD, *_GEN,
        Attr("beta", "float", 0.0, "KL penalty to the reference model (0: no reference model)", ge=0),
        Attr("loss", "enum", "dapo", "trl's GRPO loss normalisation",
             choices=("grpo", "bnpo", "dr_grpo", "dapo")),
        _ADAPTER,
    ), "Group relative policy optimisation: sample a group per prompt, reward each "
       "completion, push towards the better ones."),
    "rloo": Signature("rloo", (
        _REWARD, *_GEN,
        Attr("beta", "float", 0.05, "KL penalty to the reference model", ge=0),
        _ADAPTER,
    ), "REINFORCE leave-one-out: the RLHF step after a reward model (trl 1.16 has no PPO)."),
    "online_dpo": Signature("online_dpo", (
        _REWARD,
        Attr("beta", "float", 0.1, "strength of the KL penalty to the reference model", gt=0),
        Attr("loss", "enum", "sigmoid", "DPO loss on the judged pairs", choices=("sigmoid", "ipo")),
        Attr("max_new_tokens", "int", 16, "generation budget per completion", ge=1, le=_TOKENS),
        Attr("temperature", "float", 0.9, "sampling temperature", gt=0),
        _ADAPTER,
    ), "Online DPO: two completions per prompt, the reward picks chosen and rejected "
       "(trl.experimental.online_dpo)."),
}

# Methods whose training objective is their own; the rest are `adapter` kinds for sft/clm/chat.
ADAPTERS = ("full", "lora", "ia3", "prompt_tuning", "prefix_tuning")
PREFERENCE = ("dpo", "orpo", "kto", "reward_model")
ONLINE = ("grpo", "rloo", "online_dpo")

# Method-appropriate peak learning rates (docs/methods.md explains each).
DEFAULT_LR = {"full": 5e-5, "lora": 2e-4, "ia3": 3e-3, "prompt_tuning": 3e-2, "prefix_tuning": 1e-2,
              "dpo": 5e-7, "orpo": 8e-6, "kto": 5e-7, "reward_model": 1e-5, "grpo": 1e-6,
              "rloo": 1e-6, "online_dpo": 5e-7}
# With an adapter, preference and RL methods take the adapter's scale of learning rate.
DEFAULT_LR_ADAPTER = {"dpo": 5e-6, "orpo": 8e-5, "kto": 5e-6, "reward_model": 1e-4, "grpo": 1e-5,
                      "rloo": 1e-5, "online_dpo": 5e-6}

REWARDS = {
    "py": Signature("py", (
        Attr("file", "path", REQUIRED, "a Python file, relative to the .ft file (its content enters the key)"),
        Attr("function", "str", REQUIRED, "fn(prompts, completions, **columns) -> list[float]"),
    ), "A reward computed by a Python function; extra dataset columns arrive as keyword "
       "arguments (`answer=[...]`).", positional=("file", "function")),
    "rm": Signature("rm", (
        Attr("model", "model", REQUIRED, "a model trained with method = reward_model(...)"),
    ), "The score of a reward model trained in this file.", positional=("model",)),
}

MERGES = {
    "linear": Signature("linear", (), "Weighted average of the models' weights."),
    "ties": Signature("ties", (
        Attr("density", "float", 0.5, "share of each task vector's largest entries kept", gt=0, le=1),
    ), "TIES: trim each task vector (model - base) to its largest entries, elect a sign per "
       "weight, average the agreeing entries.", positional=("density",)),
    "dare_ties": Signature("dare_ties", (
        Attr("density", "float", 0.5, "share of each task vector's entries kept (random, rescaled)", gt=0, le=1),
        Attr("seed", "int", 0, "seed of the random drop"),
    ), "DARE + TIES: drop task-vector entries at random and rescale, then TIES sign election.",
        positional=("density",)),
    "dare_linear": Signature("dare_linear", (
        Attr("density", "float", 0.5, "share of each task vector's entries kept (random, rescaled)", gt=0, le=1),
        Attr("seed", "int", 0, "seed of the random drop"),
    ), "DARE: drop task-vector entries at random, rescale, add the weighted sum to the base.",
        positional=("density",)),
    "svd": Signature("svd", (
        Attr("rank", "int", 16, "rank each merged weight update is truncated to", ge=1),
    ), "The weighted sum of task vectors, each matrix truncated to its top singular "
       "directions.", positional=("rank",)),
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
    "reward": REWARDS,
    "merge": MERGES,
}

# ---- block kinds -------------------------------------------------------------

_TRAIN_COMMON = (
    Attr("lr", "float", None, "peak learning rate; default by method: lora 2e-4, full 5e-5, dpo 5e-7 "
         "(5e-6 with an adapter), ... (docs/methods.md)", gt=0, warn_above=1.0),
    Attr("epochs", "float", 1.0, "passes over the data", gt=0, le=10_000),
    Attr("max_steps", "int", -1, "stop after this many optimiser steps (-1: use epochs)", ge=-1, le=_STEPS),
    Attr("batch_size", "int", 8, "examples per device step", ge=1, le=_COUNT),
    Attr("grad_accum", "int", 1, "gradient accumulation steps", ge=1, le=_COUNT),
    Attr("max_length", "int", 512, "tokens per example (prompt + completion)", ge=8, le=_TOKENS),
    Attr("truncation", "enum", "keep_start", "an example over max_length: keep_start cuts its end, "
         "keep_end cuts the prompt's start, drop skips it", choices=("keep_start", "keep_end", "drop")),
    Attr("packing", "bool", False, "pack several examples into each max_length row (sequences stay "
         "isolated: each attends only to itself)"),
    Attr("warmup", "float", 0.0, "warmup: a ratio when < 1, else a step count", ge=0, le=_STEPS),
    Attr("scheduler", "enum", "linear", "learning-rate schedule", choices=("linear", "cosine", "constant")),
    Attr("optimizer", "enum", "adamw", "adamw, sgd, or adamw_8bit (bitsandbytes, CUDA only)",
         choices=("adamw", "sgd", "adamw_8bit")),
    Attr("weight_decay", "float", 0.0, "weight decay", ge=0),
    Attr("max_grad_norm", "float", 1.0, "gradient clipping norm", gt=0),
    Attr("seed", "int", 0, "seed for data order, dropout and initialisation", ge=0, le=_SEED),
    Attr("shuffle", "bool", True, "shuffle the rows each epoch; false trains in dataset order "
         "(curriculum: a curate ORDER BY)"),
    Attr("precision", "enum", "auto", "auto: bf16 on a GPU that supports it, else fp32",
         choices=("auto", "fp32", "bf16", "fp16")),
    Attr("gradient_checkpointing", "bool", False, "recompute activations in the backward pass "
         "(less memory, ~30% slower)"),
    Attr("device", "enum", "auto", "auto picks cuda, then mps, then cpu", choices=("auto", "cuda", "mps", "cpu")),
    Attr("eval_data", "dataset", None, "validation rows: their loss is logged every eval_steps"),
    Attr("eval_steps", "int", 50, "measure the validation loss every N steps", ge=1, le=_STEPS),
    Attr("patience", "int", None, "stop after this many validations without a better loss; the "
         "best checkpoint is kept (needs eval_data)", ge=1, le=_STEPS),
    Attr("save_steps", "int", None, "write a checkpoint every N steps; a rerun with the same key "
         "resumes from the last one", ge=1, le=_STEPS, semantic=False),
    Attr("save_limit", "int", 2, "checkpoints kept", ge=1, le=_STEPS, semantic=False),
    Attr("report_to", "list[enum]", [], "trackers, writing under .ft/cache/runs/<node>: tensorboard, "
         "mlflow (a file store), wandb (offline mode)", choices=("tensorboard", "mlflow", "wandb"),
         semantic=False),
    Attr("logging_steps", "int", 10, "log the loss every N steps", ge=1, le=_STEPS, semantic=False),
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
            Attr("deterministic", "bool", True, "false allows the clock, unseeded random() and DuckDB's "
                 "own state in the query (refused otherwise); the block then reruns on every run: a "
                 "per-run nonce replaces this flag in its cache key"),
        ), "A DuckDB SQL query over datasets, optionally split into named parts. The output must "
           "be a function of the input rows: no SET, PRAGMA, ATTACH, CALL, file reads; random() "
           "only after a `SELECT setseed(x);` statement."),
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
        kind="model", version=2, output="model", run="ftlang.stdlib.model:run",
        signature=Signature("model", (
            Attr("path", "path", None, "a local Hugging Face model folder"),
            Attr("hub", "str", None, "a hub model id such as org/name"),
            Attr("revision", "str", None, "the hub commit to pin"),
            Attr("init", "call[init]", None, "a model built in-process: tiny(...)"),
            Attr("gguf", "path", None, "a GGUF file (llama.cpp): dequantised once to fp32 and cached"),
        ), "A base model: a local folder, a pinned hub model, a GGUF file, or one built in-process."),
    ),
    "train": StepSpec(
        kind="train", version=2, output="model", run="ftlang.stdlib.train:run", trains=True,
        signature=Signature("train", (
            Attr("from", "model", REQUIRED, "the model to start from"),
            Attr("data", "dataset", REQUIRED, "training rows"),
            Attr("method", "call[method]", "full", "full, lora(...), ia3(...), prompt_tuning(...), "
                 "prefix_tuning(...); or a preference/RL method: dpo(...), orpo(...), kto(...), "
                 "reward_model(...), grpo(...), rloo(...), online_dpo(...)"),
            Attr("objective", "enum", "sft", "for full and adapter methods: sft (prompt/completion, "
                 "loss on the completion), chat (a messages column, loss on assistant turns), "
                 "clm (raw text)", choices=("sft", "chat", "clm")),
            Attr("template", "template", None, "how prompt and completion are joined (sft, chat)"),
            Attr("prompt_field", "str", "prompt", "column holding the prompt (sft)"),
            Attr("completion_field", "str", "completion", "column holding the completion (sft)"),
            Attr("messages_field", "str", "messages", "column holding [{role, content}, ...] (chat)"),
            Attr("text_field", "str", "text", "column holding the text (clm)"),
            *_TRAIN_COMMON,
        ), "Fine-tune a model on a dataset."),
    ),
    "eval": EVAL_SPEC,
    "merge": StepSpec(
        kind="merge", version=1, output="model", run="ftlang.stdlib.merge:run",
        signature=Signature("merge", (
            Attr("models", "list[model]", REQUIRED, "the models (or adapters) to combine"),
            Attr("method", "call[merge]", "linear", "linear, ties(...), dare_ties(...), dare_linear(...), svd(...)"),
            Attr("weights", "list[float]", None, "one weight per model; default equal weights summing to 1"),
            Attr("base", "model", None, "the model task vectors are measured from (ties, dare, svd); "
                 "default: the common base of adapter models"),
        ), "Combine models into one full model (task arithmetic on their weights); evaluate, "
           "train or export it like any model."),
    ),
    "export": StepSpec(
        kind="export", version=1, output="model", run="ftlang.stdlib.export:run",
        signature=Signature("export", (
            Attr("model", "model", REQUIRED, "the model to export"),
            Attr("merge", "bool", True, "merge adapters into the base weights"),
            Attr("to", "outpath", REQUIRED, "folder the safetensors model is copied to; ftlang replaces it "
                 "only if it published it and it is unchanged since", semantic=False),
            Attr("allow_outside", "bool", False, "allow a `to` outside the project folder", semantic=False),
        ), "A self-contained safetensors model folder that transformers loads."),
    ),
}

# What a reference of each expected kind may point at.
PRODUCES = {kind: spec.output for kind, spec in STEPS.items()}
