"""Which weights train, and the model they train on.

In:  a method call (full, lora(...) with or without quant, ia3(...), prompt_tuning(...),
     prefix_tuning(...), or a preference/RL method carrying one in `adapter`), and the
     model artifact to start from.
Out: the loaded base model (adapters below it merged; 4- or 8-bit for lora(quant = ...);
     a one-logit classification head for reward models), then the same model with the
     adapter attached (`apply_adapter`), ready for a Trainer.

Call arguments are complete (the compiler fills every declared default), so they are read
as `a["r"]`, never with a second copy of the default.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ftlang.lang.diagnostics import Diagnostic
from ftlang.stdlib import modelio
from ftlang.stdlib.spec import (
    COUNT_LIMIT,
    Artifact,
    Attr,
    BlockView,
    Call,
    Method,
    Signature,
    StepError,
    error,
    points,
    warning,
)

# ---- declarations: the adapter methods (the compiler reads these) ----------------------------

ALL_LINEAR = "all-linear"  # peft's name for every linear layer but the output head


def _modules_rule(*args: str, none_ok: bool) -> Any:
    """A rule: each of `args` is "all-linear" or a non-empty list of module names (None
    too when `none_ok`: peft's choice for the architecture)."""
    def rule(call: Call, b: BlockView) -> list[Diagnostic]:
        out = []
        for arg in args:
            for v in points(call.args.get(arg)):
                problem = _modules_problem(v, none_ok)
                if problem is not None:
                    out.append(error("FT0106", f"`{call.name}(...)`: `{arg}` {problem}", b.at("method"),
                                     f"{arg} = {v!r}" if not isinstance(v, str) else f'{arg} = "{v}"',
                                     help=f'write {arg} = "{ALL_LINEAR}" (every linear layer but the output '
                                          f'head) or a list of module names, e.g. {arg} = ["q_proj", "v_proj"]'))
        return out
    return rule


def _modules_problem(v: Any, none_ok: bool) -> str | None:
    if v is None:
        return None if none_ok else f'must be "{ALL_LINEAR}" or a list of module names'
    if isinstance(v, str):
        return None if v == ALL_LINEAR else f'takes the string "{ALL_LINEAR}" only, not "{v}"'
    if isinstance(v, list):
        if not v:
            return "names no module"
        bad = next((x for x in v if not isinstance(x, str)), None)
        return None if bad is None else f"is a list of module names (strings), found {bad!r}"
    if isinstance(v, (bool, int, float, dict)):
        return f'is a list of module names or "{ALL_LINEAR}", found {v!r}'
    return None  # from env(...) and the like: checked when the adapter is built


def _lora_rules(call: Call, b: BlockView) -> list[Diagnostic]:
    out = _modules_rule("target_modules", none_ok=False)(call, b)
    out += _modules_rule("modules_to_save", none_ok=True)(call, b)
    if call.args.get("double_quant") is True and call.args.get("quant") in ("none", "int8"):
        out.append(warning("FT0114", "double_quant applies to 4-bit quantisation only", b.at("method"),
                           "no effect", help='use quant = "nf4" (or "fp4") with double_quant = true'))
    if call.args.get("quant") not in (None, "none") and b.params.get("device") == "mps":
        # bitsandbytes has no MPS kernels: its weights would sit on the CPU while the Trainer
        # moves everything else to mps.
        out.append(error("FT0114", "quantised LoRA does not run on mps", b.at("method"),
                         f'quant = "{call.args.get("quant")}" with device = mps',
                         help='bitsandbytes runs on CUDA and the CPU: use device = cpu, or quant = "none"'))
    return out


_VIRTUAL = {"packing": "virtual tokens belong to one sequence: packed rows would share them"}

ADAPTER_METHODS = (
    Method(Signature("full", (), "Full fine-tuning: every weight trains."),
           family="adapter", run="ftlang.stdlib.train:supervised", lr=5e-5),
    Method(Signature("lora", (
        Attr("r", "int", 16, "rank of the update", ge=1, le=COUNT_LIMIT),
        Attr("alpha", "int", None, "scaling numerator; default 2 * r", ge=1, le=2 * COUNT_LIMIT),
        Attr("dropout", "float", 0.05, "dropout on the adapter input", ge=0, le=0.99),
        Attr("target_modules", "any", ALL_LINEAR, 'module names, or "all-linear"'),
        Attr("bias", "enum", "none", "which biases train", choices=("none", "all", "lora_only")),
        Attr("rslora", "bool", False, "rank-stabilised scaling alpha / sqrt(r)"),
        Attr("dora", "bool", False, "weight-decomposed LoRA (DoRA)"),
        Attr("quant", "enum", "none", "quantise the frozen base (QLoRA): nf4 or fp4 (4-bit), int8 (8-bit); "
             "bitsandbytes", choices=("none", "nf4", "fp4", "int8")),
        Attr("double_quant", "bool", False, "4-bit only: quantise the quantisation constants too"),
        Attr("modules_to_save", "any", None, 'modules trained in full and saved with the adapter, e.g. '
             '["embed_tokens", "lm_head"] (new tokens, a new head); default: none'),
    ), "Low-rank adapters (LoRA) on the chosen modules; with `quant`, QLoRA over a 4- or "
       "8-bit base.", positional=("r",)),
           family="adapter", run="ftlang.stdlib.train:supervised", lr=2e-4, rules=_lora_rules),
    Method(Signature("ia3", (
        Attr("target_modules", "any", None, "modules whose activations are rescaled; default: "
             "peft's choice for the architecture (k, v and down projections for Llama)"),
        Attr("feedforward_modules", "any", None, "the subset of target_modules that are feed-forward "
             "layers (scaled at their input)"),
    ), "IA3: learned vectors that rescale keys, values and feed-forward activations."),
           family="adapter", run="ftlang.stdlib.train:supervised", lr=3e-3,
           rules=_modules_rule("target_modules", "feedforward_modules", none_ok=True)),
    Method(Signature("prompt_tuning", (
        Attr("tokens", "int", 16, "virtual tokens prepended to every input", ge=1, le=COUNT_LIMIT),
        Attr("init_text", "str", "", "initialise the virtual tokens from this text's embeddings "
             "(empty: random)"),
    ), "Prompt tuning: only a few soft prompt embeddings train.", positional=("tokens",)),
           family="adapter", run="ftlang.stdlib.train:supervised", lr=3e-2, unused=_VIRTUAL),
    Method(Signature("prefix_tuning", (
        Attr("tokens", "int", 16, "virtual key/value positions per layer", ge=1, le=COUNT_LIMIT),
        Attr("projection", "bool", False, "reparameterise the prefix through an MLP"),
    ), "Prefix tuning: trained key/value prefixes in every attention layer.", positional=("tokens",)),
           family="adapter", run="ftlang.stdlib.train:supervised", lr=1e-2, unused=_VIRTUAL),
)
ADAPTERS = tuple(m.name for m in ADAPTER_METHODS)

# The `adapter` argument of the preference and RL methods (preference.py, rl.py): which
# weights train under their objective.
ADAPTER_ARG = Attr("adapter", "call[method]", "full",
                   "which weights train: full, lora(...) (qlora too), ia3(...), prompt_tuning(...), prefix_tuning(...)")


# ---- building the model that trains ---------------------------------------------------------

def adapter_of(method: Call) -> Call:
    """What trains: the method itself (full, lora, ...) or a preference method's `adapter`."""
    if method.name in ADAPTERS:
        return method
    adapter: Call = method.args["adapter"]
    return adapter


def peft_config(adapter: Call, task_type: str = "CAUSAL_LM", tokenizer_dir: Path | None = None) -> Any:
    """The peft config of an adapter call; None for full fine-tuning."""
    a = adapter.args
    if adapter.name == "full":
        return None
    if adapter.name == "lora":
        from peft import LoraConfig

        r = int(a["r"])
        return LoraConfig(
            r=r, lora_alpha=2 * r if a["alpha"] is None else int(a["alpha"]),  # declared: None means 2 * r
            lora_dropout=float(a["dropout"]), target_modules=a["target_modules"], bias=a["bias"],
            use_rslora=bool(a["rslora"]), use_dora=bool(a["dora"]), task_type=task_type,
            modules_to_save=a["modules_to_save"])
    if adapter.name == "ia3":
        from peft import IA3Config

        return IA3Config(task_type=task_type, target_modules=a["target_modules"],
                         feedforward_modules=a["feedforward_modules"])
    if adapter.name == "prompt_tuning":
        from peft import PromptTuningConfig, PromptTuningInit

        text = a["init_text"]
        return PromptTuningConfig(
            task_type=task_type, num_virtual_tokens=int(a["tokens"]),
            prompt_tuning_init=PromptTuningInit.TEXT if text else PromptTuningInit.RANDOM,
            prompt_tuning_init_text=text or None,
            tokenizer_name_or_path=str(tokenizer_dir) if text and tokenizer_dir else None)
    if adapter.name == "prefix_tuning":
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=int(a["tokens"]),
                                  prefix_projection=bool(a["projection"]))
    raise StepError(f"{adapter.name}(...) is not an adapter", hint=f"use one of {', '.join(ADAPTERS)}")


