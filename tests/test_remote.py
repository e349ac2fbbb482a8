"""The shared remote cache: a folder, and an S3 server (moto's standalone server on
127.0.0.1, through s3fs). Two projects in two temp dirs share work; a corrupt remote
object is never committed; an unreachable remote or wrong credentials are one line."""

from __future__ import annotations

import importlib.util
import io
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_ft
from ftlang.runtime.remote import Remote, RemoteError
from ftlang.runtime.store import Store
from test_jobs import branches, objects, project

pytestmark = pytest.mark.e2e


def ran(stderr: str) -> list[str]:
    return [ln.split()[1] for ln in stderr.splitlines() if ln.strip().startswith("done ")]


def test_two_projects_share_a_folder_remote_and_the_second_runs_nothing(tmp_path: Path) -> None:
    remote = tmp_path / "team-cache"
    a = project(tmp_path / "a", branches(2))
    b = project(tmp_path / "b", branches(2))
    first = run_ft("run", "p.ft", "--remote", str(remote), cwd=a)
    assert first.returncode == 0 and len(ran(first.stderr)) == 3, first.stderr
    plan = run_ft("plan", "p.ft", "--remote", str(remote), cwd=b)
    assert [ln.split()[0] for ln in plan.stdout.splitlines() if ln.strip()][:3] == ["remote"] * 3 and "kB from the remote cache" in plan.stdout, plan.stdout
    assert "3 to fetch from the remote cache" in plan.stdout
    second = run_ft("run", "p.ft", "--remote", str(remote), cwd=b)
    assert second.returncode == 0 and ran(second.stderr) == [], second.stderr
    assert [ln.split()[0] for ln in second.stderr.splitlines()][:3] == ["remote"] * 3, second.stderr
    assert "nothing to do" in second.stderr
    assert objects(a) == objects(b)
    ls = run_ft("cache", "ls", "--remote", str(remote), cwd=b)
    assert "3 keys on" in ls.stdout and "curate.c1" in ls.stdout


def _tamper(tar_path: Path) -> None:
    """Rewrites one file inside the object's tar: same names, different bytes."""
    with tarfile.open(tar_path) as tf:
        members = [(m, tf.extractfile(m).read() if m.isfile() else None) for m in tf.getmembers()]
    with tarfile.open(tar_path, "w") as tf:
        for i, (m, data) in enumerate(members):
            if data is not None and i == 0:
                data = data[:-1] + bytes([data[-1] ^ 1])
            tf.addfile(m, io.BytesIO(data) if data is not None else None)


@pytest.mark.slow
def test_a_corrupt_remote_object_is_never_committed(tmp_path: Path) -> None:
    remote = tmp_path / "team-cache"
    a = project(tmp_path / "a", branches(1))
    assert run_ft("run", "p.ft", "--remote", str(remote), cwd=a).returncode == 0
    for tar in (remote / "objects").glob("*.tar"):
        _tamper(tar)
    b = project(tmp_path / "b", branches(1))
    r = run_ft("run", "p.ft", "--remote", str(remote), cwd=b)
    assert r.returncode == 0, r.stderr
    assert "does not match its digest" in r.stderr and sorted(ran(r.stderr)) == ["curate.c0", "dataset.tasks"]
    assert objects(a) == objects(b)  # rebuilt here; the tampered bytes never entered objects/
    assert not list((b / ".ft" / "tmp").iterdir())


def test_a_truncated_remote_object_is_one_line_naming_it_and_the_node_runs_here(tmp_path: Path) -> None:
    remote = tmp_path / "team-cache"
    a = project(tmp_path / "a", branches(1))
    assert run_ft("run", "p.ft", "--remote", str(remote), cwd=a).returncode == 0
    for tar in (remote / "objects").glob("*.tar"):
        tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 3])  # a download cut short
    b = project(tmp_path / "b", branches(1))
    r = run_ft("run", "p.ft", "--remote", str(remote), cwd=b)
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.strip().startswith("warning")]
    assert len(warnings) == 2, r.stderr  # one line per node, nothing of tarfile's own layout
    for line in warnings:
        assert f"remote {remote}: object " in line and "cannot be unpacked (unexpected end of data); " \
            "not used (the node runs here instead)" in line, line
    assert sorted(ran(r.stderr)) == ["curate.c0", "dataset.tasks"]
    assert objects(a) == objects(b) and not list((b / ".ft" / "tmp").iterdir())


def test_concurrent_writers_of_one_key_are_safe(tmp_path: Path) -> None:
    store = Store(tmp_path / "local" / ".ft")
    store.ensure()
    out = store.new_tmp("n") / "out"
    (out / "w.bin").write_bytes(os.urandom(200_000))
    entry = store.commit("k" * 64, "train.n", out, {"loss": 1.0})
    remote = Remote(str(tmp_path / "remote"))
    errors: list[BaseException] = []

    def push() -> None:
        try:
            Remote(str(tmp_path / "remote")).upload(entry, store)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=push) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [p.name for p in (tmp_path / "remote" / "objects").iterdir()] == [f"{entry.digest}.tar"]
    other = Store(tmp_path / "other" / ".ft")
    other.ensure()
    hit = remote.lookup("k" * 64)
    assert hit is not None and remote.fetch(hit, other).digest == entry.digest


