"""export: a self-contained model folder (safetensors, or one GGUF file) with a Hugging Face
model card; the runtime copies it to `to`, and `push = hub(...)` uploads it.

In:  `model` (a model artifact), `merge`, `format` (safetensors() | gguf(quant)),
     `max_shard_size`, `push`. Out: the folder: weights, tokenizer, ftlang_model.json and
     README.md (ftlang.stdlib.modelcard); with merge = false, adapter/ as peft saved it
     (its README.md included). A push happens when the export is built (a changed `push`
     changes the key, so the export is rebuilt and pushed); its commit is in the ledger.
"""

from __future__ import annotations

import re
import shutil
from typing import Any

from ftlang.lang.diagnostics import Diagnostic
from ftlang.stdlib import chat_templates, gguf_export, hub, modelcard, modelio
from ftlang.stdlib.merge import summary
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
)

FORMATS = gguf_export.FORMATS
PUSHES = hub.PUSHES
SHARD_SIZE = re.compile(r"^[1-9]\d*(KB|MB|GB|KiB|MiB|GiB)$")  # what transformers' save_pretrained reads
CARD = "README.md"


def rules(b: BlockView) -> list[Diagnostic]:
    out = hub.rules(b)
    size, fmt = b.params.get("max_shard_size"), b.params.get("format")
    if isinstance(size, str) and not SHARD_SIZE.match(size):
        out.append(error("FT0301", f"max_shard_size {size!r} is not a size", b.at("max_shard_size"),
                         "a whole number and a unit", help='write e.g. max_shard_size = "2GB" (KB, MB, GB, KiB, '
                         'MiB, GiB; no space)'))
    if isinstance(fmt, Call) and fmt.name == "gguf":
        if b.params.get("merge") is False:
            out.append(error("FT0302", "a GGUF export holds merged weights: merge = false has no GGUF form",
                             b.at("merge"), "merge = false", help="drop merge = false, or export format = safetensors"))
        if b.given("max_shard_size"):
            out.append(error("FT0302", "max_shard_size shards safetensors weights; a GGUF export is one file",
                             b.at("max_shard_size"), "not read by gguf(...)", help="drop max_shard_size"))
    return out


SPEC = StepSpec(
    kind="export", version=2, output="model", run="ftlang.stdlib.export:run",
    signature=Signature("export", (
        Attr("model", "model", REQUIRED, "the model to export; the export waits for every eval "
             "that measures it with an `assert`, and is not published when one fails"),
        Attr("merge", "bool", True, "merge adapters into the base weights"),
        Attr("to", "outpath", REQUIRED, "folder the exported model is copied to; ftlang replaces it "
             "only if it published it and it is unchanged since: a rerun after you edited a file "
             "there fails and keeps your edit (move it, or delete the folder to publish again)",
             semantic=False),
        Attr("allow_outside", "bool", False, "allow a `to` outside the project folder", semantic=False),
        Attr("format", "call[format]", "safetensors", "safetensors, or gguf(quant = \"q8_0\" | \"f16\") "
             "for llama-family models (one llama.cpp file)"),
        Attr("max_shard_size", "str", None, "split safetensors weights into files of at most this size "
             "(\"2GB\"); default transformers' 50GB"),
        Attr("push", "call[upload]", None, "hub(\"org/name\", private = true): upload the export to the "
             "Hugging Face Hub; offline or without a token the run stops before it starts"),
    ), "A self-contained model folder that transformers loads, with a Hugging Face model card "
       "(README.md) generated from the pipeline's lineage."),
    rules=rules,
    summary=summary,  # the parameter count, as merge reports it
)


def _write_folder(ctx: StepContext, src: Artifact, merge: bool) -> int:
    """Write the export into ctx.out; returns the parameter count."""
    meta = modelio.read_meta(src)
    template = meta.get("template")
    tokenizer = modelio.load_tokenizer(src)
    trained = chat_templates.exported_source(template)
    if trained is not None:
        # apply_chat_template on the export renders exactly the text the model trained on.
        tokenizer.chat_template = trained
    fmt: Call = ctx.params["format"]
    shard = ctx.params["max_shard_size"]
    if fmt.name == "gguf":
        return _write_gguf(ctx, src, tokenizer, template, str(fmt["quant"]))
    if modelio.is_classifier(src):
        # A reward model: already plain weights with its classification head; copied as is.
        folder = modelio.weights_folder(src)
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.name != modelio.META:
                shutil.copy2(f, ctx.out / f.name)
        modelio.write_meta(ctx.out, {"type": "full", "template": template})
        ctx.log("a reward model (sequence classifier): exported with its head")
        from transformers import AutoModelForSequenceClassification

        clf = AutoModelForSequenceClassification.from_pretrained(str(folder))
        modelio.check_finite(clf.state_dict().items(), "the reward model")  # a linked folder was never saved by us
        return modelio.count_params(clf)
    if meta["type"] == "adapter" and merge and modelio.is_prompt_learning(src):
        ctx.log("a prompt- or prefix-tuned adapter has no weights to merge: exported unmerged")
        merge = False
    if meta["type"] == "adapter" and not merge:
        # Unmerged: the (merged) base weights at the top, so transformers loads the
        # folder alone, and the adapter in adapter/ for PeftModel.from_pretrained.
        base = modelio.load_model(modelio.base_folder(src), merged=True)
        modelio.save_full(base, tokenizer, ctx.out, template=template, max_shard_size=shard)
        # The stored adapter already names no base path: copy it as it is.
        shutil.copytree(src.path / modelio.ADAPTER_DIR, ctx.out / modelio.ADAPTER_DIR)
        ctx.log("adapter kept separate in adapter/ (merge = false); the top folder is its base")
        return modelio.count_params(base)
    lm = modelio.load_model(src, merged=True)
    modelio.save_full(lm, tokenizer, ctx.out, template=template, max_shard_size=shard)
    return modelio.count_params(lm)


