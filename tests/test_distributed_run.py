"""distributed { ... } for real: torchrun workers on the CPU (gloo), through the `ft` command.

Tolerances: a 2-process DDP run and a 1-process run with the same global batch (4 rows a
step, in dataset order) must give adapters equal within atol 1e-5 (measured: 1.1e-7, float
summation order) and losses equal within 1e-5 relative at every logged step.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, ft_bin, run_ft
from ftlang.runtime import launch
from ftlang.runtime.worker import Job, WorkerError

LAUNCH = FIXTURES / "launch"


def _project(tmp: Path, *files: str) -> Path:
    shutil.copytree(LAUNCH / "data", tmp / "data")
    for f in files:
        shutil.copy(LAUNCH / f, tmp / f)
    return tmp


def _plan(proj: Path, file: str, *extra: str) -> dict[str, dict]:
    out = run_ft("plan", file, "--json", *extra, cwd=proj)
    assert out.returncode == 0, out.stderr
    return {i["node"]: i for i in json.loads(out.stdout)}


def _artifact(proj: Path, item: dict) -> Path:
    return proj / ".ft" / "objects" / item["digest"]


def _meta(proj: Path, item: dict) -> dict:
    key = item["key"]  # the store's record of the key: .ft/keys/<2>/<key>.json
    return json.loads((proj / ".ft" / "keys" / key[:2] / f"{key}.json").read_text())["meta"]


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(next(folder.rglob("adapter_model.safetensors"))))


def test_two_process_ddp_lora_matches_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    proj = _project(tmp_path, "ddp.ft")
    out = run_ft("run", "ddp.ft", cwd=proj)
    assert out.returncode == 0, out.stderr
    plan = _plan(proj, "ddp.ft")
    one, two = plan["train.one"], plan["train.two"]
    assert one["status"] == two["status"] == "cached"
    a, b = _adapter(_artifact(proj, one)), _adapter(_artifact(proj, two))
    assert a.keys() == b.keys() and a
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"2-process DDP vs 1 process: adapter max |diff| {worst:.2g} (docs/scale.md)")
    assert worst <= 1e-5, worst
    m1, m2 = _meta(proj, one), _meta(proj, two)
    assert m1["loss_steps"] == m2["loss_steps"] == [1, 2, 3, 4, 5, 6]
    assert m1["train_loss"] == pytest.approx(m2["train_loss"], rel=1e-5)
    assert m1["train_loss"][0] != m1["train_loss"][-1]  # it trained: the curve moves
    logs = proj / ".ft" / "logs"
    assert (logs / "train.two.rank0.log").exists() and (logs / "train.two.rank1.log").exists()
    assert not (logs / "train.one.rank0.log").exists()  # a plain train stays in process


class _Display:
    def log(self, node: str):  # noqa: ANN201
        return lambda msg: None

    def progress(self, node: str):  # noqa: ANN201
        return lambda *a: None


def _crash_job(tmp: Path, body: str) -> tuple[Job, Path]:
    (tmp / "crashing.py").write_text("import os, time\n\ndef run(ctx):\n    os.chdir(ctx.project)\n" + body)
    work = tmp / ".ft" / "tmp" / "n"
    (work / "out").mkdir(parents=True)
    job = Job(node="train.x", name="x", run="crashing:run",
              params={"distributed": {"processes": 2}, "device": "cpu"}, out=work / "out", project=tmp,
              cache=tmp / ".ft" / "cache", key="k" * 64, events=work / "events.jsonl",
              env={"PYTHONPATH": str(tmp)})
    return job, work


@pytest.mark.parametrize("body,expect", [
    ('    if os.environ["RANK"] == "1":\n        raise ValueError("rank one broke")\n    time.sleep(60)\n',
     r"rank 1 failed: ValueError: rank one broke \(log: .*train\.x\.rank1\.log\)"),
    ('    if os.environ["RANK"] == "1":\n        print("about to die", flush=True)\n'
     '        os.kill(os.getpid(), 9)\n    time.sleep(60)\n',
     r"rank 1 killed by signal 9: about to die \(log: .*train\.x\.rank1\.log\)"),
])
def test_a_dead_worker_fails_the_node_in_one_line_naming_its_rank_and_log(tmp_path: Path, body: str,
                                                                          expect: str) -> None:
    job, work = _crash_job(tmp_path, body)
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=expect):
        launch.run_distributed(job, work, _Display())
    assert time.monotonic() - t0 < 50  # rank 0 (sleeping 60 s) was torn down, not waited for


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


DRIVER = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_distributed_run import _Display, _crash_job
from ftlang.runtime import launch
job, work = _crash_job(Path({tmp!r}), "    open(os.environ['RANK'] + '.up', 'w').close()\\n    time.sleep(600)\\n")
launch.run_distributed(job, work, _Display())
"""