def apply_adapter(lm: Any, adapter: Call, task_type: str = "CAUSAL_LM",
                  tokenizer_dir: Path | None = None) -> Any:
    """The model with the adapter attached (only its weights train), or every weight
    trainable for `full`."""
    config = peft_config(adapter, task_type, tokenizer_dir)
    if config is None:
        for param in lm.parameters():
            param.requires_grad_(True)
        return lm
    check_modules(lm, adapter)
    from peft import get_peft_model

    try:
        with modelio.quiet_peft():
            return get_peft_model(lm, config)
    except (ValueError, TypeError, KeyError) as e:  # e.g. target modules the model does not have
        raise StepError(f"{adapter.name}: {e}",
                        hint='target_modules = "all-linear" works for any model' if adapter.name == "lora"
                        else "set target_modules to module names the model has") from e


def linear_layers(lm: Any) -> list[str]:
    """The distinct names (last component) of the model's linear layers, lm_head included."""
    import torch

    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover
        Conv1D = torch.nn.Linear  # noqa: N806
    return sorted({name.rsplit(".", 1)[-1] for name, m in lm.named_modules()
                   if name and isinstance(m, (torch.nn.Linear, Conv1D))})


def check_modules(lm: Any, adapter: Call) -> None:
    """Every module a lora/ia3 call names by list must exist: peft trains the ones it finds
    and silently skips the rest when at least one matches."""
    for arg in ("target_modules", "feedforward_modules", "modules_to_save"):
        names = adapter.args.get(arg)
        if not isinstance(names, list):
            continue  # "all-linear", or None: peft's choice for the architecture
        modules = [n for n, _ in lm.named_modules() if n]
        missing = [t for t in names if not any(n == t or n.endswith("." + t) for n in modules)]
        if missing:
            layers = linear_layers(lm)
            raise StepError(f"{adapter.name}: the model has no module named {', '.join(repr(t) for t in missing)} "
                            f"({arg})",
                            hint=f"its linear layers are: {', '.join(layers)}; or target_modules = \"{ALL_LINEAR}\""
                            if layers else f'set {arg} to module names the model has')


