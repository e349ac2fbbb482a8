"""Cost of assistant-only labels with a family's chat template (stdlib/chat_templates.py).

Finding the assistant turns renders the conversation several times (prefix renderings and
one re-rendering per turn); the baseline, measured in the same run, is one plain render
of the same conversation through transformers' Jinja engine (what apply_chat_template
costs). Prints both and their ratio per family. Run: .venv/bin/python bench/bench_chat_templates.py
"""

from __future__ import annotations

import time

from ftlang.stdlib import chat_templates as ct

CONV = [{"role": "system", "content": "Answer in one line."}, {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3 + 3?"},
        {"role": "assistant", "content": "6"}]
REPEAT = 500


class _Tok:
    bos_token, eos_token, chat_template = "<s>", "</s>", None


def main() -> None:
    for name in ct.FAMILIES:
        conv = CONV[1:] if name == "gemma" else CONV  # gemma has no system role
        tpl = ct.resolve({"style": name, "system": ""}, _Tok())
        ct.segments(tpl, conv)  # compile the template once
        t = time.perf_counter()
        for _ in range(REPEAT):
            ct.render(tpl, conv)
        base = (time.perf_counter() - t) / REPEAT
        t = time.perf_counter()
        for _ in range(REPEAT):
            ct.segments(tpl, conv)
        seg = (time.perf_counter() - t) / REPEAT
        print(f"{name:8} labels {seg * 1e3:6.2f} ms / conversation, one render {base * 1e3:5.3f} ms, "
              f"ratio {seg / base:4.1f}x")


if __name__ == "__main__":
    main()
