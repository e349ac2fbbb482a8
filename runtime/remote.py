"""The shared remote cache: the same content-addressed layout as `.ft/`, behind fsspec.

  <remote>/objects/<digest>.tar       one committed artifact, as an uncompressed tar
  <remote>/keys/<kk>/<key>.json       node key -> digest, files, meta, size (written last)
  <remote>/checkpoints/<key>/<name>.tar   a training node's checkpoints while it runs

A URL (`s3://bucket/prefix`, `gs://...`, `file:///srv/cache`) or a plain folder path;
anything fsspec opens works. Writes go object first, key record last, so a reader never
sees a key whose object is missing; an object already there is not uploaded again (same
digest, same bytes), so concurrent writers of one key are safe. A download is unpacked
into `.ft/tmp/`, its tree digest checked against the key record, and only then committed
by the local store: a corrupt remote object is never used.

Errors are one `RemoteError` with `kind`: "unreachable" (the run goes on locally with one
warning, or fails with --remote-required), "auth" (wrong or missing credentials: always an
error naming the remote), "corrupt", or "other".
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlang.runtime.hashing import tree_digest, tree_files
from ftlang.runtime.store import Entry, Store


class RemoteError(Exception):
    def __init__(self, message: str, kind: str = "other", hint: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.hint = hint


@dataclass
class RemoteEntry:
    key: str
    node: str
    digest: str
    files: dict[str, str]
    meta: dict[str, Any]
    size: int  # bytes of the object's tar: what a fetch downloads

    def entry(self) -> Entry:
        return Entry(self.key, self.node, self.digest, self.files, self.meta)


@dataclass
class Transfer:
    """Bytes moved in one session (bench/bench_remote.py reports them)."""

    down: int = 0
    up: int = 0


def resolve_url(cli: str | None, program_remote: str | None) -> str | None:
    """--remote beats FT_REMOTE beats the file's `cache { remote = ... }`."""
    return cli or os.environ.get("FT_REMOTE") or program_remote or None


_AUTH_WORDS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken",
               "InvalidToken", "NoCredentials", "Unable to locate credentials", "Forbidden", "403")
_NET_WORDS = ("Could not connect", "Connection refused", "Name or service not known", "timed out",
              "ConnectTimeout", "EndpointConnectionError", "Temporary failure in name resolution",
              "Cannot connect", "Network is unreachable", "No route to host")


def classify(exc: BaseException) -> str:
    """"auth", "unreachable" or "other", from any fsspec backend's exception."""
    text = f"{type(exc).__name__}: {exc} {exc.__cause__ or ''}"
    if isinstance(exc, PermissionError) or any(w in text for w in _AUTH_WORDS):
        return "auth"
    if isinstance(exc, (ConnectionError, TimeoutError)) or any(w in text for w in _NET_WORDS):
        return "unreachable"
    return "other"


