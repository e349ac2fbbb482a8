"""export: a self-contained safetensors model folder; the runtime copies it to `to`."""

from __future__ import annotations

import shutil
from typing import Any

from ftlang.stdlib import modelio
from ftlang.stdlib.merge import summary
from ftlang.stdlib.spec import REQUIRED, Artifact, Attr, Signature, StepContext, StepSpec

SPEC = StepSpec(
    kind="export", version=1, output="model", run="ftlang.stdlib.export:run",
    signature=Signature("export", (
        Attr("model", "model", REQUIRED, "the model to export"),
        Attr("merge", "bool", True, "merge adapters into the base weights"),
        Attr("to", "outpath", REQUIRED, "folder the safetensors model is copied to; ftlang replaces it "
             "only if it published it and it is unchanged since", semantic=False),
        Attr("allow_outside", "bool", False, "allow a `to` outside the project folder", semantic=False),
    ), "A self-contained safetensors model folder that transformers loads."),
    summary=summary,  # the parameter count, as merge reports it
)


def _write_folder(ctx: StepContext, src: Artifact, merge: bool) -> int:
    """Write the export into ctx.out; returns the parameter count."""
    meta = modelio.read_meta(src)
    template = meta.get("template")
    tokenizer = modelio.load_tokenizer(src)
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
        modelio.save_full(base, tokenizer, ctx.out, template=template)
        # The stored adapter already names no base path: copy it as it is.
        shutil.copytree(src.path / modelio.ADAPTER_DIR, ctx.out / modelio.ADAPTER_DIR)
        ctx.log("adapter kept separate in adapter/ (merge = false); the top folder is its base")
        return modelio.count_params(base)
    lm = modelio.load_model(src, merged=True)
    modelio.save_full(lm, tokenizer, ctx.out, template=template)
    return modelio.count_params(lm)


def run(ctx: StepContext) -> dict[str, Any]:
    p = ctx.params
    src: Artifact = p["model"]
    merge = bool(p["merge"])
    n = _write_folder(ctx, src, merge)
    # The runtime publishes the committed artifact to `to` (ftlang.runtime.publish): one
    # place decides what may be replaced, for first runs and cached reruns alike.
    ctx.log(f"built an export of {n:,} parameters")
    return {"params": n, "merged": merge}