def _write_gguf(ctx: StepContext, src: Artifact, tokenizer: Any, template: dict[str, Any] | None,
                quant: str) -> int:
    """One GGUF file (merged weights) + the tokenizer files, for llama.cpp and transformers."""
    if modelio.is_classifier(src):
        raise StepError("a reward model (sequence classifier) has no GGUF form",
                        hint="export it with format = safetensors")
    if modelio.read_meta(src)["type"] == "adapter" and modelio.is_prompt_learning(src):
        raise StepError("a prompt- or prefix-tuned model has no weights to merge into a GGUF file",
                        hint="export it with format = safetensors")
    lm = modelio.load_model(src, merged=True)
    modelio.check_finite(lm.state_dict().items(), "the model")
    name = gguf_export.file_name(quant)
    counts = gguf_export.write(lm, tokenizer, ctx.out / name, quant, name=ctx.name)
    modelio.save_tokenizer(tokenizer, ctx.out)
    modelio.write_meta(ctx.out, {"type": "gguf", "file": name, "template": template})
    ctx.log(f"{name}: " + ", ".join(f"{n} {k} tensors" for k, n in sorted(counts.items())))
    return modelio.count_params(lm)


def _files(ctx: StepContext) -> dict[str, str]:
    """What the card's "Files" section says each file is."""
    out = {}
    for f in sorted(ctx.out.rglob("*")):
        if not f.is_file():
            continue
        rel = f.relative_to(ctx.out).as_posix()
        if rel.endswith(".gguf"):
            out[rel] = "the model as one llama.cpp GGUF file"
        elif rel.endswith(".safetensors"):
            out[rel] = "weights (safetensors)"
        elif rel.startswith(modelio.ADAPTER_DIR + "/"):
            out.setdefault(modelio.ADAPTER_DIR + "/", "the peft adapter (PeftModel.from_pretrained), "
                           "over the weights at the top")
        elif rel.startswith("tokenizer") or rel in ("special_tokens_map.json", "chat_template.jinja"):
            out[rel] = "the tokenizer (AutoTokenizer.from_pretrained)"
        elif rel in ("config.json", "generation_config.json") or rel.endswith(".index.json"):
            out[rel] = "model configuration" if not rel.endswith(".index.json") else "the shards' index"
        elif rel == modelio.META:
            out[rel] = "ftlang's record of the model type and training template"
    return out


def run(ctx: StepContext) -> dict[str, Any]:
    p = ctx.params
    src: Artifact = p["model"]
    merge = bool(p["merge"])
    n = _write_folder(ctx, src, merge)
    fmt: Call = p["format"]
    unmerged = (ctx.out / modelio.ADAPTER_DIR).is_dir()
    library = "gguf" if fmt.name == "gguf" else (
        "transformers-classifier" if modelio.is_classifier(src) else "transformers")
    text = modelcard.card(ctx, src, library=library, files=_files(ctx),
                          gguf=str(fmt["quant"]) if fmt.name == "gguf" else None)
    (ctx.out / CARD).write_text(text, encoding="utf-8", newline="\n")
    # The runtime publishes the committed artifact to `to` (ftlang.runtime.publish): one
    # place decides what may be replaced, for first runs and cached reruns alike.
    ctx.log(f"built an export of {n:,} parameters" + (" (adapter unmerged)" if unmerged else ""))
    meta: dict[str, Any] = {"params": n, "merged": merge and not unmerged, "format": fmt.name}
    push: Call | None = p["push"]
    if push is not None:
        meta["pushed"] = hub.upload(ctx.out, push, message=f"ftlang: {ctx.node} ({src.node} {src.digest[:12]})")
        ctx.log(f"pushed to {meta['pushed']['repo']}: {meta['pushed']['url']}")
    return meta
