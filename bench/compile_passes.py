"""Where `ft check`'s time goes: each compiler pass timed in-process on a generated file
(bench_check.generate), after the imports, which are timed apart.

    .venv/bin/python bench/compile_passes.py [--nodes 1000] [--repeat 3]

Prints the best of --repeat for every pass of ftlang.compiler.PASSES. No baseline: this
is a profile for the next optimisation, not a benchmark; nothing is appended to RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_check import generate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    t0 = time.perf_counter()
    import duckdb  # noqa: F401 - the libraries the passes import, timed here once
    import lark  # noqa: F401
    import networkx  # noqa: F401
    import sqlglot  # noqa: F401

    from ftlang import compiler

    imports = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = generate(Path(tmp) / "p", args.nodes)
        text = path.read_text()
        best: dict[str, float] = {}
        for _ in range(args.repeat):
            c = compiler.Compilation(text, path.name, path.parent)
            for p in compiler.PASSES:
                t = time.perf_counter()
                p.run(c)
                best[p.name] = min(best.get(p.name, 1e9), time.perf_counter() - t)
    print(f"{args.nodes} nodes ({len(text.splitlines())} lines), best of {args.repeat}:")
    print(f"  imports (duckdb, lark, networkx, sqlglot, ftlang.compiler): {imports:.3f} s (first time)")
    for name, s in best.items():
        print(f"  {name:24s} {s:.3f} s")
    print(f"  passes total             {sum(best.values()):.3f} s")


if __name__ == "__main__":
    main()
