"""Online RL with trl: grpo, rloo and online_dpo, rewarded by Python functions or a reward model.

In:  a train block whose `method` is grpo(...), rloo(...) or online_dpo(...), `from` a
     model, `data` with a prompt column (other columns reach Python rewards as keyword
     arguments). `reward` is a list of py("file.py", "fn") and rm(model) calls.
Out: a model artifact (an adapter over `from`, or full weights) and, in the metadata, the
     mean reward at each logging step (`reward`), so a run shows whether it rose.

RLHF end to end is: an sft train block, a reward_model(...) block trained on preference
pairs, then rloo(reward = rm(that_block)), grpo(...) or ppo(...). trl 1.16 has no PPO trainer:
ppo is declared here with the others and runs ftlang's own loop (stdlib/ppo.py).

A py(...) reward is `fn(prompts, completions, **columns) -> list[float]`: prompts as
written in the data (not templated), completions as generated text. Its file's content
enters the node key (a `path` argument), so editing the reward reruns the training.
"""

from __future__ import annotations

from typing import Any

from ftlang.lang.diagnostics import Diagnostic
from ftlang.stdlib import distributed, modelio
from ftlang.stdlib import template as templates
from ftlang.stdlib.adapters import ADAPTER_ARG, apply_adapter, load_base
from ftlang.stdlib.pyfunc import load_function
from ftlang.stdlib.spec import (
    COUNT_LIMIT,
    REQUIRED,
    STEPS_LIMIT,
    TOKENS_LIMIT,
    Artifact,
    Attr,
    BlockView,
    Call,
    Method,
    Signature,
    StepContext,
    StepError,
    error,
    points,
    warning,
)
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

# ---- declarations: the reward family and the online methods (the compiler reads these) -------

REWARDS = {
    "py": Signature("py", (
        Attr("file", "path", REQUIRED, "a Python file, relative to the .ft file (its content enters the key)"),
        Attr("function", "str", REQUIRED, "fn(prompts, completions, **columns) -> list[float]"),
    ), "A reward computed by a Python function; extra dataset columns arrive as keyword "
       "arguments (`answer=[...]`).", positional=("file", "function")),
    "rm": Signature("rm", (
        Attr("model", "model", REQUIRED, "a model trained with method = reward_model(...)"),
    ), "The score of a reward model trained in this file.", positional=("model",)),
}

_NEW_TOKENS = Attr("max_new_tokens", "int", 16, "generation budget per completion (at most the model's "
                   "positions left after the longest prompt)", ge=1, le=TOKENS_LIMIT)
_GEN = (
    Attr("generations", "int", 4, "completions sampled per prompt", ge=2, le=COUNT_LIMIT),
    _NEW_TOKENS,
    Attr("temperature", "float", 1.0, "sampling temperature", gt=0),
)
_REWARD = Attr("reward", "list[call[reward]]", REQUIRED,
               'py("rewards.py", "fn") functions and/or rm(model) reward models; their scores add up')
_RUN = "ftlang.stdlib.rl:run"


def _unused(name: str, *, uses_max_length: bool) -> dict[str, str]:
    no_eval = f"{name} has no validation pass: its reward at each logging step is in the run's metadata"
    out = {**own_objective(name, ("prompt",)), "eval_data": no_eval, "eval_steps": no_eval, "patience": no_eval}
    if not uses_max_length:
        out["max_length"] = f"{name}'s budget is max_new_tokens per completion; prompts are not cut"
    return out


# trl samples through peft's own generate, which (peft 0.21 + transformers 5.24) drops the
# virtual tokens of prompt and prefix tuning: the policy would learn from the base model's
# samples. ftlang's own generation is right (stdlib/generate.py), trl's is not: refused.
_VIRTUAL_ADAPTERS = ("prompt_tuning", "prefix_tuning")


