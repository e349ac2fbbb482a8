"""template: how a prompt and its completion become one training/eval text."""

from __future__ import annotations

import json
from typing import Any

from ftlang.lang.diagnostics import Diagnostic
from ftlang.stdlib import chat_templates
from ftlang.stdlib.spec import (
    REQUIRED,
    Artifact,
    Attr,
    BlockView,
    Signature,
    StepContext,
    StepSpec,
    error,
    points,
)

PLAIN: dict[str, Any] = {"style": "plain", "system": "", "separator": "\n"}

# The template family: `template chat = chatml(system = "...")` is the template block
# `template chat { style = chatml, system = "..." }`.
TEMPLATES = {
    "chatml": Signature("chatml", (Attr("system", "str", "", "system message"),),
                        "ChatML: <|im_start|>role ... <|im_end|>."),
    "plain": Signature("plain", (Attr("separator", "str", "\n", "text between prompt and completion"),),
                       "Prompt, separator, completion."),
    # Real model families (stdlib/chat_templates.py): rendered with Jinja as transformers does.
    **{name: Signature(name, () if name == "gemma" else (
        Attr("system", "str", "", "system message for conversations that have none"),),
        f"{family}: the published chat template, byte for byte.")
       for name, family in chat_templates.FAMILIES.items()},
    "tokenizer": Signature("tokenizer", (Attr("system", "str", "", "system message for conversations that "
                                              "have none"),),
                           "The model tokenizer's own Jinja chat_template, through apply_chat_template."),
}


def rules(b: BlockView) -> list[Diagnostic]:
    """gemma's published template refuses a system message: say so before anything runs.
    An attribute the chosen family does not read is an error: the block's signature is the
    union of every family's, so `plain(system = "...")` would otherwise be dropped silently."""
    if b.params.get("style") == "gemma" and b.params.get("system"):
        return [error("FT0280", "gemma's chat template has no system role", b.at("system"),
                      "gemma raises 'System role not supported'",
                      help="put the instruction into the first user message, or use another family")]
    out: list[Diagnostic] = []
    for name in ("system", "separator"):
        if not b.given(name):
            continue
        for style in points(b.params.get("style")):
            sig = TEMPLATES.get(style) if isinstance(style, str) else None
            if sig is None or sig.attr(name) is not None:
                continue
            out.append(error("FT0104", f"`{style}` has no argument `{name}`", b.at(name), "unknown argument",
                             help=f"arguments: {', '.join(sig.names)}" if sig.names
                             else f"`{style}` takes no arguments"))
            break
    return out


SPEC = StepSpec(
    kind="template", version=1, output="template", run="ftlang.stdlib.template:run",
    signature=Signature("template", (
        Attr("style", "enum", REQUIRED, "the template family", choices=tuple(TEMPLATES)),
        Attr("system", "str", "", "system message (chatml and the model families)"),
        Attr("separator", "str", "\n", "text between prompt and completion (plain)"),
    ), "How a prompt and its completion become one training text."),
    rules=rules,
)


def run(ctx: StepContext) -> dict[str, Any]:
    p = ctx.params
    tpl = {"style": p["style"], "system": p["system"], "separator": p["separator"]}
    if p["style"] in chat_templates.PRESETS and p["style"] != "chatml":
        # The preset's text is part of the artifact: a changed preset retrains what used it.
        tpl["source"] = chat_templates.preset_source(p["style"], p["system"])
    (ctx.out / "template.json").write_text(json.dumps(tpl, sort_keys=True, indent=1) + "\n")
    return {"style": tpl["style"]}


def load(artifact: Artifact | None) -> dict[str, Any]:
    """The template stored in a template artifact; the plain template for None."""
    if artifact is None:
        return dict(PLAIN)
    return json.loads((artifact.path / "template.json").read_text())


def resolve(tpl: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """A template ready to render with this tokenizer (a family preset or `tokenizer()`
    becomes its Jinja source; chatml and plain stay as they are)."""
    return chat_templates.resolve(tpl, tokenizer)


def adds_special_tokens(tpl: dict[str, Any]) -> bool:
    """Whether the tokenizer adds its own BOS to a rendered prompt: not for Jinja templates,
    which write bos_token themselves (as apply_chat_template tokenizes)."""
    return tpl.get("style") != "jinja"


def render_prompt(tpl: dict[str, Any], prompt: Any) -> str:
    """The text a model sees before it must produce the completion. For a Jinja template the
    prompt may be a conversation ([{role, content}, ...]: multi-turn context, system)."""
    if tpl["style"] == "jinja":
        return chat_templates.prompt_text(tpl, prompt)
    if tpl["style"] == "chatml" and chat_templates.is_conversation(prompt):
        return chat_templates.prompt_text(chat_templates.chatml_jinja(tpl.get("system") or ""), prompt)
    if tpl["style"] == "chatml":
        head = f"<|im_start|>system\n{tpl['system']}<|im_end|>\n" if tpl.get("system") else ""
        return f"{head}<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    return f"{prompt}{tpl.get('separator', chr(10))}"


def render_completion(tpl: dict[str, Any], completion: str, prompt: Any = "") -> str:
    """The target text after the prompt; the caller appends the tokenizer's EOS, except for
    a Jinja template, whose text ends with the family's own end-of-turn marker."""
    if tpl["style"] == "jinja":
        return chat_templates.completion_text(tpl, prompt, completion)
    if tpl["style"] == "chatml":
        return f"{completion}<|im_end|>"
    return completion
