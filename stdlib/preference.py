"""Preference optimisation with trl: dpo, orpo, kto and reward_model.

In:  a train block whose `method` is one of these calls, `from` a model (usually an SFT
     result), `data` with prompt/chosen/rejected columns (kto: prompt/completion/label).
Out: a model artifact like any train step's: an adapter over `from` (adapter = lora(...),
     ...) or full weights; reward_model writes a full sequence-classification model.

The reference model (dpo, kto) is `from` itself, adapters merged: with an adapter, trl
computes it by disabling the adapter; with full weights, a frozen copy is loaded.
Prompts and completions are rendered with the template the model was trained with (or
`template`), exactly as sft renders them, so preference training sees the same text.
"""

from __future__ import annotations

from typing import Any

from ftlang.stdlib import distributed, modelio
from ftlang.stdlib import template as templates
from ftlang.stdlib.adapters import ADAPTER_ARG, apply_adapter, load_base
from ftlang.stdlib.examples import as_text, read_columns
from ftlang.stdlib.spec import Artifact, Attr, Method, Signature, StepContext, StepError
from ftlang.stdlib.trainer import (
    TrlSetup,
    callbacks,
    clamp_length,
    fit,
    own_objective,
    reference_model,
    report,
    save_trained,
    trl_settings,
    trl_setup,
)

# ---- declarations: the preference methods (the compiler reads these) -------------------------

_PAIRS = ("prompt", "chosen", "rejected")
_KTO = ("prompt", "completion", "label")
_RUN = "ftlang.stdlib.preference:run"

PREFERENCE_METHODS = (
    Method(Signature("dpo", (
        Attr("beta", "float", 0.1, "strength of the KL penalty to the reference model", gt=0),
        Attr("loss", "enum", "sigmoid", "trl's DPO loss variant",
             choices=("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair",
                      "sppo_hard", "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop",
                      "sigmoid_norm")),
        Attr("label_smoothing", "float", 0.0, "conservative DPO / robust: assumed label noise", ge=0, le=0.5),
        ADAPTER_ARG,
    ), "Direct preference optimisation on prompt/chosen/rejected rows. The reference model "
       "is the `from` model, adapters merged.", positional=("beta",)),
           family="preference", run=_RUN, lr=5e-7, lr_adapter=5e-6, columns=_PAIRS, reference=True,
           unused=own_objective("dpo", _PAIRS)),
    Method(Signature("orpo", (
        Attr("beta", "float", 0.1, "weight of the odds-ratio term (lambda in the paper)", gt=0),
        ADAPTER_ARG,
    ), "ORPO: SFT and preference in one loss, no reference model (trl.experimental.orpo).",
        positional=("beta",)),
           family="preference", run=_RUN, lr=8e-6, lr_adapter=8e-5, columns=_PAIRS,
           unused=own_objective("orpo", _PAIRS)),
    Method(Signature("kto", (
        Attr("beta", "float", 0.1, "strength of the KL penalty to the reference model", gt=0),
        Attr("desirable_weight", "float", 1.0, "loss weight of rows labelled true", gt=0),
        Attr("undesirable_weight", "float", 1.0, "loss weight of rows labelled false", gt=0),
        ADAPTER_ARG,
    ), "KTO on unpaired rows: prompt, completion and a boolean label.", positional=("beta",)),
           family="preference", run=_RUN, lr=5e-7, lr_adapter=5e-6, columns=_KTO, reference=True,
           unused=own_objective("kto", _KTO)),
    Method(Signature("reward_model", (
        Attr("center", "float", 0.0, "penalty that keeps rewards centred on 0 (trl center_rewards_coefficient)", ge=0),
        ADAPTER_ARG,
    ), "A reward model: a sequence-classification head trained on prompt/chosen/rejected "
       "rows (Bradley-Terry). Use it in rm(...) for RL, or in the reward metric."),
           family="preference", run=_RUN, lr=1e-5, lr_adapter=1e-4, columns=_PAIRS,
           unused=own_objective("reward_model", _PAIRS)),
)
COLUMNS = {m.name: m.columns for m in PREFERENCE_METHODS}


