"""Chat templates of real model families (stdlib/chat_templates.py).

The published templates are fixtures (tests/fixtures/chat_templates/*.jinja: llama3,
qwen2_5, qwen3, gemma and phi3 as trl ships them for exact identity checks, mistral's v3
template as llama.cpp's template tests hold it, and the common ChatML one). ftlang's
presets are its own compact Jinja; these tests hold them to the published bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import run_ft
from ftlang.stdlib import chat_templates as ct
from ftlang.stdlib import examples
from ftlang.stdlib import template as templates
from ftlang.stdlib.spec import StepError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "chat_templates"
FAMILIES = ("llama3", "qwen2_5", "qwen3", "mistral", "gemma", "phi3", "chatml")
# Each family's BOS / EOS, as its tokenizer passes them to the template.
SPECIALS = {"llama3": ("<|begin_of_text|>", "<|eot_id|>"), "mistral": ("<s>", "</s>"),
            "gemma": ("<bos>", "<eos>"), "phi3": ("<s>", "<|endoftext|>"), "qwen2_5": ("", "<|im_end|>"),
            "qwen3": ("", "<|im_end|>"), "chatml": ("", "<|im_end|>")}
MARKERS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<s>", "</s>",
           "[INST]", "[/INST]", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<|system|>",
           "<|user|>", "<|assistant|>", "<|end|>", "<think>", "</think>"]

U = {"role": "user", "content": "What is 2 + 2?"}
A = {"role": "assistant", "content": "It is 4."}
S = {"role": "system", "content": "Answer in one line."}
CONVERSATIONS = {
    "one turn": [U, A],
    "system": [S, U, A],
    "multi-turn": [U, A, {"role": "user", "content": "And 3 + 3?"}, {"role": "assistant", "content": " 6, of course. "}],
    "system, multi-turn": [S, U, A, {"role": "user", "content": "Why?"}, {"role": "assistant", "content": "Counting."}],
    "ends with a user": [U, A, {"role": "user", "content": "More?"}],
    "reasoning": [U, {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"},
                  {"role": "user", "content": "Sure?"}, {"role": "assistant", "content": "<think>\nyes\n</think>\n\nYes."}],
}


def _published(name: str, messages: list[dict[str, str]], generation: bool, **kw: Any) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    bos, eos = SPECIALS[name]
    out, _ = render_jinja_template(conversations=[messages], chat_template=(FIXTURES / f"{name}.jinja").read_text(),
                                   add_generation_prompt=generation, bos_token=bos, eos_token=eos, **kw)
    return str(out[0])


def _ours(name: str, messages: list[dict[str, str]], generation: bool, **kw: Any) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    bos, eos = SPECIALS[name]
    out, _ = render_jinja_template(conversations=[messages], chat_template=ct.PRESETS[name],
                                   add_generation_prompt=generation, bos_token=bos, eos_token=eos, **kw)
    return str(out[0])


def _refuses(name: str, messages: list[dict[str, str]]) -> bool:
    """The published template raises for this conversation (gemma: no system role)."""
    try:
        _published(name, messages, False)
    except Exception:
        return True
    return False


@pytest.mark.parametrize("name", FAMILIES)
def test_presets_render_byte_identical_to_published_templates(name: str) -> None:
    compared = 0
    for label, conv in CONVERSATIONS.items():
        if _refuses(name, conv):
            with pytest.raises(Exception, match="System role not supported"):
                _ours(name, conv, False)  # refused in the same words
            continue
        for generation in (False, True):
            for kw in ({}, {"enable_thinking": False}, {"enable_thinking": True}):
                assert _ours(name, conv, generation, **kw) == _published(name, conv, generation, **kw), \
                    (name, label, generation, kw)
                compared += 1
    assert compared >= 12


class _Tok:
    """The two attributes resolve() reads of a tokenizer."""

    def __init__(self, name: str, chat_template: str | None = None) -> None:
        self.bos_token, self.eos_token = SPECIALS[name]
        self.chat_template = chat_template


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """A small byte-level BPE (the tokenizer tiny() trains) with the families' markers as
    special tokens, as the families' own tokenizers have them."""
    from ftlang.stdlib.model import train_tokenizer

    texts = [m["content"] for conv in CONVERSATIONS.values() for m in conv] * 20
    tok = train_tokenizer(texts, 400)
    tok.add_tokens(MARKERS, special_tokens=True)
    return tok


def _expected_answers(name: str, conv: list[dict[str, str]]) -> list[str]:
    """What must carry loss, written from each family's format (not from the code under
    test): every assistant turn's text and its end-of-turn marker."""
    out = []
    asst = [m["content"] for m in conv if m["role"] == "assistant"]
    for k, text in enumerate(asst):
        last = k == len(asst) - 1
        if name == "llama3":
            out.append(text.strip() + "<|eot_id|>")
        elif name == "mistral":
            # " answer</s>"; with a system message the generation prompt before the turn is
            # not a prefix of the rendering (mistral moves the system text), so the space
            # stays with the prompt.
            out.append((" " if conv[0]["role"] != "system" else "") + text.strip() + "</s>")
        elif name == "gemma":
            out.append(text.strip() + "<end_of_turn>")
        elif name == "phi3":
            out.append(text + "<|end|>" + ("\n<|endoftext|>" if last else ""))
        else:
            out.append(text + "<|im_end|>")
    return out


