"""`ft checkpoints FILE NODE`: the checkpoints a train node kept (`keep_checkpoints = N`).

In:  the .ft file (for its .ft/ folder) and a node id such as train.sft.
Out: one line per kept checkpoint, newest run first: step, last logged loss, folder;
     exit 0, or 1 when the node kept none (with the attribute that keeps them); exit 2
     when the file does not compile or has no train step of that name.
"""

from __future__ import annotations

import argparse
import sys

from ftlang.runtime.cli import EXIT_ERRORS, EXIT_FAILED, EXIT_OK, _compile, _root


def _unknown(args: argparse.Namespace) -> int | None:
    """EXIT_ERRORS after saying why, unless `args.node` names a train step of the file."""
    program = _compile(args)  # from .ft/progcache when the file is unchanged
    if program is None:
        return EXIT_ERRORS
    trains = [nid for nid, node in program.nodes.items() if node.kind == "train"]
    node = program.nodes.get(args.node)
    if node is not None and node.kind == "train":
        return None
    if node is not None:
        print(f"error: {args.node} is a {node.kind} step; only train steps keep checkpoints",
              file=sys.stderr)
    else:
        from ftlang.lang.diagnostics import did_you_mean

        print(f"error: {args.file} has no step named {args.node}", file=sys.stderr)
        close = did_you_mean(args.node, trains)
        if close:
            print(f"  = help: did you mean {close}?", file=sys.stderr)
    print(f"  = note: its train steps: {', '.join(trains) if trains else 'none'}", file=sys.stderr)
    return EXIT_ERRORS


def cmd_checkpoints(args: argparse.Namespace) -> int:
    from ftlang.stdlib.cadence import listing

    root = _root(args)  # a path that is not a .ft file: one line, before any compile
    refused = _unknown(args)
    if refused is not None:
        return refused
    found = listing(root / "cache", args.node)
    if not found:
        print(f"{args.node}: no kept checkpoints", file=sys.stderr)
        print("  = help: add keep_checkpoints = N (with save_every) to the train block, then ft run",
              file=sys.stderr)
        return EXIT_FAILED
    key = None
    for ck in found:
        if ck["key"] != key:
            key = ck["key"]
            print(f"{args.node} (key {key[:12]})")
        loss = f"loss {ck['loss']:.4f}" if isinstance(ck["loss"], (int, float)) else "loss -"
        print(f"  step {ck['step']:>6}  {loss}  {ck['path']}")
    return EXIT_OK
