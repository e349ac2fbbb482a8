"""Bayesian hyperparameter search with Optuna: the trial step and the winner step.

In (a trial, `train.sft[trial=k]`): a train step's complete params in which searched values
     are `Call("search", {space, type, low, high, choices})`, and `params["search"]`: the
     sampler settings, the objective (metric, mode, `data`), `trial` = k and `history`, the
     model Artifacts of trials 0..k-1 (their committed meta holds what each trial did).
Out: the trained model (an ordinary train artifact) and the train meta plus
     {"search": {trial, params, state: complete | pruned, value, intermediate}}.

In (the winner, `search.sft`): `trials`, every trial's Artifact; `mode`, `metric`.
Out: the best complete trial's files, copied unchanged (so its digest is the winner's, as
     with select), and {"selected", "scores", "pruned", "params"}.

The study lives nowhere but in the trials' committed metadata: a trial builds an in-memory
study, replays trials 0..k-1 through ask/tell (the replayed values are checked against the
recorded ones: a different Optuna would fail loudly, and its version is in every trial key),
then asks for its own values. TPE is `optuna.samplers.TPESampler(seed, n_startup_trials =
startup)`; `pruner = median` is `optuna.pruners.MedianPruner()` (Optuna's defaults: no
pruning before 5 finished trials), fed the validation losses the trainer reports every
eval_steps; a pruned trial stops training there and is committed with state "pruned".
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ftlang.stdlib.spec import (
    REQUIRED,
    Artifact,
    Attr,
    Call,
    Signature,
    StepContext,
    StepError,
    StepSpec,
)

NAME = "search"  # the train sub-block, and the param key trials carry their settings in
TRIAL_RUN = "ftlang.stdlib.search:run_trial"
CALLBACKS = "search_callbacks"  # a key of the params the trainer's callbacks() adds to its list
METRICS = ("loss", "perplexity")
SAMPLERS = ("tpe", "random")
PRUNERS = ("none", "median")

SIGNATURE = Signature("search", (
    Attr("trials", "int", REQUIRED, "how many trials; raising it runs only the new ones", ge=1, le=10_000),
    Attr("objective", "any", REQUIRED, "`objective = min loss on <dataset>`: each trial's model is "
         "measured on the dataset after training (loss or perplexity; min or max)"),
    Attr("sampler", "enum", "tpe", "tpe (Optuna's TPESampler) or random (RandomSampler)", choices=SAMPLERS),
    Attr("seed", "int", 0, "the sampler's seed: trial k's values are a function of it and of the "
         "results of trials before k", ge=0, le=2**31 - 1),
    Attr("startup", "int", 4, "random trials before TPE models the results (n_startup_trials)", ge=1,
         le=10_000),
    Attr("pruner", "enum", "none", "median: stop a trial whose validation loss is worse than the "
         "median of earlier trials at the same step (needs eval_data)", choices=PRUNERS),
), "Bayesian hyperparameter search (Optuna) over the values written `lr = search(loguniform(1e-5, "
   "1e-3))`, `search(uniform(0, 0.1))` or `search(choice([8, 16, 32]))` (a numeric train attribute, "
   "or an argument of its method: `lora(r = search(choice([8, 16])))`), with e.g. `search { trials "
   "= 16, sampler = tpe, objective = min loss on d, pruner = median }`. Each trial is an ordinary "
   "cached train node, train.NAME[trial=K], whose values Optuna proposes from the seed and the "
   "results of trials 0..K-1 (replayed from the cache: rerunning trains nothing, more trials run "
   "only the new ones); search.NAME keeps the best trial and is what other blocks get.")


def optuna_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("optuna")
    except metadata.PackageNotFoundError:
        return "absent"


def is_space(value: Any) -> bool:
    """A search(...) value (a transform may rebuild a Call without its family: ask the args)."""
    return isinstance(value, Call) and value.name == "search" and "space" in value.args


def has_space(value: Any) -> bool:
    """Whether `find(value, "")` finds anything, without building its dotted places."""
    if isinstance(value, Call):
        return is_space(value) or any(has_space(v) for v in value.args.values())
    if isinstance(value, dict):
        return any(has_space(v) for v in value.values())
    return False


def find(value: Any, path: str) -> list[tuple[str, Call]]:
    """Every search(...) Call in a params dict or call, with its dotted place."""
    out: list[tuple[str, Call]] = []
    if isinstance(value, Call):
        if is_space(value):
            return [(path, value)]
        for k, v in value.args.items():
            out += find(v, f"{path}.{k}" if path else k)
    elif isinstance(value, dict):
        for k, v in value.items():
            if not path and k == NAME:
                continue
            out += find(v, f"{path}.{k}" if path else str(k))
    return out


def _distribution(call: Call) -> Any:
    import optuna.distributions as d

    a = call.args
    if a["space"] == "choice":
        return d.CategoricalDistribution(list(a["choices"]))
    log = a["space"] == "loguniform"
    if a["type"] == "int":
        return d.IntDistribution(int(a["low"]), int(a["high"]), log=log)
    return d.FloatDistribution(float(a["low"]), float(a["high"]), log=log)


def substitute(value: Any, values: Mapping[str, Any], path: str = "") -> Any:
    """The params with each search(...) replaced by the trial's value."""
    if isinstance(value, Call):
        if is_space(value):
            return values[path]
        return Call(value.name, {k: substitute(v, values, f"{path}.{k}" if path else k)
                                 for k, v in value.args.items()}, value.family)
    if isinstance(value, dict):
        return {k: (v if not path and k == NAME else substitute(v, values, f"{path}.{k}" if path else str(k)))
                for k, v in value.items()}
    return value


