"""template: how a prompt and its completion become one training/eval text."""

from __future__ import annotations

import json
from typing import Any

from ftlang.stdlib.spec import REQUIRED, Artifact, Attr, Signature, StepContext, StepSpec

PLAIN: dict[str, Any] = {"style": "plain", "system": "", "separator": "\n"}

# The template family: `template chat = chatml(system = "...")` is the template block
# `template chat { style = chatml, system = "..." }`.
TEMPLATES = {
    "chatml": Signature("chatml", (Attr("system", "str", "", "system message"),),
                        "ChatML: <|im_start|>role ... <|im_end|>."),
    "plain": Signature("plain", (Attr("separator", "str", "\n", "text between prompt and completion"),),
                       "Prompt, separator, completion."),
}

SPEC = StepSpec(
    kind="template", version=1, output="template", run="ftlang.stdlib.template:run",
    signature=Signature("template", (
        Attr("style", "enum", REQUIRED, "the template family", choices=tuple(TEMPLATES)),
        Attr("system", "str", "", "system message (chatml)"),
        Attr("separator", "str", "\n", "text between prompt and completion (plain)"),
    ), "How a prompt and its completion become one training text."),
)


def run(ctx: StepContext) -> dict[str, Any]:
    p = ctx.params
    tpl = {"style": p["style"], "system": p["system"], "separator": p["separator"]}
    (ctx.out / "template.json").write_text(json.dumps(tpl, sort_keys=True, indent=1) + "\n")
    return {"style": tpl["style"]}


def load(artifact: Artifact | None) -> dict[str, Any]:
    """The template stored in a template artifact; the plain template for None."""
    if artifact is None:
        return dict(PLAIN)
    return json.loads((artifact.path / "template.json").read_text())


def render_prompt(tpl: dict[str, Any], prompt: str) -> str:
    """The text a model sees before it must produce the completion."""
    if tpl["style"] == "chatml":
        head = f"<|im_start|>system\n{tpl['system']}<|im_end|>\n" if tpl.get("system") else ""
        return f"{head}<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    return f"{prompt}{tpl.get('separator', chr(10))}"


def render_completion(tpl: dict[str, Any], completion: str) -> str:
    """The target text after the prompt; the caller appends the tokenizer's EOS."""
    if tpl["style"] == "chatml":
        return f"{completion}<|im_end|>"
    return completion