@pytest.mark.slow
def test_push_then_pull_moves_what_the_file_refers_to(tmp_path: Path) -> None:
    remote = tmp_path / "team-cache"
    a = project(tmp_path / "a", branches(1))
    assert run_ft("run", "p.ft", cwd=a).returncode == 0  # no remote yet
    push = run_ft("push", "p.ft", "--remote", str(remote), cwd=a)
    assert push.returncode == 0 and "2 artifacts pushed" in push.stdout, push.stdout + push.stderr
    assert "0 artifacts pushed" in run_ft("push", "p.ft", "--remote", str(remote), cwd=a).stdout
    b = project(tmp_path / "b", branches(1))
    pull = run_ft("pull", "p.ft", "--remote", str(remote), cwd=b)
    assert pull.returncode == 0 and "2 artifacts pulled" in pull.stdout and "0 still to run" in pull.stdout
    r = run_ft("run", "p.ft", cwd=b)  # no remote now: everything is local already
    assert "nothing to do: 2 steps cached" in r.stderr and objects(a) == objects(b)


# ---- S3: moto's standalone server on 127.0.0.1, through s3fs -------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _moto(env: dict[str, str] | None = None) -> Iterator[str]:
    port = _free_port()
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    yield from _moto()


@pytest.fixture
def s3_env(s3: str, monkeypatch: pytest.MonkeyPatch) -> str:
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"team-{time.monotonic_ns()}"
    s3fs.S3FileSystem(endpoint_url=s3, key="testing", secret="testing").mkdir(bucket)
    return f"s3://{bucket}/ftcache"