class Remote:
    """One remote cache root. Every method raises RemoteError, never a backend exception."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url
        self.transfer = Transfer()
        try:
            options = _options(url)
            self.fs, root = fsspec.core.url_to_fs(url, **options)
        except ImportError as exc:  # s3fs, gcsfs, adlfs... not installed
            raise RemoteError(f"remote {url}: {exc}", "other",
                              "install the fsspec backend for this URL (s3://: pip install s3fs)") from None
        except (ValueError, OSError) as exc:
            raise RemoteError(f"remote {url}: {exc}", classify(exc)) from None
        self.root = root.rstrip("/")
        self.local = "file" in _protocols(self.fs)

    # ---- paths ----------------------------------------------------------------
    def _p(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _key_path(self, key: str) -> str:
        return self._p("keys", key[:2], f"{key}.json")

    def _object_path(self, digest: str) -> str:
        return self._p("objects", f"{digest}.tar")

    # ---- error mapping ----------------------------------------------------------
    def _fail(self, exc: BaseException, doing: str) -> RemoteError:
        kind = classify(exc)
        if kind == "auth":
            return RemoteError(f"remote {self.url}: access denied while {doing} ({_short(exc)})", kind,
                               "check the credentials for this remote (for S3: AWS_ACCESS_KEY_ID, "
                               "AWS_SECRET_ACCESS_KEY, AWS_PROFILE)")
        if kind == "unreachable":
            return RemoteError(f"remote {self.url} is unreachable ({_short(exc)})", kind)
        return RemoteError(f"remote {self.url}: {doing} failed ({_short(exc)})", kind)

    def probe(self) -> None:
        """One cheap request, so a bad URL, network or credentials show up before any work."""
        try:
            if self.local:
                os.makedirs(self.root, exist_ok=True)
            else:
                self.fs.exists(self._p("keys"))
        except Exception as exc:  # noqa: BLE001 - every backend has its own exceptions
            raise self._fail(exc, "connecting") from None

    # ---- reading ----------------------------------------------------------------
    def lookup(self, key: str) -> RemoteEntry | None:
        try:
            with self.fs.open(self._key_path(key), "rb") as f:
                data = json.loads(f.read())
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # a torn or foreign record is a miss, never a crash
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, f"looking up key {key[:12]}") from None
        return RemoteEntry(key, data["node"], data["digest"], data["files"], data.get("meta", {}),
                           int(data.get("size", 0)))

    def keys(self) -> list[RemoteEntry]:
        """Every key record on the remote (`ft cache ls --remote`)."""
        try:
            paths = self.fs.glob(self._p("keys", "*", "*.json"))
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, "listing keys") from None
        out = []
        for path in sorted(paths):
            entry = self.lookup(Path(path).stem)
            if entry is not None:
                out.append(entry)
        return out

    def fetch(self, remote: RemoteEntry, store: Store) -> Entry:
        """Downloads the object, checks it is exactly what the key record says, commits it."""
        tmp = store.new_tmp(f"fetch-{remote.digest[:12]}")
        try:
            tar = tmp / "object.tar"
            self._get(self._object_path(remote.digest), tar, f"downloading {remote.digest[:12]}")
            self.transfer.down += tar.stat().st_size
            out = tmp / "out"
            _unpack(tar, out, f"remote {self.url}: object {remote.digest[:12]} of {remote.node}",
                    "not used (the node runs here instead)")
            files = tree_files(out)
            if tree_digest(files) != remote.digest or files != remote.files:
                raise RemoteError(f"remote {self.url}: object {remote.digest[:12]} of {remote.node} does not "
                                  "match its digest; not used (the node runs here instead)", "corrupt")
            return store.commit(remote.key, remote.node, out, remote.meta)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # ---- writing ----------------------------------------------------------------
    def upload(self, entry: Entry, store: Store) -> bool:
        """Object first (skipped when already there), key record last. True if bytes moved."""
        obj = self._object_path(entry.digest)
        moved = False
        try:
            exists = self.fs.exists(obj)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, "checking an object") from None
        size = None
        if not exists:
            with tempfile.TemporaryDirectory(dir=store.tmp) as d:
                tar = Path(d) / "object.tar"
                _pack(store.object_path(entry.digest), tar)
                size = tar.stat().st_size
                self._put(tar, obj, f"uploading {entry.digest[:12]}")
                self.transfer.up += size
                moved = True
        if size is None:
            try:
                size = int(self.fs.size(obj))
            except Exception:  # noqa: BLE001 - the size is only shown by `ft plan`
                size = 0
        record = {"node": entry.node, "digest": entry.digest, "files": entry.files, "meta": entry.meta,
                  "size": size}
        with tempfile.TemporaryDirectory(dir=store.tmp) as d:
            path = Path(d) / "key.json"
            path.write_text(json.dumps(record, sort_keys=True, default=str))
            self._put(path, self._key_path(entry.key), f"writing key {entry.key[:12]}")
        return moved

    # ---- checkpoints (a preempted training resumes on another machine) -----------
    # One machine's checkpoints under checkpoints/<key>/; with several machines each node
    # rank's under checkpoints/<key>/node<K>/ (`scope`): every machine keeps its own (its
    # ranks' RNG states, and with sharding its shards), and a requeue onto other machines
    # fetches node rank K's for node rank K.
    def _ckpt(self, key: str, scope: str | None, *name: str) -> str:
        return self._p("checkpoints", key, *([scope] if scope else []), *name)

    def put_checkpoint(self, key: str, folder: Path, store: Store, scope: str | None = None) -> int:
        with tempfile.TemporaryDirectory(dir=store.tmp) as d:
            tar = Path(d) / "ckpt.tar"
            _pack(folder, tar)
            self._put(tar, self._ckpt(key, scope, f"{folder.name}.tar"), f"uploading {folder.name}")
            self.transfer.up += tar.stat().st_size
            return tar.stat().st_size

    def checkpoint_names(self, key: str, scope: str | None = None) -> set[str]:
        try:
            names = [Path(p).name for p in self.fs.glob(self._ckpt(key, scope, "checkpoint-*.tar"))]
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, "listing checkpoints") from None
        return {n[:-4] for n in names if n[:-4].split("-")[-1].isdigit()}

    def latest_checkpoint(self, key: str, scope: str | None = None,
                          peers: list[str] | None = None) -> str | None:
        """The newest checkpoint of `scope`; with `peers` (every node rank's scope), the
        newest that all of them uploaded, so every machine fetches the same step."""
        names = self.checkpoint_names(key, scope)
        for peer in peers or []:
            names &= self.checkpoint_names(key, peer)
        return max(names, key=lambda n: int(n.split("-")[-1]), default=None)

    def get_checkpoint(self, key: str, name: str, dest_parent: Path, store: Store,
                       scope: str | None = None) -> Path:
        """Unpacks checkpoints/<key>/[scope/]<name>.tar as dest_parent/<name> (atomically, by rename)."""
        tmp = store.new_tmp(f"ckpt-{key[:12]}")
        try:
            tar = tmp / "ckpt.tar"
            self._get(self._ckpt(key, scope, f"{name}.tar"), tar, f"downloading {name}")
            self.transfer.down += tar.stat().st_size
            _unpack(tar, tmp / "out", f"remote {self.url}: checkpoint {name} of {key[:12]}", "not used")
            dest_parent.mkdir(parents=True, exist_ok=True)
            final = dest_parent / name
            if not final.exists():
                os.replace(tmp / "out", final)
            return final
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def drop_checkpoints(self, key: str) -> None:
        try:
            if self.fs.exists(self._p("checkpoints", key)):
                self.fs.rm(self._p("checkpoints", key), recursive=True)
        except Exception:  # noqa: BLE001 - leftover checkpoints only cost space
            pass

    # ---- transport --------------------------------------------------------------
    def _put(self, local: Path, path: str, doing: str) -> None:
        try:
            parent = path.rsplit("/", 1)[0]
            if self.local:
                # A folder remote: write beside, then rename, so a reader never sees half a file.
                os.makedirs(parent, exist_ok=True)
                part = f"{parent}/.{uuid.uuid4().hex[:12]}.part"
                shutil.copyfile(local, part)
                os.replace(part, path)
            else:  # object stores make a PUT visible whole or not at all
                self.fs.put_file(str(local), path)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, doing) from None

    def _get(self, path: str, local: Path, doing: str) -> None:
        try:
            self.fs.get_file(path, str(local))
        except FileNotFoundError:
            raise RemoteError(f"remote {self.url}: {path} is missing", "corrupt") from None
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, doing) from None


def _protocols(fs: Any) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def _options(url: str) -> dict[str, Any]:
    """Fail fast rather than retry for minutes: a remote is a shortcut, never a blocker.
    (The endpoint of an S3-compatible server comes from AWS_ENDPOINT_URL, as for the aws CLI.)"""
    if url.startswith(("s3://", "s3a://")):
        opts: dict[str, Any] = {"config_kwargs": {"connect_timeout": 5, "read_timeout": 60,
                                                  "retries": {"max_attempts": 2}}}
        if os.environ.get("AWS_ENDPOINT_URL"):
            opts["endpoint_url"] = os.environ["AWS_ENDPOINT_URL"]
        return opts
    return {}


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _pack(folder: Path, tar_path: Path) -> None:
    with tarfile.open(tar_path, "w") as tf:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for name in sorted(filenames):
                full = Path(dirpath) / name
                tf.add(full, arcname=full.relative_to(folder).as_posix(), recursive=False)


def _unpack(tar_path: Path, dest: Path, what: str, then: str) -> None:
    """The "data" filter refuses absolute paths, `..`, links out of the tree and devices.
    An error names the download (`what`) and what happens instead (`then`), in one line, as
    a digest mismatch does."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tar_path, "r") as tf:
            tf.extractall(dest, filter="data")
    except tarfile.TarError as exc:  # a truncated or garbled tar (an OSError stays one)
        reason = " ".join(str(exc).split()) or type(exc).__name__  # one line, whatever tarfile says
        raise RemoteError(f"{what} cannot be unpacked ({reason}); {then}", "corrupt") from None


def human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


class CheckpointSync:
    """While a training node runs, uploads each new complete checkpoint of its key
    (`.ft/cache/checkpoints/<key>/checkpoint-N`, complete once trainer_state.json exists);
    before it runs, brings the remote's newest one here when there is none locally, so a
    job preempted on one machine resumes on another when its key is unchanged."""

    POLL_S = 1.0

    def __init__(self, remote: Remote, store: Store, key: str, say: Any, node_rank: int = 0,
                 nodes: int = 1) -> None:
        import threading

        self.remote, self.store, self.key, self.say = remote, store, key, say
        self.folder = store.cache / "checkpoints" / key
        self.scope = f"node{node_rank}" if nodes > 1 else None
        peers = [f"node{k}" for k in range(nodes)] if nodes > 1 else None
        self.sent: set[str] = set()
        self.error: RemoteError | None = None
        if not self._complete():
            name = remote.latest_checkpoint(key, self.scope, peers)
            if name is not None:
                remote.get_checkpoint(key, name, self.folder, store, self.scope)
                self.sent.add(name)
                say(f"{name} fetched from the remote: training resumes from it")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"ckpt-{key[:8]}")
        self._thread.start()

    def _complete(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        done = [d for d in self.folder.glob("checkpoint-*")
                if d.is_dir() and (d / "trainer_state.json").is_file() and d.name.split("-")[-1].isdigit()]
        return sorted(done, key=lambda d: int(d.name.split("-")[-1]))

    def _scan(self) -> None:
        done = self._complete()
        if not done or done[-1].name in self.sent or self.error is not None:
            return
        newest = done[-1]  # only the newest: older ones are never resumed from
        try:
            self.remote.put_checkpoint(self.key, newest, self.store, self.scope)
            self.sent.add(newest.name)
        except RemoteError as exc:
            self.error = exc
        except OSError:
            pass  # rotated away by save_limit while packing: the next one will go

    def _loop(self) -> None:
        while not self._stop.wait(self.POLL_S):
            self._scan()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self._scan()
        if self.error is not None:
            self.say(f"checkpoints not uploaded: {self.error}")
            self.error = None
