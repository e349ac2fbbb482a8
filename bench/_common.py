"""What several benchmarks do the same way: a project of tiny-model pipelines over one
generated corpus; printing a section and appending it to RESULTS.md."""

from __future__ import annotations

import json
from pathlib import Path


def corpus_project(root: Path, ft_text: str) -> Path:
    """`root` with data/corpus.jsonl (400 short lines) and `ft_text` as p.ft."""
    (root / "data").mkdir(parents=True)
    with (root / "data" / "corpus.jsonl").open("w") as f:
        for i in range(400):
            f.write(json.dumps({"text": f"line {i}: the quick brown fox {i % 13} jumps over {i % 7} dogs"}) + "\n")
    (root / "p.ft").write_text(ft_text)
    return root


def report(text: str, record: bool) -> None:
    """Prints a benchmark's section; appends it to bench/RESULTS.md unless `record` is False."""
    print(text)
    if record:
        with (Path(__file__).resolve().parent / "RESULTS.md").open("a") as f:
            f.write("\n" + text)
