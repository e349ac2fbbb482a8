"""The `distributed { ... }` sub-block of `train`: its declaration, compile-time rules, what
enters the node key, and the Trainer settings it becomes inside a torchrun worker.

In:  the checked sub-block (a dict: processes, nodes, strategy, rdzv) and the train block's
     other params (method, device, batch sizes).
Out: diagnostics (FT0360-FT0366), `world(params)` (processes x nodes, strategy), the key
     part (`key_part`), the global batch for `ft plan`, and TrainingArguments keyword
     arguments (`trainer_kwargs`: ddp_backend, fsdp / fsdp_config, a DeepSpeed config).

Nothing here imports torch: the compiler, `ft plan` and the key read it. The launch itself
(torchrun) is ftlang.runtime.launch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

from ftlang.lang.diagnostics import Diagnostic
from ftlang.stdlib.spec import COUNT_LIMIT, Attr, BlockView, Call, Signature, error, points

NAME = "distributed"

STRATEGIES: dict[str, Signature] = {
    "ddp": Signature("ddp", (
        Attr("find_unused_parameters", "bool", False, "let DDP skip parameters a step does not use "
             "(slower; needed when some trainable weights sit out a forward pass)"),
    ), "DistributedDataParallel: every process holds the whole model; gradients are averaged."),
    "fsdp": Signature("fsdp", (
        Attr("sharding", "enum", "full", "full: parameters are resharded after each forward "
             "(least memory); grad_op: they stay gathered until the backward pass (faster)",
             choices=("full", "grad_op")),
        Attr("offload", "bool", False, "keep sharded parameters in CPU memory between uses"),
        Attr("quant_storage", "enum", "none", "QLoRA under FSDP: the dtype the 4-bit weights are "
             "stored in (bitsandbytes' bnb_4bit_quant_storage); FSDP can shard only float storage",
             choices=("none", "bf16", "fp16", "fp32")),
    ), "Fully Sharded Data Parallel, FSDP2 (the Trainer's FSDP integration through accelerate; "
       "CUDA only: accelerate does not shard on the CPU)."),
    "deepspeed": Signature("deepspeed", (
        Attr("stage", "int", 2, "ZeRO stage: 1 shards optimiser state, 2 also gradients, 3 also "
             "parameters", ge=1, le=3),
        Attr("offload", "enum", "none", "ZeRO-Offload: optimiser state (and at stage 3 parameters) "
             "to CPU memory or NVMe", choices=("none", "cpu", "nvme")),
    ), "DeepSpeed ZeRO (the Trainer's DeepSpeed integration; needs the deepspeed package and CUDA)."),
}

SIGNATURE = Signature(NAME, (
    Attr("processes", "any", "auto", "processes per machine (one per GPU); \"auto\": every visible "
         "GPU, 1 without one. Processes > 1 on the CPU use the gloo backend"),
    Attr("nodes", "int", 1, "machines (torchrun --nnodes)", ge=1, le=COUNT_LIMIT),
    Attr("strategy", "call[strategy]", "ddp", "ddp, fsdp(...) or deepspeed(...)"),
    Attr("rdzv", "str", None, "HOST:PORT of the c10d rendezvous (node rank 0's machine); needed "
         "when nodes > 1. `ft run --rdzv` overrides it", semantic=False),
), "Train with several processes or machines: torchrun starts the workers, the Trainer's "
   "DDP / FSDP / DeepSpeed integration syncs them. World size and strategy enter the key.")

DEFAULT_PORT = 29500


def settings(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """The written sub-block with defaults filled, or None when the block has none."""
    block = params.get(NAME)
    if not isinstance(block, Mapping):
        return None
    out: dict[str, Any] = {a.name: a.default for a in SIGNATURE.attrs}
    out.update(block)
    if not isinstance(out["strategy"], Call):
        out["strategy"] = Call(str(out["strategy"]), {a.name: a.default for a in STRATEGIES["ddp"].attrs}, "strategy")
    return out


def visible_gpus() -> int:
    """CUDA devices this process may use, counted without importing torch."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return len([d for d in env.split(",") if d.strip() and d.strip() != "-1"])
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def processes(block: Mapping[str, Any]) -> int:
    value = block.get("processes", "auto")
    if value == "auto":
        return max(1, visible_gpus())
    return int(value)


