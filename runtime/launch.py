"""Training that outgrows one process: a train node with `distributed { ... }` runs under torchrun.

In:  a node's `Job` (runtime/worker.py) whose params carry the sub-block, the `ft run` flags
     (--processes, --nnodes, --node-rank, --rdzv), and for `ft launch` a .ft file.
Out: the step's meta from the workers (local rank 0 writes the artifact, the driver commits
     it as for any step), per-rank logs in .ft/logs/<node>.rank<N>.log, one clear error
     naming the rank, its last error line and its log when a worker dies; `ft launch slurm`
     an sbatch script and `ft launch skypilot` a SkyPilot task YAML that run `ft run` with
     the multi-node flags on every machine.

torchrun (torch.distributed.run) does the process management and the c10d rendezvous; the
Trainer's DDP / FSDP / DeepSpeed integration the gradient sync (ftlang.stdlib.distributed).
torchrun is started through this module's `__main__`, which asks the kernel to SIGTERM it
when `ft` dies (PR_SET_PDEATHSIG survives exec), so a SIGKILLed `ft` leaves no orphan:
torchrun then stops its workers, which carry the same guard themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftlang.runtime import userfiles

if TYPE_CHECKING:
    from ftlang.runtime.worker import Job

# `ft`'s parser is built from this module on every command: nothing heavier than the
# standard library at import time (the driver imports the rest when a step launches).
DEFAULT_PORT = 29500  # stdlib.distributed.DEFAULT_PORT, without importing it here


@dataclass
class Flags:
    """`ft run`'s multi-node flags that do not change a key (where this machine sits)."""

    node_rank: int = 0
    rdzv: str | None = None


FLAGS = Flags()


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The flags `ft run` and `ft plan` take for distributed training."""
    parser.add_argument("--processes", type=int, metavar="N",
                        help="processes per machine for every train step (distributed { processes })")
    parser.add_argument("--nnodes", type=int, metavar="N", help="machines (distributed { nodes })")
    if parser.prog.endswith(" run"):
        parser.add_argument("--node-rank", type=int, default=0, metavar="K",
                            help="this machine's rank among --nnodes (0: the rendezvous host)")
        parser.add_argument("--rdzv", metavar="HOST:PORT", help="the c10d rendezvous on node rank 0's machine")


def apply_options(program: Any, args: argparse.Namespace) -> str | None:
    """Puts --processes / --nnodes into every train node's sub-block (they change its key, as
    written values would) and keeps --node-rank / --rdzv for the launch. An error, or None."""
    from ftlang.stdlib import distributed

    procs, nnodes = getattr(args, "processes", None), getattr(args, "nnodes", None)
    if procs is not None and procs < 1:
        return f"--processes must be >= 1, found {procs}"
    if nnodes is not None and nnodes < 1:
        return f"--nnodes must be >= 1, found {nnodes}"
    FLAGS.node_rank = int(getattr(args, "node_rank", 0) or 0)
    FLAGS.rdzv = getattr(args, "rdzv", None)
    if nnodes is not None and not 0 <= FLAGS.node_rank < nnodes:
        return f"--node-rank must be in 0..{nnodes - 1}, found {FLAGS.node_rank}"
    if procs is None and nnodes is None:
        return None
    for node in program.nodes.values():
        if node.kind != "train" or not _integrated(node.params.get("method")):
            continue
        block = dict(node.params.get(distributed.NAME) or {})
        if procs is not None:
            block["processes"] = procs
        if nnodes is not None:
            block["nodes"] = nnodes
        node.params[distributed.NAME] = block
    if nnodes is not None and nnodes > 1 and not FLAGS.rdzv and "rdzv" in vars(args):  # ft run, not plan
        written = [n.params[distributed.NAME].get("rdzv") for n in program.nodes.values() if n.kind == "train"]
        if not all(written):
            return f"--nnodes {nnodes} needs --rdzv HOST:PORT (node rank 0's machine)"
    return None


def _integrated(method: Any) -> bool:
    """Whether a method trains through the Trainer (so DDP / FSDP apply): ppo's own loop does not."""
    from ftlang.stdlib import distributed, registry

    decl = registry.METHOD_INDEX.get(getattr(method, "name", ""))
    return decl is None or distributed.NAME not in decl.unused


# ---- the driver's side ---------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _device(params: dict[str, Any]) -> str:
    from ftlang.stdlib import distributed

    choice = params.get("device") or "auto"
    if choice == "auto":
        return "cuda" if distributed.visible_gpus() > 0 else "cpu"
    return str(choice)


def check_gpus(procs: int, device: str) -> None:
    """More CUDA processes than GPUs: one clear error before any worker starts."""
    if device != "cuda":
        return
    import torch
    from ftlang.stdlib.spec import StepError

    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if procs > found:
        names = ", ".join(sorted({torch.cuda.get_device_name(i) for i in range(found)})) if found else "none"
        raise StepError(f"processes = {procs} CUDA processes, but this machine has {found} GPU"
                        f"{'s' if found != 1 else ''} ({names})",
                        hint=f"use processes = \"auto\" or ft run --processes {max(found, 1)}, or set "
                        "CUDA_VISIBLE_DEVICES to the GPUs to use")