def full_weights_folder(src: Artifact, cache: Path) -> Path:
    """A folder with the model's plain weights, for loaders that need one (quantisation,
    a classification head): the artifact itself, its link, or for an adapter the merged
    model, written once under cache/merged/<digest>."""
    meta = modelio.read_meta(src)
    if meta["type"] != "adapter":
        return modelio.weights_folder(src)
    folder = cache / "merged" / src.digest
    if not (folder / "config.json").is_file():
        lm = modelio.load_model(src, merged=True)
        if not modelio.is_plain(lm):
            raise StepError("a prompt- or prefix-tuned model cannot be merged into plain weights",
                            hint="train from its base model instead")
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        modelio.save_full(lm, modelio.load_tokenizer(src), tmp, template=None)
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    return folder


def _bnb_config(quant: str, double: bool, device: str, storage: str | None = None) -> Any:
    """`storage`: bnb_4bit_quant_storage ("bfloat16" ...) for FSDP, which shards float tensors only."""
    import torch
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise StepError("quantised training needs bitsandbytes", hint="pip install bitsandbytes==0.50.2") from e
    if quant == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant, bnb_4bit_use_double_quant=double,
                              bnb_4bit_compute_dtype=compute,
                              bnb_4bit_quant_storage=getattr(torch, storage) if storage else torch.uint8)


