"""Chat templates of real model families, rendered with Jinja as transformers renders them.

In:  a template dict (template.json) whose style is a preset (llama3, qwen2_5, qwen3,
     mistral, gemma, phi3) or `tokenizer` (the model's own `chat_template`), a tokenizer,
     and conversations ([{role, content}, ...]).
Out: `resolve` -> a concrete template {"style": "jinja", "source", "specials", ...} (what a
     trained model records); `render` -> text; `segments` -> the conversation as
     (text, carries loss) pieces, assistant turns found by rendering prefixes; the prompt
     and completion texts of prompt/completion rows; the stop marker of a turn.

The presets are compact Jinja of our own (no tool calling: ftlang rows carry role and
content only) that render byte-identically to the families' published templates;
tests/test_chat_templates.py compares them with the published strings
(tests/fixtures/chat_templates/). The rendering engine is transformers' own
(`render_jinja_template`, what `apply_chat_template` calls), so a template exported in
tokenizer_config renders exactly the text the model was trained on.
"""

from __future__ import annotations

import json
from typing import Any

from ftlang.stdlib.spec import StepError

# ---- the presets ----------------------------------------------------------------------------

_CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
           " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
           "{{ '<|im_start|>assistant\\n' }}{% endif %}")

_LLAMA3 = ("{%- for message in messages %}{%- if loop.first %}{{- bos_token }}{%- endif %}"
           "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
           " + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
           "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
           "{%- endif %}")

_QWEN2_5 = ("{%- if messages[0]['role'] == 'system' %}"
            "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
            "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. "
            "You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
            "{%- for message in messages %}{%- if not (loop.first and message.role == 'system') %}"
            "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
            "{%- endif %}{%- endfor %}"
            "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")

# Qwen3: the last assistant turn after the last user message carries a (possibly empty)
# <think> block; earlier ones lose theirs. enable_thinking = false puts the empty block in
# the generation prompt (the non-thinking mode ftlang trains and generates in).
_QWEN3 = ("{%- if messages[0].role == 'system' %}"
          "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}{%- endif %}"
          "{%- set ns = namespace(last_query_index=messages|length - 1, found=false) %}"
          "{%- for message in messages[::-1] %}"
          "{%- if not ns.found and message.role == 'user' and not (message.content.startswith('<tool_response>')"
          " and message.content.endswith('</tool_response>')) %}"
          "{%- set ns.found = true %}{%- set ns.last_query_index = messages|length - 1 - loop.index0 %}"
          "{%- endif %}{%- endfor %}"
          "{%- for message in messages %}"
          "{%- set content = message.content if message.content is string else '' %}"
          "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
          "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}"
          "{%- elif message.role == 'assistant' %}"
          "{%- set reasoning = '' %}"
          "{%- if '</think>' in content %}"
          "{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
          "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
          "{%- endif %}"
          "{%- if loop.index0 > ns.last_query_index and (loop.last or reasoning) %}"
          "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n'"
          " + content.lstrip('\\n') }}"
          "{%- else %}{{- '<|im_start|>assistant\\n' + content }}{%- endif %}"
          "{{- '<|im_end|>\\n' }}"
          "{%- endif %}{%- endfor %}"
          "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
          "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
          "{%- endif %}{%- endif %}")

# Mistral v0.3 (the "v3" template): the system message joins the LAST user message, and
# only when that message ends the conversation (a published quirk, kept byte for byte).
_MISTRAL = ("{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
            "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
            "{%- for message in loop_messages %}{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
            "{{- raise_exception('After the optional system message, conversation roles must alternate "
            "user/assistant/user/assistant/...') }}{%- endif %}{%- endfor %}"
            "{{- bos_token }}"
            "{%- for message in loop_messages %}"
            "{%- if message['role'] == 'user' %}"
            "{%- if loop.last and system_message is defined %}"
            "{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}"
            "{%- else %}{{- '[INST] ' + message['content'] + '[/INST]' }}{%- endif %}"
            "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] | trim + eos_token }}"
            "{%- else %}{{- raise_exception('Only user and assistant roles are supported, with the exception "
            "of an initial optional system message!') }}{%- endif %}{%- endfor %}")

_GEMMA = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
          "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
          "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}")

_PHI3 = ("{% for message in messages %}{% if message['role'] in ('system', 'user', 'assistant') %}"
         "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}{% endif %}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}")