def _rows(data: Artifact, method: str, tpl: dict[str, Any], eos: str) -> dict[str, list[Any]]:
    names = COLUMNS[method]
    cols = read_columns(data, list(names), hints={
        n: f"{method} reads the columns {', '.join(names)}: rename yours in a curate query "
           f"(SELECT x AS {n})" for n in names})
    n = len(cols["prompt"])
    keep = [i for i in range(n) if all(cols[c][i] is not None for c in names)]
    if not keep:
        raise StepError(f"no usable rows: {method} needs non-empty {', '.join(names)}", path=data.dataset_file())
    # A prompt cell may be a conversation ([{role, content}, ...]: multi-turn context and a
    # system message), rendered by a Jinja template with its generation prompt.
    if tpl.get("style") not in ("jinja", "chatml") and any(isinstance(cols["prompt"][i], list) for i in keep):
        raise StepError(f"{method}'s prompt column holds conversations: they need a chat template",
                        path=data.dataset_file(),
                        hint="template chat = llama3() (or qwen2_5(), mistral(), tokenizer(), ...), "
                             "then template = chat")
    raw = [as_text(cols["prompt"][i]) for i in keep]
    prompts = [templates.render_prompt(tpl, r) for r in raw]

    def answers(col: str) -> list[str]:
        return [templates.render_completion(tpl, str(cols[col][i]), r) for i, r in zip(keep, raw, strict=True)]
    if method == "kto":
        labels = cols["label"]
        bad = [labels[i] for i in keep if not isinstance(labels[i], (bool, int))]
        if bad:
            raise StepError(f"kto's label column holds {bad[0]!r}: it must be true/false",
                            path=data.dataset_file())
        return {"prompt": prompts,
                "completion": answers("completion"),
                "label": [bool(labels[i]) for i in keep]}
    out = {"prompt": prompts,
           "chosen": answers("chosen"),
           "rejected": answers("rejected")}
    if method == "reward_model":
        # The reward is read at the last token: EOS, as trl appends it (and as rm() scores).
        out["chosen"] = [c + eos for c in out["chosen"]]
        out["rejected"] = [r + eos for r in out["rejected"]]
    return out


def dataset(data: Artifact, method: str, tpl: dict[str, Any], tokenizer: Any) -> Any:
    from datasets import Dataset

    return Dataset.from_dict(_rows(data, method, tpl, tokenizer.eos_token))