def _study(s: Mapping[str, Any]) -> Any:
    try:
        import optuna
    except ImportError as e:
        raise StepError("search { ... } needs Optuna", hint="pip install 'ftlang[search]'") from e

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = int(s["seed"])
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(s["startup"])) \
        if s["sampler"] == "tpe" else optuna.samplers.RandomSampler(seed=seed)
    pruner = optuna.pruners.MedianPruner() if s["pruner"] == "median" else optuna.pruners.NopPruner()
    return optuna.create_study(direction="minimize" if s["mode"] == "min" else "maximize",
                               sampler=sampler, pruner=pruner)


def replay(s: Mapping[str, Any], dists: dict[str, Any]) -> Any:
    """The study of trials 0..k-1, rebuilt from their committed metadata by ask/tell."""
    from optuna.trial import TrialState

    study = _study(s)
    for art in s["history"]:
        rec = art.meta.get(NAME) if isinstance(art.meta, dict) else None
        if not isinstance(rec, dict):
            raise StepError(f"{art.node} has no search record in its metadata",
                            hint=f"run it again: ft run FILE --force {art.node}")
        t = study.ask(dists)
        if t.params != rec["params"]:
            raise StepError(f"replaying {art.node} asked {t.params}, but it trained with {rec['params']}",
                            hint="the sampler changed (another Optuna?): rerun the search with --force")
        for step, v in rec["intermediate"]:
            t.report(float(v), int(step))
        if rec["state"] == "pruned":
            study.tell(t, state=TrialState.PRUNED)
        else:
            study.tell(t, float(rec["value"]))
    return study


