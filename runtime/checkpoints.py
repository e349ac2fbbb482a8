"""`ft checkpoints FILE NODE`: the checkpoints a train node kept (`keep_checkpoints = N`).

In:  the .ft file (for its .ft/ folder) and a node id such as train.sft.
Out: one line per kept checkpoint, newest run first: step, last logged loss, folder;
     exit 0, or 1 when the node kept none (with the attribute that keeps them).
"""

from __future__ import annotations

import argparse
import sys

from ftlang.runtime.cli import EXIT_FAILED, EXIT_OK, _root


def cmd_checkpoints(args: argparse.Namespace) -> int:
    from ftlang.stdlib.cadence import listing

    found = listing(_root(args) / "cache", args.node)
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