def reward_rules(call: Call, b: BlockView) -> list[Diagnostic]:
    """At least one reward; rm(model) scores with a model trained as a reward model; no
    virtual-token adapters."""
    out = []
    if isinstance(call.args.get("reward"), list) and not call.args["reward"]:
        # Every online method learns only from its rewards: an empty list trains on nothing.
        out.append(error("FT0240", f"{call.name} has no reward", b.at("method"), "reward = []",
                         help='give py("rewards.py", "fn") and/or rm(reward_model_block)'))
    adapters = {getattr(a, "name", None) for a in points(call.args.get("adapter"))}
    for name in sorted(adapters & set(_VIRTUAL_ADAPTERS)):
        out.append(error("FT0114", f"{call.name} cannot train a {name} adapter",
                         b.at("method"), "samples would come from the base model",
                         help="trl generates with peft's generate, which drops the virtual tokens in this "
                              "peft/transformers; use adapter = lora(...) or ia3(...)"))
    for r in call.args.get("reward") or []:
        target = r.args.get("model") if isinstance(r, Call) and r.name == "rm" else None
        if not isinstance(getattr(target, "node", None), str):
            continue
        written = b.lookup(target.node.split(".", 1)[1].split("[", 1)[0])
        if written is None:
            continue
        method = written.calls.get("method") if written.kind == "train" else None
        if method is None or method[0] != "reward_model":
            out.append(warning("FT0114", f"`{target.label}` is not trained with method = reward_model(...)",
                               target.span or b.at("method"), "not a reward model",
                               help="rm(...) scores with a sequence-classification model"))
    return out


def _grpo_reference(call: Call) -> bool:
    """grpo trains against a reference model only with a KL penalty (any swept point)."""
    return any(isinstance(b, (int, float)) and b > 0 for b in points(call.args.get("beta")))


def _ppo_unused() -> dict[str, str]:
    own = "ppo runs its own loop: "
    return {**_unused("ppo", uses_max_length=False),
            "grad_accum": own + "each rollout batch is split into `mini_batches` optimiser steps instead",
            "save_steps": own + "it does not write mid-run checkpoints (a rerun starts over)",
            "save_limit": own + "it does not write mid-run checkpoints",
            "report_to": own + "its per-step reward, KL and losses are in the run's metadata",
            "eval_every": own + "it has no validation pass",
            "save_every": own + "it does not write mid-run checkpoints",
            "keep_checkpoints": own + "it does not write mid-run checkpoints",
            "stop_if_loss_above": own + "a nan or inf loss fails the step; PPO's loss is not a quality measure",
            "stop_if_loss_above_steps": own + "a nan or inf loss fails the step",
            "attention": own + "the model keeps its default attention kernel",
            "distributed": own + "a single process; it has no DDP, FSDP or DeepSpeed integration"}


def ppo_rules(call: Call, b: BlockView) -> list[Diagnostic]:
    """reward_rules, plus: no more mini-batches than rollout rows."""
    out = reward_rules(call, b)
    for mb in points(call.args.get("mini_batches")):
        for bs in points(b.params.get("batch_size")):
            if isinstance(mb, int) and isinstance(bs, int) and mb > bs:
                out.append(error("FT0241", f"ppo splits each batch of {bs} rollouts into {mb} mini-batches",
                                 b.at("method"), f"mini_batches = {mb}",
                                 help=f"use mini_batches <= batch_size ({bs}), or a larger batch_size"))
    return out


