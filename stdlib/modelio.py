"""How a model artifact is laid out on disk, and how to load and save one.

A model artifact is a folder holding `ftlang_model.json` plus, by its "type":

  full     config.json, model.safetensors, generation_config.json, tokenizer files
  adapter  adapter/ (peft save_pretrained) and tokenizer files; "base" is the digest of
           the model artifact the adapter was trained on. Artifacts live side by side at
           <cache>/objects/<digest>/, so the base folder is `folder.parent / base`.
           A base may itself be an adapter (stacking): loading merges from the bottom up.
  link     nothing but the meta file: "path" is a local Hugging Face folder the model is
           read from, so that a multi-GB user folder is never copied into the cache.
  gguf     "file" (one llama.cpp GGUF file) and tokenizer files: an export with
           format = gguf(...), loaded through transformers' GGUF reader.

Every type records "template" (the template dict the model was trained with, or null)
so that eval renders prompts the way training did.

Nothing here imports torch at module level: `ft check` / `ft plan` may import it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ftlang.stdlib.spec import Artifact, StepError

META = "ftlang_model.json"
ADAPTER_DIR = "adapter"


# ---- metadata -----------------------------------------------------------------

def _folder(model: Artifact | Path) -> Path:
    return model.path if isinstance(model, Artifact) else Path(model)


def write_meta(out: Path, meta: dict[str, Any]) -> None:
    # Sorted keys and a fixed layout: the file's bytes enter the artifact digest.
    (out / META).write_text(json.dumps(meta, sort_keys=True, indent=1) + "\n", encoding="utf-8")


def read_meta(model: Artifact | Path) -> dict[str, Any]:
    """The artifact's ftlang_model.json; a bare Hugging Face folder reads as "full"."""
    folder = _folder(model)
    meta_file = folder / META
    if meta_file.is_file():
        return json.loads(meta_file.read_text(encoding="utf-8"))
    if (folder / "config.json").is_file():
        return {"type": "full", "template": None}
    raise StepError(f"not a model folder: no {META} and no config.json", path=folder)


def template_of(model: Artifact | Path) -> dict[str, Any] | None:
    """The template the model was trained with, or None when it never saw one."""
    return read_meta(model).get("template")


def weights_folder(model: Artifact | Path) -> Path:
    """The folder holding config + weights + tokenizer: the artifact itself or its link."""
    folder = _folder(model)
    meta = read_meta(folder)
    if meta["type"] == "gguf":
        return folder  # the GGUF file and the tokenizer files (an export with format = gguf)
    if meta["type"] == "link":
        target = Path(meta["path"])
        if not (target / "config.json").is_file():
            raise StepError("the linked model folder has no config.json (moved or deleted?)",
                            path=target, hint="point `path =` at a Hugging Face model folder")
        return target
    return folder


def base_folder(model: Artifact | Path) -> Path:
    """The folder of the model an adapter artifact was trained on."""
    folder = _folder(model)
    meta = read_meta(folder)
    base = folder.parent / meta["base"]
    if not base.is_dir():
        raise StepError(f"the base model {meta['base'][:12]} of this adapter is not in the cache",
                        path=folder, hint="run the pipeline again to rebuild the base model")
    return base


# ---- loading --------------------------------------------------------------------

def quiet() -> None:
    """Turn off transformers' tqdm bars: ftlang reports progress through ctx.progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def tokenizer_folder(model: Artifact | Path) -> Path:
    """Where the tokenizer files are: adapters carry theirs beside adapter/, full models
    in their folder, links in the linked folder."""
    folder = _folder(model)
    return folder if read_meta(folder)["type"] == "adapter" else weights_folder(folder)


def load_tokenizer(model: Artifact | Path) -> Any:
    """The model's tokenizer, with a pad token set (padding is needed for batches)."""
    from transformers import AutoTokenizer

    quiet()
    src = tokenizer_folder(model)
    tok = AutoTokenizer.from_pretrained(str(src))
    if tok.eos_token_id is None:
        raise StepError("the model's tokenizer has no EOS token", path=src,
                        hint="set eos_token in tokenizer_config.json")
    if tok.pad_token_id is None:
        # Common for released models: padding positions are masked, so EOS is a safe pad.
        tok.pad_token = tok.eos_token
    return tok