def test_a_sigkilled_driver_leaves_no_torchrun_or_worker_behind(tmp_path: Path) -> None:
    """The pdeathsig chain without a model: driver -> guarded torchrun -> 2 ranks; SIGKILL the
    driver (nothing can run in it afterwards) and list what it had started."""
    import sys

    tests = str(Path(__file__).resolve().parent)
    code = DRIVER.format(tests=tests, tmp=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not ((tmp_path / "0.up").exists() and (tmp_path / "1.up").exists()):
        assert proc.poll() is None, "the driver ended before both ranks started"
        time.sleep(0.2)
    workers = _descendants(proc.pid)
    assert len(workers) >= 3, workers  # torchrun and its two ranks
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    assert not [p for p in workers if _alive(p)], "orphans survived the killed driver"


def test_killing_ft_during_a_two_process_run_leaves_no_orphan_and_commits_nothing(tmp_path: Path) -> None:
    proj = _project(tmp_path, "kill.ft")
    env = dict(os.environ, NO_COLOR="1")
    proc = subprocess.Popen([*ft_bin(), "run", "kill.ft"], cwd=proj, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    workers: set[int] = set()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        events = list((proj / ".ft" / "tmp").rglob("events.jsonl")) if (proj / ".ft" / "tmp").exists() else []
        if events and '"progress"' in events[0].read_text():  # rank 0 is training
            workers = _descendants(proc.pid)
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
    assert len(workers) >= 3, workers  # torchrun and its two ranks
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.5)
    assert not [p for p in workers if _alive(p)], "orphan workers survived the killed ft"
    plan = _plan(proj, "kill.ft")
    assert plan["train.long"]["status"] == "run" and plan["train.long"]["digest"] is None
    (proj / "kill.ft").write_text((proj / "kill.ft").read_text().replace("100000", "2"))
    again = run_ft("run", "kill.ft", cwd=proj)
    assert again.returncode == 0, again.stderr
    assert _plan(proj, "kill.ft")["train.long"]["status"] == "cached"


def test_two_process_dpo_trains_and_commits(tmp_path: Path) -> None:
    proj = _project(tmp_path, "dpo.ft")
    out = run_ft("run", "dpo.ft", cwd=proj)
    assert out.returncode == 0, out.stderr
    item = _plan(proj, "dpo.ft")["train.pref"]
    meta = _meta(proj, item)
    assert item["status"] == "cached" and meta["steps"] == 3 and len(meta["train_loss"]) == 3
    assert _adapter(_artifact(proj, item))
    assert (proj / ".ft" / "logs" / "train.pref.rank1.log").exists()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_ft_processes_as_two_nodes_complete_one_run(tmp_path: Path) -> None:
    """The command `ft launch` writes, on one machine: node ranks 0 and 1, gloo, c10d on
    127.0.0.1, each machine with its own checkout and cache. World size 2 (1 process x 2
    nodes) is the same numerics as 2 processes on one machine: same adapter bytes."""
    rdzv = f"127.0.0.1:{_port()}"
    projects = [_project(tmp_path / f"node{k}", "ddp.ft") for k in (0, 1)]
    env = dict(os.environ, NO_COLOR="1")
    procs = [subprocess.Popen([*ft_bin(), "run", "ddp.ft", "--select", "train.two", "--processes", "1",
                               "--nnodes", "2", "--node-rank", str(k), "--rdzv", rdzv], cwd=p, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for k, p in enumerate(projects)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    items = [_plan(p, "ddp.ft", "--processes", "1", "--nnodes", "2")["train.two"] for p in projects]
    assert items[0]["status"] == items[1]["status"] == "cached"
    assert items[0]["digest"] == items[1]["digest"]  # both machines hold the same weights
    single = _project(tmp_path / "single", "ddp.ft")
    assert run_ft("run", "ddp.ft", "--select", "train.two", cwd=single).returncode == 0
    one = _adapter(_artifact(single, _plan(single, "ddp.ft")["train.two"]))
    two = _adapter(_artifact(projects[0], items[0]))
    import torch

    assert all(torch.allclose(one[k], two[k], atol=1e-5, rtol=0) for k in one)


# ---- on a CUDA machine (pytest -m gpu) --------------------------------------------------------

GPU_TRAIN = """ft 0.1
dataset tasks {{ source = jsonl("data/tasks.jsonl") }}
model base {{
  init = tiny(hidden = 64, layers = 2, heads = 4, vocab = 256, context = 64, data = tasks)
}}
train sft {{
  from          = base
  data          = tasks
  method        = {method}
  max_steps     = 6
  batch_size    = 2
  max_length    = 32
  device        = cuda
  logging_steps = 1
{extra}}}
"""


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.gpu
@pytest.mark.parametrize("name,method,extra", [
    ("ddp_nccl", "lora(r = 4)", "  distributed {\n    processes = 2\n  }\n"),
    ("fsdp", "lora(r = 4)", "  distributed {\n    processes = 2\n    strategy = fsdp(sharding = \"full\")\n  }\n"),
    ("qlora_fsdp", 'lora(r = 4, quant = "nf4")',
     '  distributed {\n    processes = 2\n    strategy = fsdp(quant_storage = "bf16")\n  }\n'),
    ("sdpa_paged_bf16", "lora(r = 4)",
     '  attention = "sdpa"\n  optimizer = paged_adamw_8bit\n  precision = bf16\n  gradient_checkpointing = true\n'),
    ("qlora_one_gpu", 'lora(r = 4, quant = "nf4")', '  attention = "eager"\n'),
])
def test_gpu_training_paths_train_and_commit(tmp_path: Path, name: str, method: str, extra: str) -> None:
    if "processes = 2" in extra and _gpus() < 2:
        pytest.skip("needs 2 GPUs")
    proj = _project(tmp_path)
    (proj / "g.ft").write_text(GPU_TRAIN.format(method=method, extra=extra))
    out = run_ft("run", "g.ft", "--verbose", cwd=proj)
    assert out.returncode == 0, out.stderr
    item = _plan(proj, "g.ft")["train.sft"]
    assert item["status"] == "cached" and _adapter(_artifact(proj, item))
    logs = (proj / ".ft" / "logs" / "train.sft.rank0.log")
    text = out.stdout + out.stderr + (logs.read_text() if logs.exists() else "")
    assert "peak GPU memory" in text  # one line per logging step on CUDA


@pytest.mark.gpu
def test_more_cuda_processes_than_gpus_fails_before_any_worker(tmp_path: Path) -> None:
    proj = _project(tmp_path)
    (proj / "g.ft").write_text(GPU_TRAIN.format(method="lora(r = 4)", extra=""))
    out = run_ft("run", "g.ft", "--processes", str(_gpus() + 1), cwd=proj)
    assert out.returncode == 1
    assert f"processes = {_gpus() + 1} CUDA processes, but this machine has {_gpus()} GPU" in out.stderr
    assert not (proj / ".ft" / "logs" / "train.sft.rank0.log").exists()