def run_trial(ctx: StepContext) -> dict[str, Any]:
    """Trial k: replay, ask, train with the asked values (pruned when the pruner says so),
    measure the objective."""
    from ftlang.stdlib import train

    p = ctx.params
    s = p[NAME]
    searched = find(p, "")
    dists = {path: _distribution(call) for path, call in searched}
    study = replay(s, dists)
    trial = study.ask(dists)
    values = dict(trial.params)
    ctx.log(f"trial {s['trial']}: " + ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}"
                                                 for k, v in values.items()))
    intermediate: list[list[float]] = []
    pruned = [False]
    concrete = substitute(p, values)
    concrete[NAME] = None
    concrete[CALLBACKS] = [_reporter(trial, intermediate, pruned)]
    meta = train.run(dataclasses.replace(ctx, params=concrete))
    value = None
    if pruned[0]:
        ctx.log(f"trial {s['trial']} pruned at step {int(intermediate[-1][0])}")
    else:
        value = round(measure(ctx, meta, s, p), 6)
        ctx.log(f"trial {s['trial']}: {s['metric']} {value:g} on {s['data'].node}")
    rec = {"trial": s["trial"], "params": values, "state": "pruned" if pruned[0] else "complete",
           "value": value, "intermediate": intermediate, "metric": s["metric"], "mode": s["mode"]}
    return {**meta, NAME: rec, "pruned": pruned[0]}


def _reporter(trial: Any, intermediate: list[list[float]], pruned: list[bool]) -> Any:
    from transformers import TrainerCallback

    class Report(TrainerCallback):  # type: ignore[misc]
        """Each validation loss goes to the trial; the pruner may stop the training here."""

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                        **kw: Any) -> None:
            loss = (metrics or {}).get("eval_loss")
            if loss is None:
                return
            step, v = int(state.global_step), round(float(loss), 6)
            intermediate.append([step, v])
            trial.report(v, step)
            if trial.should_prune():
                pruned[0] = True
                control.should_training_stop = True

    return Report()


def measure(ctx: StepContext, meta: Mapping[str, Any], s: Mapping[str, Any], p: Mapping[str, Any]) -> float:
    """The objective of the model just written to ctx.out, measured as select measures."""
    from ftlang.stdlib import devices, select
    from ftlang.stdlib.examples import read_columns

    data: Artifact = s["data"]
    if p["objective"] == "clm":
        tf = p["text_field"]
        texts = [str(t) for t in read_columns(data, [tf])[tf] if t is not None]
        prompts, refs = [""] * len(texts), texts
    else:
        pf, cf = p["prompt_field"], p["completion_field"]
        cols = read_columns(data, [pf, cf])
        pairs = [(str(a), str(b)) for a, b in zip(cols[pf], cols[cf]) if a is not None and b is not None]
        prompts, refs = [a for a, _ in pairs], [b for _, b in pairs]
    if not refs:
        raise StepError("the search objective's dataset has no rows", path=data.dataset_file())
    sctx = dataclasses.replace(ctx, params={"objective": "clm" if p["objective"] == "clm" else "sft",
                                            "batch_size": 16, "metric": s["metric"], "max_new_tokens": 1})
    with _beside_its_bases(ctx.out, p["from"], ctx.cache) as folder:
        return select.score(sctx, Artifact(ctx.node, "", folder, None, dict(meta)), prompts, refs,
                            devices.resolve(p["device"]))


@contextlib.contextmanager
def _beside_its_bases(out: Path, src: Artifact, cache: Path) -> Iterator[Path]:
    """The uncommitted model as a loader finds it: an adapter names its base by digest, looked
    up beside it (modelio.base_folder), so link the model and its chain of bases into one
    temporary folder (links only: nothing is copied, the cache is not touched)."""
    from ftlang.stdlib import modelio

    with tempfile.TemporaryDirectory(dir=cache, prefix="search-measure-") as tmp:
        here = Path(tmp)
        (here / "model").symlink_to(out.resolve(), target_is_directory=True)
        digest, folder = src.digest, Path(src.path)
        while digest and not (here / digest).exists():
            (here / digest).symlink_to(folder.resolve(), target_is_directory=True)
            meta = modelio.read_meta(folder)
            if meta.get("type") != "adapter":
                break
            digest, folder = meta["base"], folder.parent / meta["base"]
        yield here / "model"


# ---- the winner -------------------------------------------------------------------------------

