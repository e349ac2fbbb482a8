"""Writes the small tasks every method is measured on (seeded; the files are committed).

  tasks.jsonl    "Reverse: a b c" -> "c b a" (SFT warm-up, and the prompts' source)
  count.jsonl    "Count: a b" -> "2" (what the adapters learn on top of the warm model)
  count_heldout.jsonl  held-out rows of the count task (exact match after tuning)
  prefs.jsonl    prompt / chosen (the reversal) / rejected (a bad answer): DPO, IPO, ORPO, RM
  marks.jsonl    prompt / completion / label (true when good): KTO
  prompts.jsonl  prompts for online RL (GRPO, RLOO, online DPO)

Run: python examples/methods/make_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORDS = ("cat", "dog", "sun", "moon", "tree", "bird", "fish", "star")
BAD = ("no", "I do not know", "cat cat cat")


def _write(name: str, rows: list[dict]) -> None:
    (HERE / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def main() -> None:
    rng = random.Random(3)
    tasks, prefs, marks = [], [], []
    for i in range(200):
        ws = rng.sample(WORDS, 3)
        p, c = "Reverse: " + " ".join(ws), " ".join(reversed(ws))
        bad = rng.choice(BAD)
        tasks.append({"prompt": p, "completion": c})
        prefs.append({"prompt": p, "chosen": c, "rejected": bad, "completion": c})
        marks.append({"prompt": p, "completion": c if i % 2 else bad, "label": bool(i % 2)})
    count = []
    crng = random.Random(1)
    for _ in range(240):
        ws = crng.sample(WORDS, crng.randint(2, 4))
        count.append({"prompt": "Count: " + " ".join(ws), "completion": str(len(ws))})
    _write("tasks.jsonl", tasks)
    _write("prefs.jsonl", prefs)
    _write("marks.jsonl", marks)
    _write("prompts.jsonl", tasks[:48])
    _write("count.jsonl", count[:200])
    _write("count_heldout.jsonl", count[200:])


if __name__ == "__main__":
    main()