def world(params: Mapping[str, Any]) -> tuple[int, int, Call | None]:
    """(processes per machine, machines, strategy); (1, 1, None) without the sub-block."""
    block = settings(params)
    if block is None:
        return 1, 1, None
    return processes(block), int(block["nodes"]), block["strategy"]


def launches(params: Mapping[str, Any]) -> bool:
    """Whether the step runs under torchrun: more than one process, or a sharding strategy
    (FSDP / DeepSpeed need a process group even on one device)."""
    procs, nodes, strategy = world(params)
    return strategy is not None and (procs * nodes > 1 or strategy.name != "ddp")


def key_part(value: Any, canon: Any) -> Any:
    """What of the sub-block enters the key: the world size and the strategy (their numerics
    differ from one process), not the rendezvous address. A block that changes nothing
    (one process, ddp) adds nothing, so its key is the plain single-process one."""
    block = settings({NAME: value})
    if block is None:
        return None
    size = processes(block) * int(block["nodes"])
    strategy: Call = block["strategy"]
    if size == 1 and strategy.name == "ddp":
        return None
    return {"world_size": size, "strategy": canon(strategy)}


# What key_part stands for when it adds nothing (the plan's "before" of a first block).
PLAIN_KEY = {"world_size": 1, "strategy": {"call": "ddp", "args": {"find_unused_parameters": False}}}


def global_batch(params: Mapping[str, Any]) -> tuple[int, str]:
    """Examples per optimiser step and how it is made up, for `ft plan`."""
    procs, nodes, _ = world(params)
    batch, accum = int(params.get("batch_size") or 1), int(params.get("grad_accum") or 1)
    return batch * procs * nodes * accum, f"{batch} per device x {procs} processes x {nodes} nodes x {accum} accumulation"


# ---- compile-time rules -----------------------------------------------------------------------