def run(ctx: StepContext) -> dict[str, Any]:
    p = ctx.params
    s = trl_setup(ctx)
    name = s.method.name
    a = s.method.args
    train_ds = dataset(p["data"], name, s.template, s.tokenizer)
    eval_ds = dataset(p["eval_data"], name, s.template, s.tokenizer) if p["eval_data"] is not None else None

    from transformers import set_seed

    head = "reward" if name == "reward_model" else "causal"
    lm = load_base(s.src, s.adapter, s.device, ctx.cache, head=head,
                   gradient_checkpointing=bool(p["gradient_checkpointing"]),
                   quant_storage=distributed.quant_storage(p))
    max_length = clamp_length(ctx, lm, int(p["max_length"]))
    set_seed(s.seed)
    lm = apply_adapter(lm, s.adapter, "SEQ_CLS" if head == "reward" else "CAUSAL_LM",
                       tokenizer_dir=modelio.tokenizer_folder(s.src))
    trainable = modelio.count_params(lm, trainable=True)
    ctx.log(f"{name} with {s.adapter.name}: {len(train_ds)} rows, {trainable:,} trainable parameters, "
            f"lr {s.lr:g}, device {s.device}")
    kw, folder = trl_settings(ctx, s, has_eval=eval_ds is not None)
    history: list[dict[str, float]] = []
    evals: list[dict[str, float]] = []
    common = dict(train_dataset=train_ds, eval_dataset=eval_ds, processing_class=s.tokenizer,
                  callbacks=callbacks(ctx, history, evals, p))
    if name == "dpo":
        from trl import DPOConfig, DPOTrainer

        config = DPOConfig(**kw, beta=float(a["beta"]), loss_type=[a["loss"]],
                           label_smoothing=float(a["label_smoothing"]), max_length=max_length)
        trainer = DPOTrainer(model=lm, ref_model=reference_model(s, ctx), args=config, **common)
    elif name == "kto":
        from trl import KTOConfig, KTOTrainer

        # KTO estimates its KL term against neighbouring rows of a fixed-order batch: trl
        # needs the sequential sampler, so the rows are shuffled once here instead.
        if kw["train_sampling_strategy"] == "random":
            common["train_dataset"] = train_ds.shuffle(seed=s.seed)
        kw["train_sampling_strategy"] = "sequential"
        config = KTOConfig(**kw, beta=float(a["beta"]), desirable_weight=float(a["desirable_weight"]),
                           undesirable_weight=float(a["undesirable_weight"]), max_length=max_length)
        trainer = KTOTrainer(model=lm, ref_model=reference_model(s, ctx), args=config, **common)
    elif name == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        config = ORPOConfig(**kw, beta=float(a["beta"]), max_length=max_length)
        trainer = ORPOTrainer(model=lm, args=config, **common)
    elif name == "reward_model":
        from trl import RewardConfig, RewardTrainer

        center = float(a["center"])
        config = RewardConfig(**kw, max_length=max_length, center_rewards_coefficient=center or None)
        trainer = RewardTrainer(model=lm, args=config, **common)
    else:
        raise StepError(f"{name} is not a preference method")
    result, seconds = fit(ctx, trainer, folder)
    trained = trainer.model
    if name == "reward_model":
        _save_reward_model(trained, s, ctx)
    else:
        save_trained(trained, s.tokenizer, ctx, s.src, s.adapter, s.template)
    extra = _last_metrics(trainer)
    meta = report(history, evals, result, seconds, examples=len(train_ds), trainable_params=trainable,
                  lr=s.lr, device=s.device, **extra)
    ctx.log(f"{name}: {meta['steps']} steps in {seconds:.1f} s; final loss {meta['final_loss']:.4f}"
            + "".join(f", {k} {v:.3f}" for k, v in extra.items() if isinstance(v, float)))
    return meta


def _save_reward_model(lm: Any, s: TrlSetup, ctx: StepContext) -> None:
    """A reward model is saved as plain weights (adapter folded in), so that any
    AutoModelForSequenceClassification loader (rm(...), the reward metric) reads it."""
    if hasattr(lm, "merge_and_unload") and modelio.is_plain(lm):
        lm = lm.merge_and_unload()
    elif not modelio.is_plain(lm):
        raise StepError("reward_model trains through full weights, lora or ia3",
                        hint="use adapter = lora(...) or full")
    lm.eval()
    lm.to("cpu")
    lm.config.pad_token_id = s.tokenizer.pad_token_id
    modelio.save_full(lm, s.tokenizer, ctx.out, template=s.template)


TRACKED = ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "accuracy",
           "margin", "kl", "log_odds_ratio", "nll_loss")


def _last_metrics(trainer: Any) -> dict[str, float]:
    """Method-specific training metrics at the last logging step (trl names them)."""
    out: dict[str, float] = {}
    for entry in trainer.state.log_history:
        for k, v in entry.items():
            if k.split("/", 1)[-1] in TRACKED or k in TRACKED:
                if isinstance(v, (int, float)) and not k.startswith("eval_"):
                    out[k.replace("/", "_")] = round(float(v), 6)
    return out