PRESETS: dict[str, str] = {
    "llama3": _LLAMA3, "qwen2_5": _QWEN2_5, "qwen3": _QWEN3, "mistral": _MISTRAL,
    "gemma": _GEMMA, "phi3": _PHI3, "chatml": _CHATML,
}
FAMILIES = {
    "llama3": "Llama 3 (meta-llama/Meta-Llama-3-8B-Instruct)",
    "qwen2_5": "Qwen2.5 Instruct (default system message: You are Qwen, ...)",
    "qwen3": "Qwen3 (non-thinking mode: an empty <think> block before each answer)",
    "mistral": "Mistral v0.3 ([INST] ... [/INST]; a system message joins the last user message)",
    "gemma": "Gemma and Gemma 2 instruct (no system role)",
    "phi3": "Phi-3 instruct (<|user|> ... <|end|>)",
}
# Variables a preset renders with unless the caller passes them (written into the resolved
# source, so the exported template has the same defaults): qwen3 trains without thinking.
DEFAULTS: dict[str, dict[str, bool]] = {"qwen3": {"enable_thinking": False}}
# Content that cannot occur in real text (Unicode private use): the diff that finds a turn.
_MARK = "\ue000"


def preset_source(name: str, system: str = "") -> str:
    """The Jinja source of a preset; with `system`, conversations without a system message
    get that one first (the exported template does the same)."""
    return _with_system(PRESETS[name], system)


def _with_system(source: str, system: str) -> str:
    if not system:
        return source
    # json.dumps is a valid Jinja string literal (its escapes are Python's).
    head = ("{%- if not messages or messages[0]['role'] != 'system' %}{%- set messages = "
            "[{'role': 'system', 'content': " + json.dumps(system) + "}] + messages %}{%- endif %}")
    return head + source


def _with_defaults(source: str, defaults: dict[str, bool]) -> str:
    head = "".join(f"{{%- if {k} is not defined %}}{{%- set {k} = {json.dumps(v)} %}}{{%- endif %}}"
                   for k, v in defaults.items())
    return head + source


