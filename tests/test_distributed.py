"""distributed { ... } without starting a worker: keys, plan, Trainer settings, ft launch files.

(The compile errors are golden fixtures: tests/fixtures/err/distributed_*.ft. The torchrun
runs are in test_distributed_run.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, run_ft
from ftlang.compiler import compile_source
from ftlang.runtime import launch
from ftlang.runtime.hashing import StatCache
from ftlang.runtime.keys import components, node_key
from ftlang.stdlib import distributed
from ftlang.stdlib.spec import Call, StepError

LAUNCH = FIXTURES / "launch"
HEAD = 'ft 0.1\ndataset tasks { source = jsonl("data/tasks.jsonl") }\n' \
       "model base { init = tiny(hidden = 32, layers = 1, heads = 2, data = tasks) }\n"


def _train(tmp: Path, block: str = "", extra: str = "") -> dict:
    """The key components of `train.sft`, with `block` inside it."""
    shutil.copytree(LAUNCH / "data", tmp / "data", dirs_exist_ok=True)
    src = HEAD + f"train sft {{\n  from = base\n  data = tasks\n  batch_size = 2\n{extra}{block}}}\n"
    program = compile_source(src, "p.ft", tmp)
    node = program.nodes["train.sft"]
    from ftlang.runtime.store import Entry

    inputs = {u: Entry("k", u, "d" * 64, {}, {}) for u in ("dataset.tasks", "model.base")}
    return components(node, inputs, StatCache(tmp / "stat.json"))


def test_a_plain_train_and_one_ddp_process_keep_the_single_process_key(tmp_path: Path) -> None:
    plain = _train(tmp_path)
    one = _train(tmp_path, "  distributed {\n    processes = 1\n    strategy = ddp\n  }\n")
    assert "distributed" not in plain["params"]
    assert node_key(one) == node_key(plain)


def test_world_size_and_strategy_enter_the_key_but_not_the_rendezvous(tmp_path: Path) -> None:
    plain = _train(tmp_path)
    two = _train(tmp_path, "  distributed {\n    processes = 2\n  }\n")
    assert two["params"]["distributed"]["world_size"] == 2
    assert node_key(two) != node_key(plain)
    nodes = _train(tmp_path, '  distributed {\n    processes = 1\n    nodes = 2\n    rdzv = "a:1"\n  }\n')
    moved = _train(tmp_path, '  distributed {\n    processes = 1\n    nodes = 2\n    rdzv = "b:2"\n  }\n')
    assert node_key(nodes) == node_key(moved) != node_key(plain)  # same world size 2, other host
    assert node_key(nodes) == node_key(two)  # 1 x 2 machines is the same world as 2 x 1
    fsdp = _train(tmp_path, "  distributed {\n    processes = 1\n    strategy = fsdp\n  }\n")
    assert fsdp["params"]["distributed"]["strategy"]["call"] == "fsdp"
    assert node_key(fsdp) != node_key(plain)


def _project(tmp: Path) -> Path:
    shutil.copytree(LAUNCH / "data", tmp / "data")
    shutil.copy(LAUNCH / "ddp.ft", tmp / "ddp.ft")
    return tmp


def test_plan_prints_the_global_batch_and_names_the_world_size(tmp_path: Path) -> None:
    proj = _project(tmp_path)
    out = run_ft("plan", "ddp.ft", cwd=proj)
    assert out.returncode == 0, out.stderr
    assert "global batch 4 = 2 per device x 2 processes x 1 nodes x 1 accumulation" in out.stdout
    assert "global batch 16 = 4 per device x 4 processes" in run_ft("plan", "ddp.ft", "--processes", "4",
                                                                    cwd=proj).stdout
    bad = run_ft("plan", "ddp.ft", "--processes", "0", cwd=proj)
    assert bad.returncode != 0 and "--processes must be >= 1, found 0" in bad.stderr


def test_the_plan_names_a_changed_world_size_as_the_reason(tmp_path: Path) -> None:
    from ftlang.runtime.planner import explain

    one, two = _train(tmp_path), _train(tmp_path, "  distributed {\n    processes = 2\n  }\n")
    program = compile_source(HEAD + "train sft {\n  from = base\n  data = tasks\n}\n", "p.ft", tmp_path)
    node = program.nodes["train.sft"]
    state = {"key": node_key(one), "components": one}
    assert explain(node, two, state, node_key(two)) == ["distributed.world_size 1 -> 2"]


def test_trainer_settings_for_each_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    ddp = {"distributed": {"processes": 2}}
    assert distributed.trainer_kwargs({"distributed": {"processes": 1}}, "cpu") == {}  # one process
    with pytest.raises(StepError, match="not started by torchrun"):  # never one process silently
        distributed.trainer_kwargs(ddp, "cpu")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    assert distributed.trainer_kwargs(ddp, "cpu") == {"ddp_backend": "gloo", "ddp_find_unused_parameters": False}
    assert distributed.trainer_kwargs(ddp, "cuda")["ddp_backend"] == "nccl"
    fsdp = Call("fsdp", {"sharding": "grad_op", "offload": True, "quant_storage": "bf16"}, "strategy")
    kw = distributed.trainer_kwargs({"distributed": {"strategy": fsdp}}, "cuda")
    assert kw["fsdp"] is True and kw["fsdp_config"] == {
        "version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "reshard_after_forward": False,
        "cpu_offload": True, "state_dict_type": "FULL_STATE_DICT", "cpu_ram_efficient_loading": False}
    assert distributed.quant_storage({"distributed": {"strategy": fsdp}}) == "bfloat16"
    ds = distributed.deepspeed_config(Call("deepspeed", {"stage": 3, "offload": "cpu"}, "strategy"))
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["offload_param"] == {"device": "cpu", "pin_memory": True}
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert ds["train_micro_batch_size_per_gpu"] == "auto"  # the Trainer fills it from batch_size
    two = distributed.deepspeed_config(Call("deepspeed", {"stage": 2, "offload": "none"}, "strategy"))
    assert "offload_optimizer" not in two["zero_optimization"]


def test_the_deepspeed_config_is_accepted_by_the_trainer_integration() -> None:
    """transformers' own parser of a DeepSpeed config reads the generated one (no deepspeed
    package needed to parse): stage and offload come through."""
    pytest.importorskip("deepspeed")
    from transformers.integrations.deepspeed import HfDeepSpeedConfig

    cfg = HfDeepSpeedConfig(distributed.deepspeed_config(Call("deepspeed", {"stage": 3, "offload": "cpu"})))
    assert cfg.is_zero3() and cfg.is_offload()


def test_more_cuda_processes_than_gpus_is_one_error_before_any_worker() -> None:
    if os.environ.get("CUDA_VISIBLE_DEVICES") is None and distributed.visible_gpus() > 0:
        pytest.skip("this machine has GPUs")
    with pytest.raises(StepError, match=r"processes = 8 CUDA processes, but this machine has 0 GPUs \(none\)"):
        launch.check_gpus(8, "cuda")
    launch.check_gpus(8, "cpu")  # gloo: any number of processes


def test_torchrun_argv_single_and_multi_node() -> None:
    one = launch.torchrun_argv(2, 1, "k" * 64)
    assert one[1:3] == ["-m", "ftlang.runtime.launch"] and "--nproc_per_node" in one
    assert one[one.index("--rdzv_endpoint") + 1].startswith("127.0.0.1:")
    many = launch.torchrun_argv(8, 4, "k" * 64, node_rank=3, rdzv="head")
    assert many[many.index("--rdzv_endpoint") + 1] == "head:29500"
    assert many[many.index("--node_rank") + 1] == "3" and many[many.index("--rdzv_backend") + 1] == "c10d"
    with pytest.raises(StepError, match="needs a rendezvous"):
        launch.torchrun_argv(8, 4, "k" * 64)


@pytest.mark.parametrize("target,suffix", [("slurm", "sbatch"), ("skypilot", "sky.yaml")])
def test_ft_launch_writes_the_golden_job_file(tmp_path: Path, target: str, suffix: str) -> None:
    proj = _project(tmp_path)
    out = run_ft("launch", target, "ddp.ft", "--nodes", "4", "--gpus-per-node", "8", cwd=proj)
    assert out.returncode == 0, out.stderr
    written = (proj / f"ddp.{suffix}").read_text()
    golden = LAUNCH / "golden" / f"ddp.{suffix}"
    if os.environ.get("FT_UPDATE_GOLDEN"):
        golden.write_text(written)
    assert written == golden.read_text()
    (proj / f"ddp.{suffix}").write_text("mine\n")  # a file ftlang did not write is never replaced
    again = run_ft("launch", target, "ddp.ft", "--nodes", "4", "--gpus-per-node", "8", cwd=proj)
    assert again.returncode == 1 and "not written by ft launch" in again.stderr
    assert (proj / f"ddp.{suffix}").read_text() == "mine\n"


def test_the_sbatch_script_runs_the_multi_node_command() -> None:
    text = (LAUNCH / "golden" / "ddp.sbatch").read_text()
    assert "#SBATCH --nodes=4" in text and "#SBATCH --gpus-per-node=8" in text
    assert ('ft run ddp.ft --processes 8 --nnodes "$SLURM_NNODES" --node-rank "$SLURM_NODEID" '
            '--rdzv "$FT_RDZV"') in text


def test_the_generated_fsdp_config_is_what_transformers_reads_into_the_plugin() -> None:
    """TrainingArguments turns the fsdp_config into accelerate's FSDP plugin arguments."""
    from transformers import TrainingArguments

    kw = distributed.fsdp_settings(Call("fsdp", {"sharding": "full", "offload": True}, "strategy"), "cuda")
    args = TrainingArguments(output_dir="/tmp/ft-unused", use_cpu=True, report_to="none", **kw)
    plugin = args.fsdp_plugin_args
    assert plugin["fsdp_version"] == 2 and plugin["cpu_offload"] is True
    assert plugin["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP" and plugin["reshard_after_forward"] is True
    assert plugin["state_dict_type"] == "FULL_STATE_DICT"


def test_fsdp_on_the_cpu_fails_before_any_worker_starts(tmp_path: Path) -> None:
    """accelerate 1.15 shards only on GPUs: on the CPU (gloo) it runs plain DDP without a word
    (its MULTI_CPU state never takes the FSDP plugin), so ftlang refuses instead."""
    from ftlang.runtime.worker import Job

    strategy = Call("fsdp", {"sharding": "full", "offload": False, "quant_storage": "none"}, "strategy")
    job = Job(node="train.x", name="x", run="nothing:here", params={"distributed": {"processes": 2,
              "strategy": strategy}, "device": "cpu"}, out=tmp_path / "out", project=tmp_path,
              cache=tmp_path / ".ft" / "cache", key="k" * 64, events=tmp_path / "events.jsonl")
    with pytest.raises(StepError, match=r"^strategy = fsdp\(...\) shards on CUDA GPUs; this step runs on cpu$"):
        launch.run_distributed(job, tmp_path, None)
    assert not (tmp_path / "job.pkl").exists()  # no worker was started


def test_a_strategy_the_trainer_did_not_engage_fails_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    fell_back = SimpleNamespace(is_fsdp_enabled=False, accelerator=SimpleNamespace(
        state=SimpleNamespace(distributed_type="MULTI_CPU")))
    params = {"distributed": {"strategy": Call("fsdp", {}, "strategy")}}
    with pytest.raises(StepError, match=r"strategy = fsdp\(...\) did not engage: .* as MULTI_CPU"):
        distributed.check_engaged(fell_back, params)
    distributed.check_engaged(SimpleNamespace(is_fsdp_enabled=True), params)
    distributed.check_engaged(fell_back, {"distributed": {"processes": 2}})  # ddp: nothing to check


AGREE = """
import json, os, sys
from pathlib import Path
import torch.distributed as dist
from ftlang.stdlib.trainer import _agreed_resume
dist.init_process_group("gloo")
folder = Path(sys.argv[1])
got = _agreed_resume(folder)
print(json.dumps(got.name if got else None))
dist.destroy_process_group()
"""


def _checkpoints(folder: Path, complete: list[int], partial: list[int]) -> Path:
    for step in complete:
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        (folder / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    for step in partial:  # a save cut short: no trainer_state.json
        (folder / f"checkpoint-{step}").mkdir(parents=True)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _agree(tmp_path: Path, machines: list[tuple[list[int], list[int]]]) -> list[str | None]:
    """Each 'machine' a gloo rank with its own checkpoint folder: what each resumes from."""
    import json
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank, (complete, partial) in enumerate(machines):
        folder = _checkpoints(tmp_path / f"m{rank}", complete, partial)
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                   WORLD_SIZE=str(len(machines)))
        procs.append(subprocess.Popen([sys.executable, "-c", AGREE, str(folder)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(machines), [e for _, e in outs]
    return [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]


@pytest.mark.parametrize("machines, expected", [
    ([([4, 8], []), ([4, 8], [])], "checkpoint-8"),            # the same on both: the newest
    ([([4, 8], []), ([4], [8])], "checkpoint-4"),              # machine 1's save of 8 was cut short
    ([([4, 8], []), ([], [])], None),                          # machine 1 has none: start over
    ([([8], []), ([4, 8], [])], "checkpoint-8"),
    ([([4], []), ([8], [])], None),                            # 4 rotated away on machine 1
])
def test_every_machine_resumes_from_the_same_checkpoint(tmp_path: Path, machines: list, expected: str | None) -> None:
    assert _agree(tmp_path, machines) == [expected] * len(machines)


@pytest.mark.parametrize("name,said", [("", "-o needs a file name"), ("nosuch/x.sbatch", "no such folder")])
def test_ft_launch_o_empty_or_into_a_missing_folder_is_an_error(tmp_path: Path, name: str, said: str) -> None:
    proj = _project(tmp_path)
    out = run_ft("launch", "slurm", "ddp.ft", "--nodes", "2", "--gpus-per-node", "1", "-o", name, cwd=proj)
    assert out.returncode == 1 and said in out.stderr, out.stdout + out.stderr
    assert not (proj / "ddp.sbatch").exists() and not (proj / "nosuch").exists()