@pytest.mark.parametrize("name", [f for f in FAMILIES if f != "chatml"])
def test_labels_cover_exactly_the_assistant_turns(name: str, tokenizer: Any) -> None:
    tpl = ct.resolve({"style": name, "system": ""}, _Tok(name))
    for label, conv in CONVERSATIONS.items():
        if _refuses(name, conv) or conv[-1]["role"] != "assistant" or label == "reasoning":
            continue
        pieces = ct.segments(tpl, conv)
        # The pieces join to the published rendering, byte for byte.
        assert "".join(t for t, _ in pieces) == _published(name, conv, False, **ct.DEFAULTS.get(name, {})), (name, label)
        exs, dropped = examples.chat_examples(tokenizer, tpl, [conv], 4096)
        assert dropped == 0
        ids, labels = exs[0]["input_ids"], exs[0]["labels"]
        runs: list[list[int]] = []
        for i, (t, lab) in enumerate(zip(ids, labels, strict=True)):
            if lab == examples.IGNORE:
                continue
            if runs and labels[i - 1] != examples.IGNORE:
                runs[-1].append(t)
            else:
                runs.append([t])
        want = [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in _expected_answers(name, conv)]
        assert runs == want, (name, label, [tokenizer.decode(r) for r in runs])


def test_qwen3_reasoning_is_learned_only_in_the_last_turn(tokenizer: Any) -> None:
    """Qwen3 drops an earlier turn's <think> block: what the model sees is what it learns."""
    tpl = ct.resolve({"style": "qwen3", "system": ""}, _Tok("qwen3"))
    learned = [t for t, carries in ct.segments(tpl, CONVERSATIONS["reasoning"]) if carries]
    assert learned == ["4<|im_end|>", "<think>\nyes\n</think>\n\nYes.<|im_end|>"]


@pytest.mark.parametrize("name", [f for f in FAMILIES if f != "chatml"])
def test_prompt_and_completion_rows(name: str, tokenizer: Any) -> None:
    """sft rows: the prompt ids are the generation prompt; the completion ends with the
    family's marker, and no EOS is appended after it."""
    tpl = ct.resolve({"style": name, "system": ""}, _Tok(name))
    prompt = templates.render_prompt(tpl, "What is 2 + 2?")
    assert prompt == _published(name, [U], True, **ct.DEFAULTS.get(name, {}))
    exs, _ = examples.sft_examples(tokenizer, tpl, ["What is 2 + 2?"], ["It is 4."], 4096)
    ids, labels = exs[0]["input_ids"], exs[0]["labels"]
    n = labels.count(examples.IGNORE)
    assert ids[:n] == examples.prompt_ids(tokenizer, tpl, "What is 2 + 2?")
    assert ids[n:] == tokenizer(_expected_answers(name, [U, A])[0], add_special_tokens=False)["input_ids"]
    assert prompt + templates.render_completion(tpl, "It is 4.", "What is 2 + 2?") in \
        _published(name, [U, A], False, **ct.DEFAULTS.get(name, {})) + "\n"


def test_system_default_and_conversation_prompts() -> None:
    tpl = ct.resolve({"style": "llama3", "system": "Be brief."}, _Tok("llama3"))
    assert templates.render_prompt(tpl, "Hi") == _published("llama3", [{"role": "system", "content": "Be brief."},
                                                                      {"role": "user", "content": "Hi"}], True)
    # A conversation as the prompt (multi-turn context, its own system message) is used as is.
    conv = [S, U, A, {"role": "user", "content": "Why?"}]
    assert templates.render_prompt(tpl, json.dumps(conv)) == _published("llama3", conv, True)
    assert ct.stop_marker(tpl) == "<|eot_id|>"


def test_tokenizer_template_is_the_tokenizers_own() -> None:
    own = (FIXTURES / "qwen2_5.jinja").read_text()
    tpl = ct.resolve({"style": "tokenizer", "system": ""}, _Tok("qwen2_5", own))
    assert tpl["source"] == own
    for conv in CONVERSATIONS.values():
        assert ct.render(tpl, conv) == _published("qwen2_5", conv, False)
    with pytest.raises(StepError, match="has no chat_template"):
        ct.resolve({"style": "tokenizer", "system": ""}, _Tok("qwen2_5"))


def test_chatml_style_matches_the_published_chatml() -> None:
    """The chatml style (kept as it was: its keys are pinned) renders the published ChatML
    prompt; its completion is the published turn without the newline, plus EOS."""
    tpl = {"style": "chatml", "system": "Answer in one line.", "separator": "\n"}
    assert templates.render_prompt(tpl, U["content"]) == _published("chatml", [S, U], True)
    assert _published("chatml", [S, U, A], False) == \
        templates.render_prompt(tpl, U["content"]) + templates.render_completion(tpl, A["content"]) + "\n"
    assert ct.exported_source(tpl) == ct.preset_source("chatml", "Answer in one line.")