def torchrun_argv(procs: int, nodes: int, key: str, *, node_rank: int = 0, rdzv: str | None = None) -> list[str]:
    """The launcher in front of `-m ftlang.runtime.worker JOB`: torchrun, behind the guard."""
    from ftlang.stdlib.spec import StepError

    argv = [sys.executable, "-m", "ftlang.runtime.launch", "--nproc_per_node", str(procs),
            "--nnodes", str(nodes), "--max_restarts", "0"]
    if nodes == 1 and not rdzv:
        # One machine: a private c10d store on a free local port (two ft runs never meet).
        return [*argv, "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{_free_port()}",
                "--rdzv_id", key[:16] or "ft"]
    if not rdzv:
        raise StepError(f"nodes = {nodes} needs a rendezvous address", hint="pass ft run --rdzv HOST:PORT")
    if ":" not in rdzv:
        rdzv = f"{rdzv}:{DEFAULT_PORT}"
    # The key is the run id every machine agrees on without talking: the same node, same key.
    return [*argv, "--node_rank", str(node_rank), "--rdzv_backend", "c10d", "--rdzv_endpoint", rdzv,
            "--rdzv_id", key[:16] or "ft"]


def logs_dir(job: Job) -> Path:
    return job.cache.parent / "logs"


def run_distributed(job: Job, tmp: Path, display: Any) -> dict[str, Any]:
    """Runs the node's step under torchrun and returns local rank 0's meta."""
    from ftlang.runtime.worker import WorkerError, run_job
    from ftlang.stdlib import distributed
    from ftlang.stdlib.spec import StepError

    procs, nodes, strategy = distributed.world(job.params)
    assert strategy is not None
    device = _device(job.params)
    check_gpus(procs, device)
    if strategy.name in ("fsdp", "deepspeed") and device != "cuda":
        raise StepError(f"strategy = {strategy.name}(...) shards on CUDA GPUs; this step runs on {device}",
                        hint="use strategy = ddp here (accelerate would silently run DDP on the CPU)")
    block = distributed.settings(job.params) or {}
    rdzv = FLAGS.rdzv or block.get("rdzv")
    logs = logs_dir(job)
    logs.mkdir(parents=True, exist_ok=True)
    job.logs = logs
    for old in logs.glob(f"{_safe(job.node)}.rank*.log"):
        old.unlink(missing_ok=True)  # ftlang's own logs of an earlier attempt of this node
    if strategy.name == "deepspeed":  # the generated config, for the user to read
        (logs / f"{_safe(job.node)}.deepspeed.json").write_text(
            json.dumps(distributed.deepspeed_config(strategy), indent=1) + "\n")
    size = procs * nodes
    display.log(job.node)(f"torchrun: {procs} process{'es' if procs != 1 else ''} x {nodes} node"
                          f"{'s' if nodes != 1 else ''} ({size} ranks), {strategy.name}, {device}; "
                          f"logs in {logs}/{_safe(job.node)}.rank<N>.log")
    launcher = torchrun_argv(procs, nodes, job.key, node_rank=FLAGS.node_rank, rdzv=rdzv)
    torchrun_log = logs / f"{_safe(job.node)}.torchrun.log"
    try:
        return run_job(job, tmp / "job.pkl", log=display.log(job.node), progress=display.progress(job.node),
                       launcher=launcher, stdout=torchrun_log)
    except WorkerError as exc:
        raise WorkerError(explain_failure(job, tmp, torchrun_log, str(exc)), exc.log) from None


def _safe(node: str) -> str:
    return re.sub(r"[^\w.=-]+", "_", node)


def explain_failure(job: Job, tmp: Path, torchrun_log: Path, fallback: str) -> str:
    """Which rank died, its last error line, and its log: from the ranks' events files, else
    torchrun's failure summary (a rank killed by a signal reports nothing itself)."""
    for events in sorted(tmp.glob("events*.jsonl")):
        for line in events.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "error" in rec:
                rank = rec.get("rank", 0)
                return f"rank {rank} failed: {rec['error'].splitlines()[0][:300]} (log: {_rank_log(job, rank)})"
    text = torchrun_log.read_text(errors="replace") if torchrun_log.exists() else ""
    text = text[text.find("Root Cause"):] if "Root Cause" in text else text  # the first failure
    found = re.search(r"rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", text, re.S)
    if found:
        rank, code = int(found.group(1)), int(found.group(2))
        why = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        last = _last_line(_rank_log(job, rank))
        return f"rank {rank} {why}{': ' + last if last else ''} (log: {_rank_log(job, rank)})"
    return fallback


def _rank_log(job: Job, rank: int) -> Path:
    return logs_dir(job) / f"{_safe(job.node)}.rank{rank}.log"


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception|Killed)\b", ln)]
    return (errors or lines or [""])[-1][:300]


# ---- ft launch: cluster job files ----------------------------------------------------------------