def keep_cpu_4bit_gradients(lm: Any) -> int:
    """bitsandbytes 0.50.2 on CPU repacks Linear4bit weights for inference at the first
    eval-mode forward without grad, and from then on drops input gradients silently
    (STACK.md). Turning the repack off keeps QLoRA training correct. Returns the count."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    n = 0
    for m in lm.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False
            n += 1
    return n


def load_base(src: Artifact, adapter: Call, device: str, cache: Path, *, head: str = "causal",
              gradient_checkpointing: bool = False, quant_storage: str | None = None) -> Any:
    """The model to train from: adapters below merged; quantised for lora(quant = ...);
    with a one-logit classification head for head = "reward"."""
    import torch

    quant = adapter.args["quant"] if adapter.name == "lora" else "none"
    if modelio.is_classifier(src):
        raise StepError(f"{src.node} is a reward model (a sequence classifier), not a language model",
                        hint="train from the model the reward model was trained from")
    if head == "reward" and quant != "none":
        raise StepError("reward_model trains without quantisation (its head is saved as full weights)",
                        hint="use adapter = lora(...) without quant")
    if head == "causal" and quant == "none":
        lm = modelio.load_model(src, merged=True)
        if not modelio.is_plain(lm):
            raise StepError("cannot train on top of a prompt- or prefix-tuned model",
                            hint="train from its base model, or export it with merge = false")
        return lm
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    modelio.quiet()
    folder = full_weights_folder(src, cache)
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if quant != "none":
        kwargs["quantization_config"] = _bnb_config(quant, bool(adapter.args["double_quant"]), device,
                                                    quant_storage)
        kwargs["device_map"] = {"": 0} if device == "cuda" else {"": "cpu"}
    if head == "reward":
        tok = modelio.load_tokenizer(src)
        kwargs.update(num_labels=1, pad_token_id=tok.pad_token_id)
        cls = AutoModelForSequenceClassification
    else:
        cls = AutoModelForCausalLM
    try:
        lm = cls.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError) as e:
        raise StepError(f"cannot load the model: {e}", path=folder) from e
    if quant != "none":
        from peft import prepare_model_for_kbit_training

        keep_cpu_4bit_gradients(lm)
        with modelio.quiet_peft():
            lm = prepare_model_for_kbit_training(lm, use_gradient_checkpointing=gradient_checkpointing)
    return lm


def load_measured(model: Artifact, device: str, cache: Path, *, adapter_base: str | None = None) -> Any:
    """A model to measure (eval, select), on `device`: adapters folded into full-precision
    weights (the default: faster, the same function up to rounding), or, with
    adapter_base = "quantized", a QLoRA adapter unmerged over the 4- or 8-bit base it
    trained against (its artifact records how the base was quantised)."""
    meta = modelio.read_meta(model.path)
    quant = meta.get("quant") if meta.get("type") == "adapter" else None
    if adapter_base == "quantized" and quant:
        from peft import PeftModel

        base = Artifact(model.node + "#base", meta["base"], modelio.base_folder(model))
        lm = load_base(base, Call("lora", dict(quant)), device, cache)
        with modelio.quiet_peft():
            lm = PeftModel.from_pretrained(lm, str(model.path / modelio.ADAPTER_DIR))
        lm.eval()
        return lm
    lm = modelio.load_model(model, merged=True)
    return lm.to(device)