def resolve(tpl: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """A template dict ready to render: presets and `tokenizer` become {"style": "jinja"} with
    their source and the tokenizer's special tokens. plain and chatml are returned as they are."""
    style = tpl.get("style")
    if style == "jinja" or style not in (*PRESETS, "tokenizer") or style == "chatml":
        return tpl
    system = str(tpl.get("system") or "")
    if style == "tokenizer":
        own = getattr(tokenizer, "chat_template", None)
        if isinstance(own, dict):
            own = own.get("default")
        if not isinstance(own, str) or not own.strip():
            raise StepError("`template = tokenizer()` but the model's tokenizer has no chat_template",
                            hint="use a preset of the model's family, e.g. template chat = llama3(), "
                                 "or chatml()")
        source, name, defaults = _with_system(own, system), "tokenizer", {}
    else:
        defaults = DEFAULTS.get(style, {})
        source, name = _with_defaults(tpl.get("source") or preset_source(style, system), defaults), style
    specials = {k: getattr(tokenizer, k, None) or "" for k in ("bos_token", "eos_token")}
    out = {"style": "jinja", "name": name, "system": system, "source": source, "specials": specials,
           # The defaults flipped: the prefix rendering's second try (see segments).
           "alt": {k: not v for k, v in defaults.items()}}
    out["stop"] = stop_marker(out)
    return out


# ---- rendering -----------------------------------------------------------------------------

def render(tpl: dict[str, Any], messages: list[dict[str, str]], *, generation: bool = False,
           options: bool = True) -> str:
    """The text transformers' apply_chat_template gives for `messages` (tokenize=False);
    `options = False` renders with the preset's defaults flipped (qwen3 thinking)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    if tpl.get("style") != "jinja":
        raise StepError(f"internal: template style {tpl.get('style')!r} was not resolved before rendering")
    try:
        texts, _ = render_jinja_template(conversations=[messages], chat_template=tpl["source"],
                                         add_generation_prompt=generation,
                                         **tpl.get("specials", {}), **({} if options else tpl.get("alt", {})))
    except Exception as e:  # jinja2 raises TemplateError (raise_exception) or its own errors
        raise StepError(f"the {tpl.get('name')} chat template cannot render this conversation: {e}",
                        hint=_render_hint(tpl, messages)) from e
    return str(texts[0])


def _render_hint(tpl: dict[str, Any], messages: list[dict[str, str]]) -> str:
    roles = " -> ".join(m["role"] for m in messages)
    return f"the conversation's roles are {roles}; this template's family may need alternating " \
           "user/assistant turns, or refuse a system message (gemma)"


def _prefix_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _content_span(tpl: dict[str, Any], messages: list[dict[str, str]], i: int, text: str) -> tuple[int, int]:
    """Where message i's content lies in `text` (the rendering of `messages`): render the same
    conversation with that content replaced by a mark no text holds, and diff. Trimming
    templates, a system message moved elsewhere (mistral) or a turn rendered differently when
    last (qwen3) are all handled: only that one content changes."""
    other = render(tpl, [*messages[:i], {**messages[i], "content": _MARK}, *messages[i + 1:]])
    pre = _prefix_len(text, other)
    suf = _prefix_len(text[pre:][::-1], other[pre:][::-1])
    return pre, len(text) - suf


def segments(tpl: dict[str, Any], messages: list[dict[str, str]]) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, carries loss) pieces that join to exactly the
    template's rendering. An assistant turn's piece starts where the generation prompt
    before it ends (prefix rendering) and runs to the end of its end-of-turn marker; what
    follows the marker (a newline) and everything else carry no loss."""
    full = render(tpl, messages)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        cs, ce = _content_span(tpl, messages, i, full)
        # The generation prompt before this turn; without the preset's options too, for a
        # turn that holds what the options leave out (a qwen3 turn with its own reasoning).
        start = cs
        for options in (True, False) if i else ():
            prompt = render(tpl, messages[:i], generation=True, options=options)
            if full.startswith(prompt) and len(prompt) <= cs:
                start = len(prompt)
                break
        # The end-of-turn marker: what the conversation ending at this turn renders after the
        # content, as far as the full rendering agrees (a final EOS only at the very end).
        upto = messages[:i + 1]
        alone, ace = (full, ce) if i == len(messages) - 1 else (render(tpl, upto), None)
        if ace is None:
            ace = _content_span(tpl, upto, i, alone)[1]
        tail = full[ce:ce + _prefix_len(full[ce:], alone[ace:])]
        if ce + len(tail) < len(full) and ace + len(tail) < len(alone):
            # Cut by a mismatch (phi3: `<|end|>\n<|user|>` vs `<|end|>\n<|endoftext|>`): back
            # to the end of the last whole marker or whitespace, never inside the next one.
            tail = tail[:max(tail.rfind(">") + 1, max(tail.rfind(c) for c in " \n"), 0)]
        end = ce + len(tail.rstrip())
        if spans and start < spans[-1][1]:
            start = spans[-1][1]
        spans.append((start, max(start, end)))
    out: list[tuple[str, bool]] = []
    at = 0
    for s, e in spans:
        if s > at:
            out.append((full[at:s], False))
        if e > s:
            out.append((full[s:e], True))
        at = max(at, e)
    if at < len(full):
        out.append((full[at:], False))
    return out


def conversation(tpl: dict[str, Any], prompt: Any) -> list[dict[str, str]]:
    """A prompt cell as messages: a list of {role, content} (multi-turn context, system) or
    JSON text of one is used as is; any other value is one user message."""
    msgs = prompt
    if isinstance(prompt, str) and prompt.lstrip().startswith("["):
        try:
            msgs = json.loads(prompt)
        except ValueError:
            msgs = prompt
    if isinstance(msgs, list) and msgs and all(isinstance(m, dict) and "role" in m for m in msgs):
        return [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in msgs]
    return [{"role": "user", "content": str(prompt)}]


def is_conversation(prompt: Any) -> bool:
    """A prompt cell that holds messages rather than one user text."""
    return conversation({}, prompt) != [{"role": "user", "content": str(prompt)}]


def chatml_jinja(system: str) -> dict[str, Any]:
    """The chatml style as a resolved Jinja template (for conversation prompts)."""
    return {"style": "jinja", "name": "chatml", "source": preset_source("chatml", system), "specials": {},
            "alt": {}, "stop": "<|im_end|>"}


def prompt_text(tpl: dict[str, Any], prompt: Any) -> str:
    """What the model sees before it answers: the conversation with the generation prompt."""
    return render(tpl, conversation(tpl, prompt), generation=True)


def completion_text(tpl: dict[str, Any], prompt: Any, completion: str) -> str:
    """The answer's text as the template renders it after `prompt_text`, with its end-of-turn
    marker (e.g. `Paris<|eot_id|>`); nothing more need be appended."""
    msgs = [*conversation(tpl, prompt), {"role": "assistant", "content": str(completion)}]
    learn = [t for t, carries in segments(tpl, msgs) if carries]
    return learn[-1] if learn else ""


def stop_marker(tpl: dict[str, Any]) -> str:
    """The text that ends an assistant turn (<|eot_id|>, <|im_end|>, </s>, <end_of_turn>,
    <|end|>): generation stops there."""
    probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": _MARK}]
    text = render(tpl, probe)
    tail = text[text.rfind(_MARK) + 1:].strip()
    return tail.split("\n")[0] if tail else ""


def exported_source(tpl: dict[str, Any] | None) -> str | None:
    """The Jinja chat_template an export's tokenizer gets: the one the model was trained
    with (chatml as its published template with the system message), None for plain text
    or no template (the tokenizer keeps its own)."""
    if not tpl:
        return None
    if tpl.get("style") == "jinja":
        return str(tpl["source"])
    if tpl.get("style") == "chatml":
        return preset_source("chatml", str(tpl.get("system") or ""))
    return None
