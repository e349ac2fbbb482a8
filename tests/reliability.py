"""`make reliability`: the attack suite, scaled up, with a table of cases tried / handled / failed.

Families (each also has a fast subset in `make test`, in the test file named):
  fuzz         parser, checker and formatter on >= 10,000 generated and mutated texts (test_fuzz.py)
  baddata      every file of the bad-data corpus through `ft check` / `ft run` (test_baddata.py)
  sigkill      SIGKILL of `ft run` at random moments; verify, rerun == uninterrupted (test_crash.py)
  gc_vs_run    `ft gc` started at random moments of a run; nothing the run made is lost (test_gc_safety.py)
  disk_full    runs on a nearly full tmpfs at many fill levels (test_no_traceback.py)
  export_guard every unsafe export target, first run and cached rerun (test_export_guard.py)

Usage: python tests/reliability.py [FAMILY ...] [--seed N] [--kills N] [--fuzz N]
Exit 1 if any case failed. Run as root to include the tmpfs cases (else they are skipped).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

Case = tuple[str, Callable[[Path], None]]


def fuzz_cases(n: int) -> Iterator[Case]:
    """One 'case' per generated text; the hypothesis tests run n examples each."""
    os.environ["FT_FUZZ_EXAMPLES"] = str(n)
    os.environ["FT_FUZZ_RANDOM"] = "1"
    import test_fuzz

    original = test_fuzz.check_text
    for name in sorted(dir(test_fuzz)):
        fn = getattr(test_fuzz, name)
        if not (name.startswith("test_") and callable(fn) and hasattr(fn, "hypothesis")):
            continue
        results: list[str | None] = []

        def counting(text: str, results: list[str | None] = results) -> None:
            try:
                original(text)
                results.append(None)
            except Exception:  # recorded, not raised: hypothesis goes on and the count stays exact
                results.append(f"{traceback.format_exc(limit=2)}\non input {text!r:.300}")

        def run_all(_: Path, fn: Callable[[], None] = fn, results: list[str | None] = results) -> None:
            test_fuzz.check_text = counting
            try:
                fn()
            finally:
                test_fuzz.check_text = original

        yield f"{name}", run_all
        yield from _expand(name, results)


def _expand(name: str, results: list[str | None]) -> Iterator[Case]:
    """Marks the per-text outcomes recorded by a hypothesis run as cases of their own."""
    for i, problem in enumerate(results):
        def outcome(_: Path, problem: str | None = problem) -> None:
            if problem:
                raise AssertionError(problem)
        yield f"{name}#{i}", outcome


def baddata_cases() -> Iterator[Case]:
    import test_baddata as B

    for case in B.CASES:
        yield f"baddata {case.name}", (lambda tmp, case=case: B.check_case(case, tmp))


def sigkill_cases(kills: int, rng: random.Random) -> Iterator[Case]:
    import test_crash as C

    def data(root: Path) -> None:
        C.write_big(root / "data" / "big.jsonl", 200_000)

    def train(root: Path) -> None:
        C.write_corpus(root / "data" / "corpus.jsonl")

    refs: dict[str, dict[str, str]] = {}
    for i in range(kills):
        text, make, span = (C.DATA_FT, data, 3.0) if i % 2 == 0 else (C.TRAIN_FT, train, 12.0)
        moment = rng.uniform(0.3, span)

        def case(tmp: Path, text: str = text, make: Callable[[Path], None] = make, moment: float = moment) -> None:
            if text not in refs:
                refs[text] = C.reference(tmp / "ref", text, make)
            proj = tmp / "victim"
            make(proj)
            (proj / "p.ft").write_text(text)
            proc = subprocess.Popen([*C.ft_bin(), "run", "p.ft"], cwd=proj, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            time.sleep(moment)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            C.assert_no_partial_artifact(proj)
            again = C.run_ft("run", "p.ft", cwd=proj)
            assert again.returncode == 0, again.stderr
            assert C.keys(proj) == refs[text], "rerun after the kill differs from an uninterrupted run"

        yield f"sigkill {'data' if text is C.DATA_FT else 'train'} at {moment:.2f}s", case


def gc_cases(n: int, rng: random.Random) -> Iterator[Case]:
    import test_gc_safety as G

    for _ in range(n):
        moment = rng.uniform(0.2, 6.0)

        def case(tmp: Path, moment: float = moment) -> None:
            G.write_rows(tmp / "corpus.jsonl", 0, 40)
            (tmp / "p.ft").write_text(G.TRAIN)
            run = subprocess.Popen([*G.ft_bin(), "run", "p.ft"], cwd=tmp, stderr=subprocess.PIPE, text=True,
                                   env=dict(os.environ, NO_COLOR="1"))
            time.sleep(moment)
            gc = G.run_ft("gc", "p.ft", "--keep-runs", "0", cwd=tmp)
            _, err = run.communicate(timeout=300)
            assert run.returncode == 0, f"the run failed: {err[-800:]}"
            assert gc.returncode == 0 and "Traceback" not in gc.stderr, gc.stderr
            again = G.run_ft("run", "p.ft", cwd=tmp)
            assert "nothing to do: 3 steps cached" in again.stderr, again.stderr
            assert G.run_ft("verify", "p.ft", cwd=tmp).returncode == 0

        yield f"gc during a run at {moment:.2f}s", case


def disk_cases() -> Iterator[Case]:
    import test_no_traceback as N

    for leave in [0, 4 << 10, 8 << 10, 16 << 10, 32 << 10, 48 << 10, 64 << 10, 96 << 10, 128 << 10,
                  256 << 10, 512 << 10, 1 << 20]:
        yield f"disk full, {leave >> 10} KB free", (lambda tmp, leave=leave: N.disk_full_case(tmp, leave))


def export_cases() -> Iterator[Case]:
    import test_export_guard as E

    for name in dir(E):
        fn = getattr(E, name)
        if not (name.startswith("test_") and callable(fn)):
            continue
        # Each parameter set of a parametrized test is a case of its own, as under pytest.
        sets = [tuple(v) if isinstance(v, (tuple, list)) else (v,)
                for mark in getattr(fn, "pytestmark", []) if mark.name == "parametrize" for v in mark.args[1]]
        for args in sets or [()]:
            yield f"{name}{list(args) if args else ''}", (
                lambda tmp, fn=fn, args=args: _with_home(tmp, lambda h: fn(tmp, h, *args)))


def _with_home(tmp: Path, body: Callable[[Path], None]) -> None:
    home = tmp / "home"
    (home / "docs").mkdir(parents=True)
    (home / "docs" / "thesis.txt").write_text("years of work\n")
    body(home)


@contextlib.contextmanager
def _no_dir() -> Iterator[str]:
    yield os.devnull


def run_family(name: str, cases: Iterator[Case]) -> tuple[int, int, int, int, list[str]]:
    tried = handled = failed = skipped = 0
    problems: list[str] = []
    for label, fn in cases:
        if "#" not in label and name == "fuzz":  # the runner of a hypothesis batch, not a case
            with tempfile.TemporaryDirectory() as d:
                fn(Path(d))
            continue
        tried += 1
        with tempfile.TemporaryDirectory() if name != "fuzz" else _no_dir() as d:
            try:
                fn(Path(d))
                handled += 1
            except BaseException as exc:  # noqa: B036 - pytest.skip raises a BaseException
                if type(exc).__name__ == "Skipped":
                    skipped += 1
                    continue
                if isinstance(exc, KeyboardInterrupt):
                    raise
                failed += 1
                why = str(exc) or "".join(traceback.format_exception(exc, limit=-2))
                problems.append(f"{name}: {label}: {type(exc).__name__}: {why[:800]}")
    return tried, handled, failed, skipped, problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("families", nargs="*", default=["fuzz", "baddata", "sigkill", "gc_vs_run", "disk_full",
                                                   "export_guard"])
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--fuzz", type=int, default=2000, help="examples per fuzz test (5+ tests)")
    args = p.parse_args()
    rng = random.Random(args.seed)
    families = {
        "fuzz": lambda: fuzz_cases(args.fuzz),
        "baddata": baddata_cases,
        "sigkill": lambda: sigkill_cases(args.kills, rng),
        "gc_vs_run": lambda: gc_cases(5, rng),
        "disk_full": disk_cases,
        "export_guard": export_cases,
    }
    rows, problems = [], []
    t0 = time.monotonic()
    for fam in args.families:
        start = time.monotonic()
        tried, handled, failed, skipped, probs = run_family(fam, families[fam]())
        rows.append([fam, tried, handled, failed, skipped, f"{time.monotonic() - start:.0f}s"])
        problems += probs
        print(f"  {fam}: {tried} tried, {handled} handled, {failed} failed, {skipped} skipped", flush=True)
    from ftlang.runtime.display import table

    print(f"\nreliability suite (seed {args.seed}, {time.monotonic() - t0:.0f}s)\n")
    print(table(["family", "tried", "handled", "failed", "skipped", "time"], rows))
    for prob in problems[:20]:
        print("\nFAILED " + prob)
    json.dump({"seed": args.seed, "rows": rows}, open(os.environ.get("FT_RELIABILITY_JSON", os.devnull), "w"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
