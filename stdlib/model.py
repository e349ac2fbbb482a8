"""model: a base model from a local folder, a pinned hub model, or tiny(...) built in-process."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ftlang.lang.diagnostics import Diagnostic, Label
from ftlang.stdlib import modelio
from ftlang.stdlib.spec import (
    REQUIRED,
    Artifact,
    Attr,
    BlockView,
    Call,
    Signature,
    StepContext,
    StepError,
    StepSpec,
    error,
    points,
    warning,
)

SPECIAL_TOKENS = ["<|endoftext|>", "<pad>", "<|im_start|>", "<|im_end|>"]
HUB_PROBE_TIMEOUT_S = 3.0

# ---- declarations (the compiler reads these) -----------------------------------------------

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

SOURCES = ("path", "hub", "init", "gguf")  # a model block names exactly one


def rules(b: BlockView) -> list[Diagnostic]:
    """Exactly one source; a hub model pinned to a commit (warnings otherwise)."""
    given = [k for k in SOURCES if b.given(k)]
    p = b.params
    init = p.get("init")
    if isinstance(init, Call) and init.name == "tiny" and given == ["init"]:
        bad = _tiny_heads(init, b)
        if bad is not None:
            return [bad]
    if len(given) != 1:
        where = [Label(b.spans[k], f"`{k}`", False) for k in given[1:]]
        return [Diagnostic(
            "FT0114", f"model `{b.name}` needs exactly one of path, hub, init or gguf"
            + (f" (found {', '.join(given)})" if given else ""),
            [Label(b.span, "this model"), *where],
            help="path = \"models/x\" (a local folder), hub = \"org/name\" with revision, "
                 "gguf = \"x.gguf\", or init = tiny(...)")]
    if b.given("revision") and given != ["hub"]:
        # Only a hub download reads `revision`: elsewhere it would sit in the key doing nothing.
        return [error("FT0114", f"`revision` has no effect on a model loaded with `{given[0]}`",
                      b.spans["revision"], "unused", help="revision pins a hub commit: drop it, or load with "
                      "hub = \"org/name\"", extra=(Label(b.spans[given[0]], f"`{given[0]}` here", False),))]
    if p.get("hub") is not None and p.get("revision") is None:
        return [warning("FT0114", f"model `{b.name}` is not pinned to a revision", b.spans["hub"], "unpinned",
                        help="add `revision = \"<commit>\"`: cache keys need a fixed revision")]
    if isinstance(p.get("revision"), str) and not re.fullmatch(r"[0-9a-f]{7,40}", p["revision"]):
        return [warning("FT0114", f"`revision = \"{p['revision']}\"` names a branch or tag, not a commit",
                        b.spans["revision"], "moves when the repository changes",
                        help="pin a commit hash: the cache key sees only this string, not what it points at")]
    return []


def _tiny_heads(init: Call, b: BlockView) -> Diagnostic | None:
    """tiny(): heads must divide hidden into an even head size (rotary embeddings), at every
    point of a sweep; the error points at `heads` where it is written, else at `hidden`."""
    for hidden in points(init.args.get("hidden")):
        for heads in points(init.args.get("heads")):
            if not (isinstance(hidden, int) and isinstance(heads, int) and heads >= 1) \
                    or (hidden % heads == 0 and (hidden // heads) % 2 == 0):
                continue
            on_heads = b.given("init.heads") or not b.given("init.hidden")
            span = b.spans.get("init.heads" if on_heads else "init.hidden", b.at("init"))
            if hidden % heads:
                message = f"tiny(): hidden = {hidden} is not divisible by heads = {heads}"
                label = f"does not divide hidden = {hidden}" if on_heads else f"not divisible by heads = {heads}"
            else:
                message = (f"tiny(): the head size hidden / heads = {hidden // heads} must be even "
                           "(rotary embeddings)")
                label = f"{hidden} / {heads} = {hidden // heads}, an odd head size"
            extra = (Label(b.spans["init.hidden"], f"hidden = {hidden}", False),) \
                if on_heads and b.given("init.hidden") else ()
            # the nearest head count that fits (the larger of two as near)
            near = range(1, min(hidden, 2 * heads + 8, 4096) + 1)
            fits = sorted((h for h in near if hidden % h == 0 and (hidden // h) % 2 == 0),
                          key=lambda h: (abs(h - heads), -h))
            return error("FT0114", message, span, label, extra=extra,
                         help=f"e.g. heads = {fits[0]}: hidden / heads must be a whole, even number" if fits
                         else "hidden / heads must be a whole, even number: make hidden even")
    return None


SPEC = StepSpec(
    kind="model", version=2, output="model", run="ftlang.stdlib.model:run",
    signature=Signature("model", (
        Attr("path", "path", None, "a local Hugging Face model folder"),
        Attr("hub", "str", None, "a hub model id such as org/name"),
        Attr("revision", "str", None, "the hub commit to pin"),
        Attr("init", "call[init]", None, "a model built in-process: tiny(...)"),
        Attr("gguf", "path", None, "a GGUF file (llama.cpp): dequantised once to fp32 and cached"),
    ), "A base model: a local folder, a pinned hub model, a GGUF file, or one built in-process."),
    rules=rules,
)


def run(ctx: StepContext) -> dict[str, Any]:
    p = ctx.params
    given = [k for k in SOURCES if p[k] is not None]
    if len(given) != 1:
        raise StepError(
            "a model needs exactly one of `path`, `hub`, `init` or `gguf`"
            + (f"; got {', '.join(given)}" if given else ""),
            hint='e.g. path = "models/my-model", or init = tiny(data = corpus)')
    if p["path"] is not None:
        return _from_path(ctx, Path(p["path"]))
    if p["hub"] is not None:
        return _from_hub(ctx, p["hub"], p["revision"])
    if p["gguf"] is not None:
        return _from_gguf(ctx, Path(p["gguf"]))
    return _from_tiny(ctx, p["init"])


# ---- gguf -----------------------------------------------------------------------------

def _from_gguf(ctx: StepContext, file: Path) -> dict[str, Any]:
    """A GGUF file (llama.cpp's format, often quantised), dequantised once to fp32 and
    stored as a plain safetensors model: later steps load it like any model."""
    if not file.is_absolute():
        file = ctx.project / file
    if not file.is_file():
        raise StepError("no such GGUF file", path=file)
    try:
        import gguf  # noqa: F401
    except ImportError as e:
        raise StepError("reading GGUF files needs the gguf package", hint="pip install gguf") from e
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    modelio.quiet()
    ctx.log(f"dequantising {file.name} to fp32 (once: the result is cached)")
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    bar = gguf_utils.tqdm  # the GGUF reader's own progress bar: ctx.log reports instead
    gguf_utils.tqdm = lambda items, *a, **k: items
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
        lm = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise StepError(f"cannot load the GGUF file: {type(e).__name__}: {e}", path=file,
                        hint="transformers reads GGUF for llama, mistral, qwen2, gemma, phi3 and a few more") from e
    finally:
        gguf_utils.tqdm = bar
    quantizer = getattr(lm, "hf_quantizer", None)
    if quantizer is not None:  # the weights are plain fp32 now: do not record a GGUF quantisation
        quantizer.remove_quantization_config(lm)
    lm.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm.generation_config.pad_token_id = tokenizer.pad_token_id
    modelio.save_full(lm, tokenizer, ctx.out, template=None)
    n = modelio.count_params(lm)
    ctx.log(f"{lm.config.model_type}: {n:,} parameters, vocab {len(tokenizer)}")
    return {"source": "gguf", "model_type": lm.config.model_type, "params": n}


# ---- path -------------------------------------------------------------------------

def _from_path(ctx: StepContext, folder: Path) -> dict[str, Any]:
    if not folder.is_absolute():
        folder = ctx.project / folder
    if not folder.is_dir():
        raise StepError("no such model folder", path=folder,
                        hint="`path` must name a local Hugging Face model folder")
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise StepError("not a Hugging Face model folder: it has no config.json", path=folder,
                        hint="save the model with save_pretrained(), or point at the folder that holds config.json")
    modelio.save_link(folder, ctx.out)
    config = json.loads(cfg.read_text(encoding="utf-8"))
    ctx.log(f"model linked from {folder} (not copied)")
    return {"source": "path", "model_type": config.get("model_type"),
            "architectures": config.get("architectures")}


# ---- hub ----------------------------------------------------------------------------

def _offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", "")
    return flag.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_reachable(endpoint: str, timeout: float) -> bool:
    """Whether a TCP connection to the hub opens within `timeout` seconds.

    Name resolution ignores socket timeouts and can hang for a long time without a
    network, so the probe runs in a daemon thread that is simply abandoned on timeout.
    """
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme != "http" else 80)
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)


def hub_cli() -> str:
    """The download command the installed huggingface_hub ships: `hf` in current releases,
    `huggingface-cli` in older ones (read from its entry points, not from PATH)."""
    from importlib import metadata

    try:
        names = {e.name for e in metadata.distribution("huggingface_hub").entry_points}
    except metadata.PackageNotFoundError:
        names = set()
    return "huggingface-cli" if "hf" not in names and "huggingface-cli" in names else "hf"


def _unreachable(hub: str, why: str) -> StepError:
    return StepError(
        f"cannot fetch hub model {hub!r}: the Hugging Face hub is unreachable ({why})",
        hint=(f"download the model where the hub is reachable ({hub_cli()} download "
              f"{hub} --local-dir models/NAME), then write `path = \"models/NAME\"` "
              "in this model block instead of `hub`"))


def _from_hub(ctx: StepContext, hub: str, revision: str | None) -> dict[str, Any]:
    if _offline():
        raise _unreachable(hub, "HF_HUB_OFFLINE is set")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not _hub_reachable(endpoint, HUB_PROBE_TIMEOUT_S):
        raise _unreachable(hub, f"no connection to {endpoint} within {HUB_PROBE_TIMEOUT_S:.0f} s")
    if revision is None:
        ctx.log(f"warning: hub model {hub} is not pinned to a revision; the cache key "
                "cannot see upstream changes")

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        # Weights in safetensors form only, plus configs and tokenizer files.
        folder = snapshot_download(
            repo_id=hub, revision=revision, cache_dir=str(ctx.cache / "hub"),
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"])
    except HfHubHTTPError as e:
        raise StepError(f"cannot fetch hub model {hub!r}: {e}",
                        hint="check the model id and revision") from e
    except OSError as e:
        raise _unreachable(hub, str(e)) from e
    snapshot = Path(folder)
    if not (snapshot / "config.json").is_file():
        raise StepError(f"hub model {hub!r} has no config.json", path=snapshot)
    # The snapshot folder is named after the resolved commit: pin what was fetched.
    modelio.write_meta(ctx.out, {"type": "link", "path": str(snapshot.resolve()),
                                 "hub": hub, "revision": snapshot.name, "template": None})
    return {"source": "hub", "hub": hub, "revision": snapshot.name}


# ---- tiny(...) ------------------------------------------------------------------------

def _strings(value: Any) -> list[str]:
    """Every string inside a nested value (chat messages: a list of {role, content})."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _strings(v)]
    return []


def _texts(data: Artifact) -> list[str]:
    """Every row's text joined by newlines: the tokenizer's training text. String columns,
    and the strings inside list/struct columns (chat `messages`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(data.dataset_file())

    def texty(t: Any) -> bool:
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return True
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return texty(t.value_type)
        return pa.types.is_struct(t) and any(texty(f.type) for f in t)

    cols = [f.name for f in table.schema if texty(f.type)]
    if not cols:
        raise StepError("the tokenizer dataset has no text (string) columns",
                        path=data.dataset_file())
    columns = [table.column(c).to_pylist() for c in cols]
    return ["\n".join(t for v in row for t in _strings(v) if t) for row in zip(*columns, strict=True)]


def train_tokenizer(texts: list[str], vocab: int) -> Any:
    """A byte-level BPE tokenizer trained on `texts`, wrapped for transformers.

    Digits are split one per token (as in Llama 3 / Qwen): numbers then share
    sub-tokens, which small models need to learn any arithmetic at all. A space is
    put before the first word of every text and stripped again on decode (the
    SentencePiece convention): a completion tokenized on its own then starts with
    the same "Ġword" token the word has inside running text, so a model does not
    have to learn a second, space-less spelling of every answer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # ByteLevel first: it sees the whole text, so the prefix space goes only at its start.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        pad_token="<pad>", unk_token=None,
        extra_special_tokens={"im_start_token": "<|im_start|>", "im_end_token": "<|im_end|>"},
        clean_up_tokenization_spaces=False)