def test_two_projects_share_an_s3_remote(tmp_path: Path, s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FT_REMOTE", s3_env)
    a = project(tmp_path / "a", branches(1))
    first = run_ft("run", "p.ft", cwd=a)
    assert first.returncode == 0 and len(ran(first.stderr)) == 2, first.stderr
    b = project(tmp_path / "b", branches(1))
    second = run_ft("run", "p.ft", cwd=b)
    assert second.returncode == 0 and ran(second.stderr) == [], second.stderr
    assert objects(a) == objects(b)
    ls = run_ft("cache", "ls", "--remote", cwd=b)
    assert f"2 keys on {s3_env}" in ls.stdout, ls.stdout + ls.stderr


def test_an_unreachable_remote_is_one_warning_or_an_error_when_required(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")  # nothing listens
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    p = project(tmp_path, branches(1))
    r = run_ft("run", "p.ft", "--remote", "s3://team/cache", cwd=p)
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if "s3://team/cache" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("warning:") and "unreachable" in warnings[0]
    assert len(ran(r.stderr)) == 2
    req = run_ft("run", "p.ft", "--remote", "s3://team/cache", "--remote-required", "--force", "c0", cwd=p)
    assert req.returncode == 1 and "error: remote s3://team/cache is unreachable" in req.stderr
    assert "Traceback" not in req.stderr + r.stderr and ran(req.stderr) == []


def test_wrong_credentials_are_a_clear_error_naming_the_remote(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for url in _moto({"INITIAL_NO_AUTH_ACTION_COUNT": "0"}):  # this server checks every signature
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        p = project(tmp_path, branches(1))
        r = run_ft("run", "p.ft", "--remote", "s3://team/cache", cwd=p)
        assert r.returncode == 1, r.stderr
        assert "error: remote s3://team/cache: access denied" in r.stderr and "credentials" in r.stderr
        assert "Traceback" not in r.stderr and ran(r.stderr) == []


def test_remote_errors_are_classified() -> None:
    from ftlang.runtime.remote import classify

    assert classify(PermissionError("Forbidden")) == "auth"
    assert classify(ConnectionRefusedError(111, "Connection refused")) == "unreachable"
    assert classify(ValueError("bad")) == "other"
    with pytest.raises(RemoteError, match="Protocol not known"):
        Remote("nosuchproto-xyz://bucket/x")
    if importlib.util.find_spec("gcsfs") is None:
        with pytest.raises(RemoteError, match="install gcsfs") as info:
            Remote("gs://bucket/x")
        assert info.value.hint and "fsspec backend" in info.value.hint


TRAIN_FT = '''ft 0.1
dataset corpus { source = jsonl("data/corpus.jsonl") }
model base {
  init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 256, context = 64, data = corpus)
}
train long {
  from = base
  data = corpus
  objective = clm
  max_steps = 300
  save_steps = 20
  max_length = 32
  batch_size = 4
}
'''


@pytest.mark.slow
def test_a_training_killed_on_one_machine_resumes_from_the_remote_checkpoint_on_another(tmp_path: Path) -> None:
    import json
    import signal

    from conftest import ft_bin
    from test_crash import write_corpus

    def make(root: Path) -> Path:
        write_corpus(root / "data" / "corpus.jsonl")
        (root / "p.ft").write_text(TRAIN_FT)
        return root

    remote = tmp_path / "team-cache"
    ref = make(tmp_path / "ref")
    assert run_ft("run", "p.ft", cwd=ref).returncode == 0  # uninterrupted, no remote
    first = make(tmp_path / "first")
    proc = subprocess.Popen([*ft_bin(), "run", "p.ft", "--remote", str(remote)], cwd=first,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list(remote.glob("checkpoints/*/checkpoint-*.tar")):
        assert proc.poll() is None, "training finished before a checkpoint was uploaded: make it longer"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # preempted: no goodbye
    proc.wait()
    assert not [k for k in (first / ".ft" / "keys").rglob("*.json") if "train" in json.loads(k.read_text())["node"]]
    second = make(tmp_path / "second")  # another machine: nothing local, the remote only
    r = run_ft("run", "p.ft", "--remote", str(remote), "--verbose", cwd=second)
    assert r.returncode == 0, r.stderr
    assert "fetched from the remote: training resumes from it" in r.stderr
    assert "resuming from checkpoint-" in r.stderr  # the Trainer really started from it
    assert objects(second) >= {p.name for p in (ref / ".ft" / "objects").iterdir()}  # bitwise the same model
    assert not list(remote.glob("checkpoints/*/*.tar"))  # committed: its checkpoints are dropped


def test_the_cache_block_names_the_remote_and_is_not_part_of_any_key(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    plain = project(tmp_path / "plain", branches(1))
    text = branches(1).replace("ft 0.1\n", 'ft 0.1\ncache { remote = "../team" }\n', 1)
    a = project(tmp_path / "a", text)
    keys_plain = {i["node"]: i["key"] for i in json.loads(run_ft("plan", "p.ft", "--json", cwd=plain).stdout)}
    keys_a = {i["node"]: i["key"] for i in json.loads(run_ft("plan", "p.ft", "--json", cwd=a).stdout)}
    assert keys_plain == keys_a
    assert run_ft("run", "p.ft", cwd=a).returncode == 0
    assert len(list((tmp_path / "team" / "keys").rglob("*.json"))) == 2  # relative to the .ft file
    b = project(tmp_path / "b", text)
    r = run_ft("run", "p.ft", cwd=b)
    assert r.returncode == 0 and ran(r.stderr) == [], r.stderr
    monkeypatch.setenv("FT_REMOTE", str(tmp_path / "other"))  # FT_REMOTE beats the file
    c = project(tmp_path / "c", text)
    assert len(ran(run_ft("run", "p.ft", cwd=c).stderr)) == 2
    assert (tmp_path / "other" / "keys").is_dir()


def _ckpt(folder: Path, step: int, rank: int) -> Path:
    d = folder / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    (d / f"rng_state_{rank}.pth").write_text(f"rank {rank}")  # what differs between machines
    return d


def test_each_node_rank_keeps_its_checkpoints_and_all_fetch_one_step(tmp_path: Path) -> None:
    """Two machines upload to one remote: node rank K's under node<K>/ (no machine overwrites
    another's RNG states), and on a requeue onto fresh machines each fetches its own
    checkpoint of the newest step that every node rank uploaded."""
    from ftlang.runtime.remote import CheckpointSync

    remote = Remote(str(tmp_path / "remote"))
    key = "k" * 64
    for rank, steps in ((0, [100, 200]), (1, [100])):  # machine 1 was preempted before 200
        store = Store(tmp_path / f"m{rank}" / ".ft")
        store.ensure()
        for step in steps:
            remote.put_checkpoint(key, _ckpt(store.cache / "ck", step, rank), store, scope=f"node{rank}")
    assert remote.checkpoint_names(key, "node0") == {"checkpoint-100", "checkpoint-200"}
    said: list[str] = []
    for rank in (0, 1):  # the requeue: new machines, empty caches
        fresh = Store(tmp_path / f"new{rank}" / ".ft")
        fresh.ensure()
        sync = CheckpointSync(remote, fresh, key, said.append, node_rank=rank, nodes=2)
        sync.close()
        got = fresh.cache / "checkpoints" / key
        assert sorted(p.name for p in got.iterdir()) == ["checkpoint-100"]
        assert (got / "checkpoint-100" / f"rng_state_{rank}.pth").read_text() == f"rank {rank}"
    assert said == ["checkpoint-100 fetched from the remote: training resumes from it"] * 2
    # One machine: the layout it always had (checkpoints/<key>/checkpoint-N.tar).
    one = Store(tmp_path / "one" / ".ft")
    one.ensure()
    remote.put_checkpoint("j" * 64, _ckpt(one.cache / "ck", 7, 0), one)
    assert (tmp_path / "remote" / "checkpoints" / ("j" * 64) / "checkpoint-7.tar").is_file()