def test_preference_prompts_hold_conversations(tmp_path: Path) -> None:
    """DPO/KTO/ORPO rows: a prompt cell that is a conversation (system, earlier turns) is
    rendered with the generation prompt; chosen/rejected as the answer turn."""
    from ftlang.stdlib import preference
    from stepkit import Store

    store = Store(tmp_path)
    context = [S, U, A, {"role": "user", "content": "And 3 + 3?"}]
    data = store.dataset("dataset.prefs", [{"prompt": context, "chosen": "6", "rejected": "7"},
                                           {"prompt": [{"role": "user", "content": "Plain text?"}],
                                            "chosen": "yes", "rejected": "no"}])
    tpl = ct.resolve({"style": "llama3", "system": ""}, _Tok("llama3"))
    rows = preference._rows(data, "dpo", tpl, "<|eot_id|>")
    assert rows["prompt"] == [_published("llama3", context, True), _published("llama3", [
        {"role": "user", "content": "Plain text?"}], True)]
    assert rows["chosen"] == ["6<|eot_id|>", "yes<|eot_id|>"] and rows["rejected"][0] == "7<|eot_id|>"
    with pytest.raises(StepError, match="need a chat template"):
        preference._rows(data, "dpo", {"style": "plain", "system": "", "separator": "\n"}, "</s>")


def test_eval_reads_chat_rows(tmp_path: Path) -> None:
    """eval with messages_field: the turns before the last assistant message are the prompt."""
    from ftlang.stdlib import evaluate
    from stepkit import Store, complete

    store = Store(tmp_path)
    conv = [S, U, A, {"role": "user", "content": "And 3 + 3?"}, {"role": "assistant", "content": "6"}]
    data = store.dataset("dataset.chats", [{"messages": conv}, {"messages": [U]}])
    rows = evaluate._read(data, complete("eval", {"messages_field": "messages"}))
    assert rows.refs == ["6"]
    tpl = ct.resolve({"style": "mistral", "system": ""}, _Tok("mistral"))
    assert templates.render_prompt(tpl, rows.prompts[0]) == _published("mistral", conv[:-1], True)


PIPELINE = """ft 0.1

dataset chats {
  source = jsonl("chats.jsonl")
}

dataset corpus {
  source = jsonl("text.jsonl")
}

model base {
  init = tiny(data = corpus, vocab = 300, hidden = 32, layers = 1, heads = 2, context = 256)
}

template chat = llama3(system = "Answer in one line.")

train sft {
  from = base
  data = chats
  objective = chat
  template = chat
  max_steps = 3
  max_length = 256
}

export release {
  model = sft
  to = "out/release"
}
"""


def test_exported_tokenizer_round_trip(tmp_path: Path, tokenizer: Any) -> None:
    """The fast half of the export test: the template written into a saved tokenizer is
    read back by AutoTokenizer and renders the training text."""
    from transformers import AutoTokenizer

    tpl = ct.resolve({"style": "qwen3", "system": "Answer in one line."}, tokenizer)
    tokenizer.chat_template = ct.exported_source(tpl)
    tokenizer.save_pretrained(str(tmp_path))
    back = AutoTokenizer.from_pretrained(str(tmp_path))
    conv = CONVERSATIONS["multi-turn"]
    assert back.apply_chat_template(conv, tokenize=False) == "".join(t for t, _ in ct.segments(tpl, conv))
    # Without enable_thinking: the default ftlang trained with (no thinking) is in the template.
    assert back.apply_chat_template(conv[:1], tokenize=False, add_generation_prompt=True) \
        == templates.render_prompt(tpl, conv[0]["content"]) == _published("qwen3", [
            {"role": "system", "content": "Answer in one line."}, conv[0]], True, enable_thinking=False)


@pytest.mark.slow
def test_export_renders_what_the_model_trained_on(tmp_path: Path) -> None:
    """End to end: the exported tokenizer's chat_template is the training template, so
    apply_chat_template on the export gives the exact training text."""
    rows = [{"messages": [{"role": "user", "content": f"What is {i} + 1?"},
                          {"role": "assistant", "content": f"It is {i + 1}."}]} for i in range(12)]
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "text.jsonl").write_text("".join(json.dumps({"text": m["content"]}) + "\n"
                                                 for r in rows for m in r["messages"]))
    (tmp_path / "p.ft").write_text(PIPELINE)
    r = run_ft("run", "p.ft", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp_path / "out" / "release"))
    meta = json.loads((tmp_path / "out" / "release" / "ftlang_model.json").read_text())
    trained = meta["template"]
    assert trained["style"] == "jinja" and trained["name"] == "llama3"
    conv = rows[0]["messages"]
    text = tok.apply_chat_template(conv, tokenize=False)
    assert text == "".join(t for t, _ in ct.segments(trained, conv))  # what training tokenized
    published = (FIXTURES / "llama3.jinja").read_text()
    assert text == tok.apply_chat_template([{"role": "system", "content": "Answer in one line."}, *conv],
                                           tokenize=False, chat_template=published)