ONLINE_METHODS = (
    Method(Signature("grpo", (
        _REWARD, *_GEN,
        Attr("beta", "float", 0.0, "KL penalty to the reference model (0: no reference model)", ge=0),
        Attr("loss", "enum", "dapo", "trl's GRPO loss normalisation",
             choices=("grpo", "bnpo", "dr_grpo", "dapo")),
        ADAPTER_ARG,
    ), "Group relative policy optimisation: sample a group per prompt, reward each "
       "completion, push towards the better ones."),
           family="online", run=_RUN, lr=1e-6, lr_adapter=1e-5, columns=("prompt",),
           reference=_grpo_reference, unused=_unused("grpo", uses_max_length=False), rules=reward_rules),
    Method(Signature("rloo", (
        _REWARD, *_GEN,
        Attr("beta", "float", 0.05, "KL penalty to the reference model", ge=0),
        ADAPTER_ARG,
    ), "REINFORCE leave-one-out: the RLHF step after a reward model (trl 1.16 has no PPO)."),
           family="online", run=_RUN, lr=1e-6, lr_adapter=1e-5, columns=("prompt",), reference=True,
           unused=_unused("rloo", uses_max_length=False), rules=reward_rules),
    Method(Signature("online_dpo", (
        _REWARD,
        Attr("beta", "float", 0.1, "strength of the KL penalty to the reference model", gt=0),
        Attr("loss", "enum", "sigmoid", "DPO loss on the judged pairs", choices=("sigmoid", "ipo")),
        _NEW_TOKENS,
        Attr("temperature", "float", 0.9, "sampling temperature", gt=0),
        ADAPTER_ARG,
    ), "Online DPO: two completions per prompt, the reward picks chosen and rejected "
       "(trl.experimental.online_dpo)."),
           family="online", run=_RUN, lr=5e-7, lr_adapter=5e-6, columns=("prompt",), reference=True,
           unused=_unused("online_dpo", uses_max_length=True), rules=reward_rules),
    # PPO runs ftlang's own loop (stdlib/ppo.py): trl 1.16 has no PPO trainer.
    Method(Signature("ppo", (
        _REWARD, _NEW_TOKENS,
        Attr("temperature", "float", 1.0, "sampling temperature (log-probabilities use the same)", gt=0),
        Attr("top_k", "int", 0, "sample among the k likeliest tokens (0: all)", ge=0, le=COUNT_LIMIT),
        Attr("top_p", "float", 1.0, "nucleus sampling: the smallest set of tokens with this mass", gt=0, le=1),
        Attr("kl_coef", "float", 0.05, "per-token KL penalty to the reference model (the start value "
             "when kl_target is set)", ge=0),
        Attr("kl_target", "float", None, "adapt kl_coef towards this KL per completion (None: fixed)", gt=0),
        Attr("kl_horizon", "int", 10000, "rows over which the adaptive kl_coef moves by up to 20%",
             ge=1, le=STEPS_LIMIT),
        Attr("gamma", "float", 1.0, "discount of future rewards (GAE)", ge=0, le=1),
        Attr("lam", "float", 0.95, "GAE lambda: bias (0) against variance (1) of the advantages", ge=0, le=1),
        Attr("clip_range", "float", 0.2, "PPO's policy ratio clip", gt=0),
        Attr("clip_range_value", "float", 0.2, "how far the value may move from the rollout's", gt=0),
        Attr("vf_coef", "float", 0.1, "weight of the value loss", ge=0),
        Attr("ppo_epochs", "int", 4, "optimisation passes over each rollout batch", ge=1, le=COUNT_LIMIT),
        Attr("mini_batches", "int", 2, "mini-batches each rollout batch is split into (one optimiser "
             "step each)", ge=1, le=COUNT_LIMIT),
        Attr("whiten", "bool", True, "whiten the advantages of each rollout batch"),
        ADAPTER_ARG,
    ), "Proximal policy optimisation (InstructGPT-style RLHF): sample, score with the rewards, "
       "KL-penalise per token against the reference, GAE advantages from a value head on the "
       "policy, clipped policy and value losses (stdlib/ppo.py)."),
           family="online", run="ftlang.stdlib.ppo:run", lr=1e-6, lr_adapter=1e-5, columns=("prompt",),
           reference=True, unused=_ppo_unused(), rules=ppo_rules),
)

PROMPT_COLUMN = "_ft_prompt"  # the untemplated prompt, handed to py() rewards as `prompts`
# trl keeps a `completion` column from reward functions: it travels under this name instead.
COMPLETION_COLUMN = "_ft_completion"


def py_reward(call: Call) -> Any:
    fn = load_function(call.args["file"], str(call.args["function"]), what="reward")

    def reward(prompts: list[str], completions: list[Any], **columns: Any) -> list[float]:
        raw = columns.pop(PROMPT_COLUMN, prompts)
        if COMPLETION_COLUMN in columns:
            columns["completion"] = columns.pop(COMPLETION_COLUMN)
        for k in ("completion_ids", "trainer_state", "log_extra", "log_metric"):
            columns.pop(k, None)
        texts = [c if isinstance(c, str) else str(c) for c in completions]
        values = fn(list(raw), texts, **columns)
        try:
            out = [float(v) for v in values]
        except (TypeError, ValueError) as e:
            raise StepError(f"reward {call.args['function']} must return a list of numbers, got {values!r}"[:300]) from e
        if len(out) != len(texts):
            raise StepError(f"reward {call.args['function']} returned {len(out)} values for {len(texts)} completions")
        return out

    reward.__name__ = str(call.args["function"])
    return reward