def summary(meta: Mapping[str, Any]) -> str:
    kept = meta.get("selected")
    if not isinstance(kept, str):
        return ""
    pruned = len(meta.get("pruned") or [])
    return f"kept {kept.split('.', 1)[-1]}" + (f" ({pruned} pruned)" if pruned else "")


SPEC = StepSpec(
    kind="search", version=1, output="model", run="ftlang.stdlib.search:run",
    signature=Signature("search", (
        Attr("trials", "list[model]", REQUIRED, "every trial of one searched train block"),
        Attr("mode", "enum", "min", "whether the lowest or the highest objective wins", choices=("min", "max")),
        Attr("metric", "enum", "loss", "the objective's metric", choices=METRICS),
    ), "Keeps the best trial of a search (added by the compiler for `search { ... }`)."),
    summary=summary,
)


def run(ctx: StepContext) -> dict[str, Any]:
    from ftlang.stdlib.select import copy_artifact

    trials: list[Artifact] = list(ctx.params["trials"])
    scores: dict[str, float] = {}
    pruned: list[str] = []
    for art in trials:
        rec = art.meta.get(NAME) or {}
        if rec.get("state") == "complete" and rec.get("value") is not None:
            scores[art.node] = float(rec["value"])
        else:
            pruned.append(art.node)
    if not scores:
        raise StepError("every trial was pruned: nothing to keep", hint="raise trials, or set pruner = none")
    best = (min if ctx.params["mode"] == "min" else max)(scores.values())
    winner = next(a for a in trials if scores.get(a.node) == best)  # ties: the earlier trial
    copy_artifact(winner, ctx)
    ctx.log(f"selected {winner.node} ({ctx.params['metric']} {best:g})")
    return {"selected": winner.node, "scores": scores, "pruned": pruned,
            "params": (winner.meta.get(NAME) or {}).get("params"), "metric": ctx.params["metric"],
            "mode": ctx.params["mode"]}


# ---- what `ft plan` says about a trial ----------------------------------------------------------

def _values(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in values.items())


def plan_note(params: Mapping[str, Any], meta: Mapping[str, Any] | None,
              history: list[Mapping[str, Any] | None] | None = None) -> str | None:
    """What is known of a trial before the run: its values and result when committed; the
    values it will train with when trials 0..k-1 are all committed (`history`: their metas,
    None for one that must run first); else that they wait on the trial before."""
    s = params.get(NAME)
    if not isinstance(s, dict) or "trial" not in s:
        return None
    rec = (meta or {}).get(NAME)
    if isinstance(rec, dict):
        result = "pruned" if rec.get("state") == "pruned" else f"{rec.get('metric')} {rec.get('value')}"
        return f"trial {s['trial']}: {_values(rec.get('params') or {})}: {result}"
    k = int(s["trial"])
    first = "a random draw" if k < int(s["startup"]) or s["sampler"] == "random" else "TPE's proposal"
    if history is not None and all(isinstance(m, dict) and NAME in m for m in history):
        try:  # every earlier result is known: replay them as the trial will, and say the values
            arts = [Artifact(f"trial {j}", "", Path("."), None, dict(m)) for j, m in enumerate(history)]  # type: ignore[arg-type]
            dists = {path: _distribution(call) for path, call in find(params, "")}
            asked = replay({**s, "history": arts}, dists).ask(dists).params
            return f"trial {k}: will train with {_values(asked)} ({first})"
        except (ImportError, StepError):
            pass
    if k == 0:
        return f"trial 0: values are {first} (seed {s['seed']})"
    return f"trial {k}: values are {first} given trials 0..{k - 1}, known when trial {k - 1} is done"


def trial_summary(meta: Mapping[str, Any]) -> str:
    """The done line of a trial: its values and its objective (or that it was pruned)."""
    rec = meta.get(NAME)
    if not isinstance(rec, dict):
        return ""
    result = "pruned" if rec.get("state") == "pruned" else f"{rec.get('metric')} {rec.get('value'):.4g}"
    return f"{_values(rec.get('params') or {})}: {result}, {meta.get('steps')} steps"