def rules(b: BlockView) -> list[Diagnostic]:
    """Combinations of the sub-block with the rest of the train block that cannot work."""
    block = settings(b.params)
    if block is None:
        return []

    def at(name: str) -> Any:
        return b.spans.get(f"{NAME}.{name}", b.spans.get(NAME, b.span))

    out: list[Diagnostic] = []
    procs = block["processes"]
    if procs != "auto" and (isinstance(procs, bool) or not isinstance(procs, int) or not 1 <= procs <= COUNT_LIMIT):
        shown = b.describe(procs) if not isinstance(procs, (int, float, str)) else repr(procs).replace("'", '"')
        out.append(error("FT0360", f"`processes` must be a whole number >= 1 or \"auto\", found {shown}",
                         at("processes"), "not a process count",
                         help="one process per GPU: e.g. processes = 8, or \"auto\" for every visible GPU"))
    nodes = block["nodes"]
    if isinstance(nodes, int) and nodes > 1 and not block.get("rdzv"):
        out.append(error("FT0361", f"nodes = {nodes} needs a rendezvous address", at("nodes"),
                         "no `rdzv`", help=f"add `rdzv = \"HOST:{DEFAULT_PORT}\"` (node rank 0's machine), or "
                         "leave nodes out and pass `ft run --nnodes N --node-rank K --rdzv HOST:PORT`"))
    strategy = block["strategy"]
    device = b.params.get("device")
    name = getattr(strategy, "name", None)
    if device == "mps" and (procs == "auto" or (isinstance(procs, int) and procs > 1) or name != "ddp"):
        out.append(error("FT0364", "distributed training does not run on Apple MPS", at("processes"),
                         "device = mps", help="use device = cuda (nccl) or device = cpu (gloo)"))
    if name in ("deepspeed", "fsdp") and device in ("cpu", "mps"):
        out.append(error("FT0365", f"{'DeepSpeed' if name == 'deepspeed' else 'FSDP'} shards on CUDA GPUs, "
                         f"not device = {device}", at("strategy"), "needs CUDA",
                         help="use strategy = ddp on this device (accelerate would silently run DDP), "
                         "or device = cuda"))
    adapters = _adapters(b.params.get("method"))
    if name == "fsdp" and strategy.args.get("quant_storage", "none") == "none":
        q = next((a.args.get("quant") for a in adapters if a.name == "lora"
                  and a.args.get("quant") in ("nf4", "fp4")), None)
        if q is not None:
            out.append(error("FT0362", f"QLoRA ({q}) under FSDP needs the 4-bit weights in a float storage dtype",
                             at("strategy"), "fsdp without quant_storage",
                             help="write strategy = fsdp(quant_storage = \"bf16\") (bitsandbytes' "
                             "bnb_4bit_quant_storage): FSDP shards only float tensors"))
    if name == "fsdp" and any(a.args.get("quant") == "int8" for a in adapters if a.name == "lora"):
        out.append(error("FT0362", "8-bit LoRA cannot be sharded by FSDP", at("strategy"), "int8 base",
                         help="use quant = \"nf4\" with fsdp(quant_storage = \"bf16\"), or strategy = ddp"))
    if name == "deepspeed" and strategy.args.get("stage") == 3:
        bad = next((a.name for a in adapters if a.name in ("prefix_tuning", "prompt_tuning")), None)
        if bad is not None:
            out.append(error("FT0363", f"ZeRO-3 cannot train {bad}", at("strategy"), "stage 3",
                             help=f"ZeRO-3 partitions the weights {bad}'s virtual tokens are built from: "
                             "use deepspeed(stage = 2), or lora(...)"))
    return out


def _adapters(method: Any) -> list[Call]:
    """The adapter calls a (possibly swept) method trains: lora(...) itself or dpo's `adapter`."""
    out = []
    for call in points(method):
        if isinstance(call, Call):
            inner = call.args.get("adapter")
            out.append(inner if isinstance(inner, Call) else call)
    return out


# ---- inside a worker ---------------------------------------------------------------------------

def fsdp_settings(strategy: Call, device: str) -> dict[str, Any]:
    """TrainingArguments `fsdp` and `fsdp_config` for fsdp(...), in transformers 5's FSDP2 form."""
    config: dict[str, Any] = {
        "version": 2,
        # accelerate wraps each decoder layer (the model's _no_split_modules) as one unit.
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "reshard_after_forward": strategy.args.get("sharding", "full") == "full",
        "cpu_offload": bool(strategy.args.get("offload")),
        "state_dict_type": "FULL_STATE_DICT",  # whole weights at save time, as without FSDP
        "cpu_ram_efficient_loading": False,
    }
    return {"fsdp": True, "fsdp_config": config}


def check_engaged(trainer: Any, params: Mapping[str, Any]) -> None:
    """The strategy the block names is the one the Trainer runs: accelerate falls back to
    plain DDP without a word where it cannot shard (the CPU), and that must not pass as FSDP."""
    block = settings(params)
    if block is None or not in_worker():
        return
    name = block["strategy"].name
    engaged = {"fsdp": bool(getattr(trainer, "is_fsdp_enabled", False)),
               "deepspeed": bool(getattr(trainer, "is_deepspeed_enabled", False))}.get(name, True)
    if not engaged:
        from ftlang.stdlib.spec import StepError

        kind = getattr(getattr(trainer.accelerator, "state", None), "distributed_type", "?")
        raise StepError(f"strategy = {name}(...) did not engage: accelerate runs this world as {kind}",
                        hint="FSDP and DeepSpeed shard on CUDA GPUs only; use strategy = ddp here")


