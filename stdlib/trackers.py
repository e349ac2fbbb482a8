"""Experiment trackers (`report_to = ["mlflow", "wandb"]`) as their users run them.

In:  the step context (node id, node key, the run id and the .ft source, see `run_facts`)
     and the tracker names of `report_to`.
Out: transformers callbacks (MLflowCallback / WandbCallback subclasses) that name the run
     "<node id> <run id>" and log the node id, node key and the .ft source as params.

Where they log is the user's environment's to say: W&B logs online when WANDB_MODE says
so (or WANDB_PROJECT is set and WANDB_MODE is not), MLflow to MLFLOW_TRACKING_URI when it
is set. Otherwise both stay on disk under `.ft/cache/runs/<node>/` (W&B offline, an MLflow
file store): a pipeline never reaches a server nobody asked for.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

from ftlang.stdlib.spec import StepContext, StepError

RUN_ID_ENV = "FTLANG_RUN_ID"  # set by the executor for the run: the ledger's run id
SOURCE_ENV = "FTLANG_SOURCE"  # the .ft file being run (absolute path)
_OURS: dict[str, str] = {}  # environment values ftlang set itself (not the user's choice)


def _users(name: str) -> str | None:
    """The environment variable as the user set it: one ftlang set for an earlier step of
    this process (the next node gets its own folder) does not count."""
    value = os.environ.get(name)
    return None if value is None or _OURS.get(name) == value else value


def _set(name: str, value: str) -> None:
    os.environ[name] = value
    _OURS[name] = value


def run_facts(ctx: StepContext) -> tuple[str, Path | None]:
    """(run id, .ft file) of the run this step belongs to; ("", None) for a step run by hand."""
    src = os.environ.get(SOURCE_ENV)
    return os.environ.get(RUN_ID_ENV, ""), (Path(src) if src else None)


def run_name(ctx: StepContext) -> str:
    run_id, _ = run_facts(ctx)
    return f"{ctx.node} {run_id}".strip()


def ft_params(ctx: StepContext) -> dict[str, str]:
    """What every tracker run records about where it came from."""
    run_id, src = run_facts(ctx)
    out = {"ft.node": ctx.node, "ft.key": ctx.key, "ft.run_id": run_id}
    if src is not None and src.is_file():
        out["ft.file"] = src.name
        out["ft.source"] = src.read_text(encoding="utf-8", errors="replace")
    return out


def _logdir(ctx: StepContext) -> Path:
    return ctx.cache / "runs" / re.sub(r"[^\w.=-]+", "_", ctx.node)


def wandb_mode() -> str:
    """"online" or "offline" (or what WANDB_MODE says: disabled, dryrun, ...)."""
    mode = _users("WANDB_MODE")
    if mode:
        return mode
    return "online" if _users("WANDB_PROJECT") else "offline"


def callbacks(ctx: StepContext, names: list[str]) -> list[Any]:
    found: list[Any] = []
    for name in ("mlflow", "wandb"):
        if name not in names:
            continue
        if importlib.util.find_spec(name) is None:
            raise StepError(f"report_to = [\"{name}\"] needs the {name} package", hint=f"pip install {name}")
        found.append(_mlflow(ctx) if name == "mlflow" else _wandb(ctx))
    return found


def _mlflow(ctx: StepContext) -> Any:
    from transformers.integrations import MLflowCallback

    where = _users("MLFLOW_TRACKING_URI")
    if not where:
        logdir = _logdir(ctx)
        logdir.mkdir(parents=True, exist_ok=True)
        # A plain file store under .ft/ (mlflow 3 wants an explicit opt-in for it). setdefault:
        # a user's MLFLOW_ALLOW_FILE_STORE stays theirs.
        where = (logdir / "mlruns").as_uri()
        _set("MLFLOW_TRACKING_URI", where)
        if _users("MLFLOW_ALLOW_FILE_STORE") is None:
            _set("MLFLOW_ALLOW_FILE_STORE", "true")
        ctx.log(f"mlflow logs in {logdir}")
    else:
        ctx.log(f"mlflow logs to {where}")
    params = ft_params(ctx)
    name = run_name(ctx)

    class FtMLflow(MLflowCallback):  # type: ignore[misc]
        def setup(self, args: Any, state: Any, model: Any) -> None:
            args.run_name = name
            super().setup(args, state, model)
            if not state.is_world_process_zero:
                return
            import mlflow

            limit = mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
            source = params.get("ft.source")
            short = {k: v for k, v in params.items() if k != "ft.source"}
            if source is not None:
                # The whole file as an artifact; the param holds as much as MLflow allows.
                short["ft.source"] = source[:limit]
                mlflow.log_text(source, f"ft/{params.get('ft.file', 'pipeline.ft')}")
            mlflow.log_params(short)

    return FtMLflow()


def _wandb(ctx: StepContext) -> Any:
    from transformers.integrations import WandbCallback

    mode = wandb_mode()
    if _users("WANDB_MODE") is None:
        _set("WANDB_MODE", mode)
    if not _users("WANDB_DIR"):
        logdir = _logdir(ctx)
        logdir.mkdir(parents=True, exist_ok=True)
        _set("WANDB_DIR", str(logdir))
    if not _users("WANDB_PROJECT"):
        _set("WANDB_PROJECT", "ftlang")
    if _users("WANDB_SILENT") is None:
        # W&B prints its banner lines to the terminal itself (not through logging, so ftlang's
        # quiet mode cannot catch them): silence it at the source, unless -v asked for them.
        if ctx.verbose:
            os.environ.pop("WANDB_SILENT", None)
        else:
            _set("WANDB_SILENT", "true")
    ctx.log(f"wandb ({mode}, project {os.environ['WANDB_PROJECT']}) logs in {os.environ['WANDB_DIR']}")
    params = ft_params(ctx)
    name = run_name(ctx)

    class FtWandb(WandbCallback):  # type: ignore[misc]
        def setup(self, args: Any, state: Any, model: Any, **kwargs: Any) -> None:
            args.run_name = name
            super().setup(args, state, model, **kwargs)
            if self._wandb is not None and state.is_world_process_zero and self._wandb.run is not None:
                self._wandb.config.update(params, allow_val_change=True)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            super().on_train_end(args, state, control, **kwargs)
            # The next node of this process starts its own run instead of logging into this one.
            if self._wandb is not None and self._wandb.run is not None:
                self._wandb.finish()

    return FtWandb()
