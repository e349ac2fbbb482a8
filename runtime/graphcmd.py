"""`ft graph`: the dependency graph as DOT, mermaid, SVG or PNG (Graphviz's `dot`).

In:  the parsed arguments (file, --format, --output). Out: the graph on stdout, or in the
     --output file, marked as ft graph's (runtime/userfiles.py): a file without the mark
     is never replaced.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ftlang.runtime import userfiles
from ftlang.runtime.cli import EXIT_ERRORS, EXIT_FAILED, EXIT_OK, _compile


def graph_dot(program: Any) -> str:
    lines = ["digraph ft {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb"];']
    for n in program.order():
        lines.append(f'  "{n}";')
    for u, v, d in program.graph.edges(data=True):
        label = f' [label="{d["port"]}"]' if d.get("port") else ""
        lines.append(f'  "{u}" -> "{v}"{label};')
    lines.append("}")
    return "\n".join(lines)


def graph_mermaid(program: Any) -> str:
    ids = {n: f"n{i}" for i, n in enumerate(program.order())}
    lines = ["flowchart LR", *(f'  {ids[n]}["{n}"]' for n in ids)]
    for u, v, d in program.graph.edges(data=True):
        label = f'|{d["port"]}|' if d.get("port") else ""
        lines.append(f"  {ids[u]} -->{label} {ids[v]}")
    return "\n".join(lines)


def cmd_graph(args: argparse.Namespace) -> int:
    program = _compile(args)
    if program is None:
        return EXIT_ERRORS
    if args.output is not None and (problem := userfiles.refusal(args.output, userfiles.GRAPH_MARK, "ft graph")):
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_FAILED  # checked before rendering: nothing is written
    if args.format in ("svg", "png"):
        import shutil
        import subprocess

        dot = shutil.which("dot")
        if dot is None:
            print("error: rendering SVG/PNG needs Graphviz's `dot` program; install it "
                  "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz), "
                  "or use --format dot / --format mermaid", file=sys.stderr)
            return EXIT_FAILED
        out = subprocess.run([dot, f"-T{args.format}"], input=graph_dot(program).encode(),
                             capture_output=True, check=False)
        if out.returncode != 0:
            print(f"error: dot failed: {out.stderr.decode(errors='replace')}", file=sys.stderr)
            return EXIT_FAILED
        data = out.stdout
    else:
        data = ((graph_dot if args.format == "dot" else graph_mermaid)(program) + "\n").encode()
    if args.output is not None:
        userfiles.replace(Path(args.output), userfiles.mark_graph(data, args.format))
    else:
        sys.stdout.buffer.write(data)
    return EXIT_OK