class RewardModel:
    """rm(model): a sequence-classification model's logit for prompt + completion + EOS
    (the text shape reward_model training used)."""

    def __init__(self, artifact: Artifact, device: str) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        modelio.quiet()
        folder = modelio.weights_folder(artifact)
        if modelio.read_meta(artifact)["type"] == "adapter":
            raise StepError("rm(...) needs a reward model saved as weights (method = reward_model(...))",
                            path=artifact.path)
        try:
            self.lm = AutoModelForSequenceClassification.from_pretrained(str(folder), dtype=torch.float32)
        except (OSError, ValueError) as e:
            raise StepError(f"rm(...): cannot load {artifact.node} as a reward model: {e}",
                            hint="train it with method = reward_model(...)") from e
        if int(getattr(self.lm.config, "num_labels", 1)) != 1:
            raise StepError(f"rm(...): {artifact.node} has {self.lm.config.num_labels} labels, not 1")
        self.lm.eval().to(device)
        for param in self.lm.parameters():
            param.requires_grad_(False)
        self.tokenizer = modelio.load_tokenizer(artifact)
        self.device = device
        self.__name__ = "rm_" + artifact.node.split(".", 1)[-1]

    def __call__(self, prompts: list[str], completions: list[Any], **_: Any) -> list[float]:
        import torch

        tok = self.tokenizer
        texts = [p + (c if isinstance(c, str) else str(c)) + tok.eos_token for p, c in zip(prompts, completions)]
        scores: list[float] = []
        with torch.no_grad():
            # One row at a time when pad == eos: the pooling would mistake the EOS for padding.
            step = 16 if tok.pad_token_id != tok.eos_token_id else 1
            for i in range(0, len(texts), step):
                enc = tok(texts[i:i + step], add_special_tokens=True, padding=True, return_tensors="pt")
                out = self.lm(input_ids=enc["input_ids"].to(self.device),
                              attention_mask=enc["attention_mask"].to(self.device))
                scores += [float(x) for x in out.logits[:, 0]]
        return scores


def reward_functions(calls: list[Any], device: str) -> list[Any]:
    out = []
    for c in calls or []:
        if not isinstance(c, Call):
            raise StepError(f"a reward is py(...) or rm(...), got {c!r}")
        out.append(py_reward(c) if c.name == "py" else RewardModel(c.args["model"], device))
    if not out:
        raise StepError("no reward given", hint='reward = py("rewards.py", "my_reward")')
    return out


def dataset(data: Artifact, tpl: dict[str, Any]) -> Any:
    import pyarrow.parquet as pq
    from datasets import Dataset

    table = pq.read_table(data.dataset_file())
    if "prompt" not in table.column_names:
        raise StepError(f"the dataset {data.node} has no column 'prompt' (it has "
                        f"{', '.join(table.column_names)})",
                        hint="rename it in a curate query: SELECT question AS prompt, ...")
    cols = table.to_pydict()
    raw = [str(p) for p in cols.pop("prompt")]
    cols = {(COMPLETION_COLUMN if k == "completion" else k): v for k, v in cols.items()
            if k not in ("chosen", "rejected")}
    return Dataset.from_dict({"prompt": [templates.render_prompt(tpl, p) for p in raw], PROMPT_COLUMN: raw, **cols})