@contextmanager
def quiet_peft() -> Iterator[None]:
    """peft 0.21 reads transformers' deprecated is_gradient_checkpointing: hide that noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        yield


def _default_dtype() -> Any:
    import torch

    # fp32 everywhere: CPU bf16 is slower here, and on GPU the Trainer's autocast handles it.
    return torch.float32


def load_model(model: Artifact | Path, *, merged: bool = False) -> Any:
    """A causal LM ready for training or inference (eval mode, fp32, on CPU).

    An adapter comes back as a PeftModel over its (merged) base, or, with merged=True,
    folded into plain weights. Lower adapters of a stack are always merged first.
    """
    from transformers import AutoModelForCausalLM

    quiet()
    folder = _folder(model)
    meta = read_meta(folder)
    if meta["type"] in ("full", "link"):
        src = weights_folder(folder)
        try:
            lm = AutoModelForCausalLM.from_pretrained(str(src), dtype=_default_dtype())
        except (OSError, ValueError) as e:
            raise StepError(f"cannot load the model: {e}", path=src) from e
        lm.eval()
        return lm
    if meta["type"] == "gguf":
        lm = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=meta["file"], dtype=_default_dtype())
        lm.eval()
        return lm
    if meta["type"] != "adapter":
        raise StepError(f"unknown model artifact type {meta['type']!r}", path=folder)

    from peft import PeftModel

    base = load_model(base_folder(folder), merged=True)
    if not is_plain(base):
        raise StepError("an adapter over a prompt- or prefix-tuned model cannot be loaded", path=folder)
    with quiet_peft():
        lm = PeftModel.from_pretrained(base, str(folder / ADAPTER_DIR))
    lm.eval()
    if lm.peft_config["default"].is_prompt_learning:
        # Virtual tokens have no weights to merge into: the model stays a PeftModel, and its
        # logits are cut to the real positions so it reads like any causal LM.
        return _real_positions(lm)
    if merged:
        lm = lm.merge_and_unload()
        lm.eval()
    return lm


def is_classifier(model: Artifact | Path) -> bool:
    """Whether the model is a sequence classifier (a reward model), not a causal LM."""
    if read_meta(model)["type"] == "adapter":
        return False  # ftlang saves reward models as full weights
    cfg = weights_folder(model) / "config.json"
    archs = (json.loads(cfg.read_text(encoding="utf-8")).get("architectures") or []) if cfg.is_file() else []
    return any(a.endswith(("ForSequenceClassification", "ForRewardModeling")) for a in archs)


def is_prompt_learning(model: Artifact | Path) -> bool:
    """Whether an adapter artifact is prompt or prefix tuning (virtual tokens, nothing to merge)."""
    cfg = _folder(model) / ADAPTER_DIR / "adapter_config.json"
    if read_meta(model)["type"] != "adapter" or not cfg.is_file():
        return False
    return json.loads(cfg.read_text(encoding="utf-8")).get("peft_type") in (
        "PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING")


def is_plain(lm: Any) -> bool:
    """False for a prompt/prefix-tuned PeftModel (which load_model cannot merge)."""
    config = getattr(lm, "peft_config", None)
    return not (isinstance(config, dict) and any(c.is_prompt_learning for c in config.values()))


def _real_positions(lm: Any) -> Any:
    """Prompt tuning prepends its virtual tokens to the sequence: drop their logits (when no
    labels are given) so that position t still predicts token t + 1."""
    config = lm.peft_config["default"]
    if str(getattr(config.peft_type, "value", config.peft_type)) != "PROMPT_TUNING":
        return lm
    n = int(config.num_virtual_tokens)
    forward = lm.forward

    def real_forward(*args: Any, **kwargs: Any) -> Any:
        out = forward(*args, **kwargs)
        ids = kwargs.get("input_ids", args[0] if args else None)
        if kwargs.get("labels") is None and ids is not None and out.logits.shape[1] == ids.shape[1] + n:
            out.logits = out.logits[:, n:]
        return out

    lm.forward = real_forward
    return lm


def count_params(lm: Any, *, trainable: bool = False) -> int:
    # Tied embeddings appear once in parameters(): this is the real size.
    return sum(p.numel() for p in lm.parameters() if p.requires_grad or not trainable)


# ---- saving ---------------------------------------------------------------------

def _save_tokenizer(tokenizer: Any, out: Path) -> None:
    tokenizer.save_pretrained(str(out))
    # The tokenizer config records where it was loaded from on some versions: an
    # absolute path in an artifact breaks byte-identical reruns in another folder.
    cfg = out / "tokenizer_config.json"
    if cfg.is_file():
        data = json.loads(cfg.read_text(encoding="utf-8"))
        if data.pop("name_or_path", None) is not None:
            cfg.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


save_tokenizer = _save_tokenizer  # for exports that write their weights themselves (GGUF)


def first_non_finite(tensors: Iterable[tuple[str, Any]]) -> tuple[str, str] | None:
    """(name, "nan" or "inf") of the first floating tensor that is not finite, or None."""
    import torch

    for name, t in tensors:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.is_meta:
            continue  # quantised (integer) storage holds no nan; meta tensors hold no data
        if not bool(torch.isfinite(t).all()):
            return name, "nan" if bool(torch.isnan(t).any()) else "inf"
    return None


def check_finite(tensors: Iterable[tuple[str, Any]], what: str) -> None:
    """StepError naming the first tensor with a nan or inf: such a model is never committed
    (a diverged training, an overflowing merge). One pass over the weights."""
    bad = first_non_finite(tensors)
    if bad is not None:
        raise StepError(f"{what} has non-finite weights ({bad[0]} holds {bad[1]}): refusing to save it",
                        hint="training diverged (lower lr) or the inputs hold nan/inf weights")


def save_full(lm: Any, tokenizer: Any, out: Path, *, template: dict[str, Any] | None,
              max_shard_size: str | None = None) -> None:
    """Plain weights (safetensors) + config + tokenizer: transformers loads the folder.
    `max_shard_size` ("2GB") splits the weights into shards with an index file.
    Refuses (StepError) a model with a nan or inf weight."""
    quiet()
    check_finite(lm.state_dict().items(), "the model")
    out.mkdir(parents=True, exist_ok=True)
    # The name_or_path of a loaded model is its absolute source folder; keep it out.
    lm.config._name_or_path = ""
    lm.save_pretrained(str(out), **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    _save_tokenizer(tokenizer, out)
    write_meta(out, {"type": "full", "template": template})


def save_adapter(lm: Any, tokenizer: Any, out: Path, *, base_digest: str,
                 template: dict[str, Any] | None, quant: dict[str, Any] | None = None) -> None:
    """A peft adapter over the model artifact `base_digest` + the tokenizer.
    Refuses (StepError) an adapter with a nan or inf weight. `quant` (QLoRA only: how the
    base was quantised in training) is recorded so eval can measure it on that base."""
    from peft import get_peft_model_state_dict

    # Only the trained adapter: trl adds a frozen "ref" copy to a PeftModel for DPO/KTO.
    names = list(getattr(lm, "peft_config", None) or [])
    only = {"selected_adapters": ["default"]} if len(names) > 1 and "default" in names else {}
    saved = "default" if "default" in names or not names else names[0]
    check_finite(get_peft_model_state_dict(lm, adapter_name=saved).items(), "the adapter")
    out.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(str(out / ADAPTER_DIR), **only)
    scrub_adapter_config(out / ADAPTER_DIR)
    scrub_adapter_card(out / ADAPTER_DIR)
    _save_tokenizer(tokenizer, out)
    # Only QLoRA adapters carry `quant`: every other adapter keeps the bytes it had.
    write_meta(out, {"type": "adapter", "base": base_digest, "template": template,
                     **({"quant": quant} if quant else {})})


def scrub_adapter_config(folder: Path) -> None:
    """Make adapter_config.json depend on the training inputs only.

    The base's absolute folder goes (ftlang names the base by digest). peft fills
    base_model_name_or_path from the loaded model whenever it is unset, so the saved
    file is edited rather than the config object.
    """
    cfg_file = folder / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = None
    cfg["revision"] = None
    if cfg.get("tokenizer_name_or_path"):
        # Prompt tuning initialised from text: the tokenizer path was needed only for that
        # initialisation; the trained embeddings are in the file, so reload as "RANDOM".
        cfg["tokenizer_name_or_path"] = None
        cfg["prompt_tuning_init"] = "RANDOM"
    # peft keeps resolved module names in a set: its order changes with the process's
    # hash seed, so the same training would write different bytes on each run.
    for key in ("target_modules", "exclude_modules", "modules_to_save"):
        if isinstance(cfg.get(key), list):
            cfg[key] = sorted(cfg[key])
    cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def scrub_adapter_card(folder: Path) -> None:
    """peft's adapter README.md is kept (an export ships it), without the base's absolute
    folder that peft writes as `base_model` and as a `base_model:adapter:<folder>` tag (it
    would make the bytes differ per project folder)."""
    card = folder / "README.md"
    if not card.is_file():
        return
    from huggingface_hub import ModelCard

    def local(name: Any) -> bool:
        return isinstance(name, str) and (name.startswith(("/", ".", "~")) or Path(name).is_absolute()
                                          or "\\" in name)

    mc = ModelCard(card.read_text(encoding="utf-8"))
    data = mc.data
    if local(getattr(data, "base_model", None)):
        data.base_model = None
    if data.tags:
        data.tags = [t for t in data.tags if not (t.startswith("base_model:") and local(t.split(":", 2)[-1]))]
    card.write_text(str(mc), encoding="utf-8", newline="\n")


def save_link(folder: Path, out: Path) -> None:
    """A model read from a local folder: record where it is, copy nothing."""
    write_meta(out, {"type": "link", "path": str(Path(folder).resolve()), "template": None})