def _from_tiny(ctx: StepContext, init: Call) -> dict[str, Any]:
    a = init.args
    if a["arch"] != "llama":  # the one architecture tiny() builds (its declaration's only choice)
        raise StepError(f"tiny(): no architecture {a['arch']!r}", hint='arch = "llama"')
    hidden, heads = int(a["hidden"]), int(a["heads"])
    if hidden % heads:
        raise StepError(f"tiny(): hidden = {hidden} is not divisible by heads = {heads}",
                        hint=f"e.g. heads = {max(h for h in range(1, heads + 1) if hidden % h == 0)}")
    if (hidden // heads) % 2:
        raise StepError(f"tiny(): the head size hidden / heads = {hidden // heads} must be even (rotary embeddings)")
    texts = _texts(a["data"])
    ctx.log(f"training a {a['vocab']}-token BPE tokenizer on {len(texts)} rows")
    tokenizer = train_tokenizer(texts, int(a["vocab"]))

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer.model_max_length = int(a["context"])
    vocab = len(tokenizer)  # a small corpus may yield fewer merges than asked for
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=int(a["layers"]),
        num_attention_heads=heads, num_key_value_heads=heads,
        intermediate_size=int(a["intermediate"] or 4 * hidden),
        max_position_embeddings=int(a["context"]),
        # transformers 5: rope settings live in rope_parameters, not rope_theta.
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        # Tied input/output embeddings: at this size the embeddings are most of the model.
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, dtype="float32")
    # Seeded CPU initialisation: the same arguments give the same weight bytes.
    torch.manual_seed(int(a["seed"]))
    with torch.device("cpu"):
        lm = LlamaForCausalLM(config)
    lm.to(torch.float32)
    lm.generation_config.pad_token_id = tokenizer.pad_token_id
    lm.generation_config.eos_token_id = tokenizer.eos_token_id
    lm.generation_config.bos_token_id = tokenizer.bos_token_id
    modelio.save_full(lm, tokenizer, ctx.out, template=None)
    n = modelio.count_params(lm)
    ctx.log(f"tiny llama: {n:,} parameters, vocab {vocab}")
    return {"source": "init", "params": n, "vocab": vocab}