SLURM = """#!/bin/bash
# Written by `ft launch slurm {file} --nodes {nodes} --gpus-per-node {gpus}`.
# Submit with `sbatch {out}`. Every machine runs the same `ft run`; torchrun's c10d
# rendezvous on the first machine joins them. Node rank 0 commits into this folder's .ft/
# cache; the other machines run from a node-local copy of the project with their own cache
# (DDP keeps every replica equal, so each writes the same weights).
#SBATCH --job-name={name}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpus}
#SBATCH --output=.ft/logs/slurm-%j.out
set -euo pipefail
cd "$SLURM_SUBMIT_DIR"
head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export FT_RDZV="$head:{port}"
srun --kill-on-bad-exit=1 bash -c '
  if [ "$SLURM_NODEID" != 0 ]; then  # one project lock per cache: the others use their own
    work="${{TMPDIR:-/tmp}}/ft-$SLURM_JOB_ID"; mkdir -p "$work"
    tar --exclude=./.ft -cf - . | tar -xf - -C "$work"; cd "$work"
  fi
  exec ft run {qfile} --processes {gpus} --nnodes "$SLURM_NNODES" --node-rank "$SLURM_NODEID" --rdzv "$FT_RDZV"'
"""

SKYPILOT = """# Written by `ft launch skypilot {file} --nodes {nodes} --gpus-per-node {gpus}`.
# Start with `sky launch -c {name} {out}`. Every machine runs the same `ft run`; torchrun's
# c10d rendezvous on the first machine joins them.
name: {name}
num_nodes: {nodes}
resources:
  accelerators: {accelerator}:{gpus}
workdir: .
setup: |
  pip install ftlang
run: |
  head=$(echo "$SKYPILOT_NODE_IPS" | head -n 1)
  ft run {qfile} --processes "$SKYPILOT_NUM_GPUS_PER_NODE" --nnodes "$SKYPILOT_NUM_NODES" \\
    --node-rank "$SKYPILOT_NODE_RANK" --rdzv "$head:{port}"
"""


def render(kind: str, file: str, nodes: int, gpus: int, out: str, accelerator: str = "H100") -> str:
    name = "ft-" + re.sub(r"[^a-z0-9-]+", "-", Path(file).stem.lower()).strip("-")
    template = SLURM if kind == "slurm" else SKYPILOT
    return template.format(file=file, qfile=shlex.quote(file), nodes=nodes, gpus=gpus, name=name, out=out,
                           port=DEFAULT_PORT, accelerator=accelerator)


def cmd_launch(args: argparse.Namespace) -> int:
    """`ft launch slurm|skypilot FILE --nodes N --gpus-per-node G [-o OUT]`: checks FILE, then
    writes the job file (never over a file ftlang did not write)."""
    from ftlang.runtime.cli import EXIT_ERRORS, EXIT_FAILED, EXIT_OK, _compile

    if args.nodes < 1 or args.gpus_per_node < 1:
        print("error: --nodes and --gpus-per-node must be >= 1", file=sys.stderr)
        return EXIT_FAILED
    if _compile(args) is None:
        return EXIT_ERRORS
    suffix = ".sbatch" if args.target == "slurm" else ".sky.yaml"
    name = Path(args.file).with_suffix(suffix).name if args.output is None else args.output
    problem = userfiles.refusal(name, userfiles.LAUNCH_MARK, "ft launch")  # '' too: never a silent default
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_FAILED
    out = Path(name)
    text = render(args.target, args.file, args.nodes, args.gpus_per_node, str(out), args.accelerator)
    userfiles.replace(out, text.encode("utf-8"))
    print(f"wrote {out}: {args.nodes} machines x {args.gpus_per_node} GPUs; "
          + (f"submit with `sbatch {out}`" if args.target == "slurm" else f"start with `sky launch {out}`"))
    return EXIT_OK


def add_launch_parser(sub: Any, lazy: Any) -> None:
    la = sub.add_parser("launch", help="write a cluster job (Slurm sbatch, SkyPilot YAML) that runs a file "
                        "on several machines", description="write a cluster job that runs `ft run` on every machine")
    la.add_argument("target", choices=("slurm", "skypilot"), help="the scheduler")
    la.add_argument("file", help="the .ft file")
    la.add_argument("--nodes", type=int, default=1, metavar="N", help="machines")
    la.add_argument("--gpus-per-node", type=int, default=8, metavar="G", help="GPUs (processes) per machine")
    la.add_argument("--accelerator", default="H100", help="SkyPilot accelerator name (default H100)")
    la.add_argument("--output", "-o", help="the file to write (default: FILE.sbatch / FILE.sky.yaml)")
    la.add_argument("--color", choices=("auto", "always", "never"), default="auto", help="colour the diagnostics")
    la.set_defaults(func=lazy("ftlang.runtime.launch:cmd_launch"))


def _guarded_torchrun(argv: list[str]) -> None:
    """torchrun, dying with its parent (`ft`): exec keeps the pdeathsig."""
    from ftlang.runtime.worker import _die_with_parent

    _die_with_parent()
    if os.getppid() == 1:  # the parent died before the guard was set
        sys.exit(1)
    os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", *argv])


if __name__ == "__main__":
    _guarded_torchrun(sys.argv[1:])
