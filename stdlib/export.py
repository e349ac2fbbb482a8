"""export: a self-contained safetensors model folder, copied to a path outside the cache."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ftlang.stdlib import modelio
from ftlang.stdlib.spec import Artifact, StepContext, StepError


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

        return modelio.count_params(AutoModelForSequenceClassification.from_pretrained(str(folder)))
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


def _looks_like_export(folder: Path) -> bool:
    return (folder / "config.json").is_file() or (folder / modelio.META).is_file()


def publish(folder: Path, to: Path) -> None:
    """Copy `folder` to `to`, replacing an earlier export without a half-written state.

    The copy goes to a sibling temp dir first (same filesystem), then renames swap it
    in: a reader sees the old export or the new one, never a mix.
    """
    to = Path(to)
    if to.exists() and not to.is_dir():
        raise StepError("the export target exists and is not a folder", path=to)
    if to.is_dir() and any(to.iterdir()) and not _looks_like_export(to):
        # Never delete a user's folder that ftlang did not write.
        raise StepError("the export target is a non-empty folder that holds no model",
                        path=to, hint="choose an empty or new folder for `to`")
    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{to.name}.tmp-", dir=to.parent))
    old: Path | None = None
    try:
        shutil.copytree(folder, tmp, dirs_exist_ok=True)
        if to.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{to.name}.old-", dir=to.parent))
            os.rmdir(old)
            os.rename(to, old)
        os.rename(tmp, to)
    except BaseException:
        if old is not None and not to.exists():
            os.rename(old, to)  # put the previous export back
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def run(ctx: StepContext) -> dict[str, Any]:
    p = ctx.params
    src: Artifact = p["model"]
    merge = bool(p.get("merge", True))
    to = Path(p["to"])
    if not to.is_absolute():
        to = ctx.project / to
    n = _write_folder(ctx, src, merge)
    publish(ctx.out, to)
    ctx.log(f"exported {n:,} parameters to {to}")
    return {"to": str(to), "params": n, "merged": merge}