def run(ctx: StepContext) -> dict[str, Any]:
    p = ctx.params
    s: TrlSetup = trl_setup(ctx)
    name, a = s.method.name, s.method.args
    train_ds = dataset(p["data"], s.template)
    rewards = reward_functions(a["reward"], s.device)

    from transformers import set_seed

    lm = load_base(s.src, s.adapter, s.device, ctx.cache,
                   gradient_checkpointing=bool(p["gradient_checkpointing"]),
                   quant_storage=distributed.quant_storage(p))
    # grpo and rloo declare max_length unused (Method.unused): only online_dpo passes it on.
    max_length = clamp_length(ctx, lm, int(p["max_length"])) if name == "online_dpo" else 0
    new_tokens = generation_budget(ctx, lm, s.tokenizer, train_ds["prompt"], int(a["max_new_tokens"]))
    set_seed(s.seed)
    lm = apply_adapter(lm, s.adapter, tokenizer_dir=modelio.tokenizer_folder(s.src))
    trainable = modelio.count_params(lm, trainable=True)
    kw, folder = trl_settings(ctx, s, has_eval=False)
    from ftlang.stdlib.generate import stop_ids

    stop = stop_ids(s.tokenizer, s.template)  # EOS and the template's end-of-turn token
    gen_kwargs = {"eos_token_id": stop, "pad_token_id": s.tokenizer.pad_token_id}
    history: list[dict[str, float]] = []
    evals: list[dict[str, float]] = []
    cbs = callbacks(ctx, history, evals, p)
    if name in ("grpo", "rloo"):
        g = int(a["generations"])
        # The batch counts completions: a whole number of groups of `generations`.
        batch = max(g, -(-int(p["batch_size"]) // g) * g)
        kw["per_device_train_batch_size"] = batch
        common = dict(num_generations=g, max_completion_length=new_tokens,
                      temperature=float(a["temperature"]), beta=float(a["beta"]),
                      generation_kwargs=gen_kwargs, shuffle_dataset=kw["train_sampling_strategy"] == "random")
        if name == "grpo":
            from trl import GRPOConfig, GRPOTrainer

            config = GRPOConfig(**kw, **common, loss_type=a["loss"])
            trainer = GRPOTrainer(model=lm, reward_funcs=rewards, args=config, train_dataset=train_ds,
                                  processing_class=s.tokenizer, callbacks=cbs)
        else:
            from trl import RLOOConfig, RLOOTrainer

            config = RLOOConfig(**kw, **common)
            trainer = RLOOTrainer(model=lm, reward_funcs=rewards, args=config, train_dataset=train_ds,
                                  processing_class=s.tokenizer, callbacks=cbs)
    elif name == "online_dpo":
        from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

        config = OnlineDPOConfig(**kw, beta=[float(a["beta"])], loss_type=a["loss"],
                                 max_new_tokens=new_tokens, max_length=max_length,
                                 temperature=float(a["temperature"]), generation_kwargs=gen_kwargs)
        trainer = OnlineDPOTrainer(model=lm, ref_model=reference_model(s, ctx), reward_funcs=rewards, args=config,
                                   train_dataset=train_ds, processing_class=s.tokenizer, callbacks=cbs)
    else:
        raise StepError(f"{name} is not an online RL method")
    ctx.log(f"{name} with {s.adapter.name}: {len(train_ds)} prompts, {trainable:,} trainable parameters, "
            f"lr {s.lr:g}, rewards {', '.join(getattr(r, '__name__', 'rm') for r in rewards)}")
    result, seconds = fit(ctx, trainer, folder)
    save_trained(trainer.model, s.tokenizer, ctx, s.src, s.adapter, s.template)
    curve = _reward_curve(trainer)
    meta = report(history, evals, result, seconds, prompts=len(train_ds), trainable_params=trainable,
                  lr=s.lr, device=s.device, reward=[r for _, r in curve], reward_steps=[k for k, _ in curve],
                  max_new_tokens=new_tokens)
    if curve:
        meta["final_reward"] = curve[-1][1]
        ctx.log(f"{name}: {meta['steps']} steps in {seconds:.1f} s; mean reward "
                f"{curve[0][1]:.3f} -> {curve[-1][1]:.3f}")
    return meta


def generation_budget(ctx: StepContext, lm: Any, tokenizer: Any, prompts: list[str], wanted: int) -> int:
    """max_new_tokens, capped so that the longest (templated) prompt plus its completion fits
    in the model's positions: beyond them generation cannot go on meaningfully, and a budget
    far above them only makes every step slow."""
    limit = getattr(lm.config, "max_position_embeddings", None)
    if not limit or not prompts:
        return wanted
    longest = max(len(ids) for ids in tokenizer(list(prompts), add_special_tokens=True)["input_ids"])
    room = int(limit) - longest
    if room < 1:
        raise StepError(f"the longest prompt has {longest} tokens: it fills the model's {limit} positions",
                        hint="shorten the prompts (or the template's system message), or use a model "
                             "with a longer context")
    if wanted > room:
        ctx.log(f"max_new_tokens {wanted}: the model has {limit} positions and the longest prompt "
                f"{longest} tokens, so completions stop at {room} new tokens")
        return room
    return wanted


def _reward_curve(trainer: Any) -> list[tuple[int, float]]:
    """(step, mean reward) at each logging step: trl logs `reward` (grpo, rloo) or
    `objective/scores` (online dpo)."""
    out = []
    for entry in trainer.state.log_history:
        for key in ("reward", "objective/scores"):
            if key in entry and isinstance(entry[key], (int, float)):
                out.append((int(entry.get("step", 0)), round(float(entry[key]), 6)))
                break
    return out