def deepspeed_config(strategy: Call) -> dict[str, Any]:
    """A DeepSpeed JSON config; "auto" values are filled by the Trainer from its own settings,
    so batch, accumulation, clipping and precision say the same thing in both places."""
    stage = int(strategy.args.get("stage", 2))
    offload = strategy.args.get("offload", "none")
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if offload != "none":
        zero["offload_optimizer"] = {"device": offload, "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": offload, "pin_memory": True}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # rank 0 saves whole weights
    return {"train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
            "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"}, "zero_optimization": zero}


def in_worker() -> bool:
    """Whether this process is one of torchrun's workers."""
    return "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) >= 1 \
        and "TORCHELASTIC_RUN_ID" in os.environ


def trainer_kwargs(params: Mapping[str, Any], device: str) -> dict[str, Any]:
    """TrainingArguments keyword arguments for the strategy; {} outside a torchrun worker."""
    block = settings(params)
    if block is not None and not in_worker() and launches(params):
        # Reached without torchrun (an executor that bypassed runtime.executor.run_step): one
        # process would train under a key that says world_size > 1 or a sharding strategy.
        from ftlang.stdlib.spec import StepError

        raise StepError("this train step declares distributed training but was not started by torchrun",
                        hint="run it through ft run (runtime/launch.py starts the workers)")
    if block is None or not in_worker():
        return {}
    strategy: Call = block["strategy"]
    kw: dict[str, Any] = {"ddp_backend": "gloo" if device == "cpu" else "nccl"}
    if int(block["nodes"]) > 1:  # each machine's cache holds its own checkpoints to resume from
        kw["save_on_each_node"] = True
    if strategy.name == "ddp":
        kw["ddp_find_unused_parameters"] = bool(strategy.args.get("find_unused_parameters"))
    elif strategy.name == "fsdp":
        kw.update(fsdp_settings(strategy, device))
    elif strategy.name == "deepspeed":
        try:
            import deepspeed  # noqa: F401
        except ImportError as e:
            from ftlang.stdlib.spec import StepError

            raise StepError("strategy = deepspeed(...) needs the deepspeed package",
                            hint="pip install deepspeed (on a machine with CUDA and a compiler)") from e
        kw["deepspeed"] = deepspeed_config(strategy)
    return kw


def quant_storage(params: Mapping[str, Any]) -> str | None:
    """bnb_4bit_quant_storage for QLoRA under FSDP (fsdp(quant_storage = ...)), else None."""
    block = settings(params)
    strategy = block["strategy"] if block is not None else None
    if strategy is None or strategy.name != "fsdp":
        return None
    value = strategy.args.get("quant_storage", "none")
    return None if value == "none" else {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[value]


def rank_zero() -> bool:
    """Whether this process writes the artifact: local rank 0 of each machine (DDP keeps
    every replica equal, so each machine's driver commits the same bytes to its cache)."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


def agreed_step(local: int | None, present: Any) -> int | None:
    """The checkpoint step every process resumes from: the newest one that every machine
    has complete. Each machine keeps its own checkpoints (save_on_each_node), and a
    preemption during a save can leave machine 0 at step 200 and machine 1 at step 100;
    resuming each from its own newest would run the ranks at different steps (a hang, or
    silently different optimiser states). `local` is this process's newest complete step,
    `present(step)` whether it has that one. Outside an initialised process group: `local`."""
    try:
        import torch.distributed as dist
    except ImportError:
        return local
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return local
    import torch

    # The gloo backend takes CPU tensors; nccl needs them on this rank's GPU.
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
        else torch.device("cpu")
    step = torch.tensor([local if local is not None else -1], dtype=torch.long, device=device)
    dist.all_reduce(step, op=dist.ReduceOp.MIN)
    chosen = int(step.item())
    if chosen < 0:
        return None  # some machine has no checkpoint: everyone starts from the beginning
    have = torch.tensor([1 if present(chosen) else 0], dtype=torch.long, device=device)
    dist.all_reduce(have, op=dist.ReduceOp.MIN)  # rotated away somewhere: start fresh
    return chosen if int(have.item()) == 1 else None
