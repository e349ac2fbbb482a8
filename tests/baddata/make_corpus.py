"""Writes the bad-data corpus: one project folder per case (see cases.py).

    python tests/baddata/make_corpus.py OUT      # OUT/<case name>/pipeline.ft + data/
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # so `baddata` imports as a package

from baddata.cases import CASES, build  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: make_corpus.py OUT", file=sys.stderr)
        return 2
    out = Path(argv[0])
    for case in CASES:
        try:
            build(case, out / case.name)
        except (OSError, NotImplementedError) as e:  # no FIFOs or symlinks on this system
            print(f"{case.name}: skipped ({e})", file=sys.stderr)
            continue
        print(f"{case.name}: ft {case.command} {case.ft} -> exit {case.exit}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
