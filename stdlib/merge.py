"""merge: combine models (or adapters) into one full model by task arithmetic on their weights.

In:  `models` (model artifacts of one architecture and tokenizer; adapters are folded into
     their bases first), `method` linear | ties | dare_ties | dare_linear | svd, `weights`
     (default equal, summing to 1) and `base` (what task vectors are measured from;
     default: the common base when every model is an adapter over the same model).
Out: a full model artifact (safetensors + tokenizer), with the first model's template.

linear averages the weights themselves. The others work on task vectors tau_i = model_i -
base and add their combination back to the base:
  ties         keep each tau_i's `density` largest entries, elect a sign per weight (the
               sign of the weighted sum), average the entries that agree with it;
  dare_linear  drop entries of each tau_i at random (keep `density`), rescale by 1/density,
               weighted sum;
  dare_ties    the DARE drop, then the TIES sign election;
  svd          weighted sum, each matrix truncated to its top `rank` singular directions.
Merging is plain fp32 tensor code on CPU: the same inputs give the same bytes.
"""

from __future__ import annotations

from typing import Any

from ftlang.lang.diagnostics import Diagnostic
from ftlang.stdlib import modelio
from ftlang.stdlib.spec import (
    REQUIRED,
    Artifact,
    Attr,
    BlockView,
    Call,
    Signature,
    StepContext,
    StepError,
    StepSpec,
    error,
)

# ---- declarations (the compiler reads these) -----------------------------------------------

MERGES = {
    "linear": Signature("linear", (), "Weighted average of the models' weights."),
    "ties": Signature("ties", (
        Attr("density", "float", 0.5, "share of each task vector's largest entries kept", gt=0, le=1),
    ), "TIES: trim each task vector (model - base) to its largest entries, elect a sign per "
       "weight, average the agreeing entries.", positional=("density",)),
    "dare_ties": Signature("dare_ties", (
        Attr("density", "float", 0.5, "share of each task vector's entries kept (random, rescaled)", gt=0, le=1),
        Attr("seed", "int", 0, "seed of the random drop"),
    ), "DARE + TIES: drop task-vector entries at random and rescale, then TIES sign election.",
        positional=("density",)),
    "dare_linear": Signature("dare_linear", (
        Attr("density", "float", 0.5, "share of each task vector's entries kept (random, rescaled)", gt=0, le=1),
        Attr("seed", "int", 0, "seed of the random drop"),
    ), "DARE: drop task-vector entries at random, rescale, add the weighted sum to the base.",
        positional=("density",)),
    "svd": Signature("svd", (
        Attr("rank", "int", 16, "rank each merged weight update is truncated to", ge=1),
    ), "The weighted sum of task vectors, each matrix truncated to its top singular "
       "directions.", positional=("rank",)),
}

TASK_VECTOR_METHODS = tuple(m for m in MERGES if m != "linear")  # measured from a base model


def rules(b: BlockView) -> list[Diagnostic]:
    out = []
    models, weights, method = b.params.get("models"), b.params.get("weights"), b.params.get("method")
    if isinstance(models, list) and isinstance(weights, list) and len(models) != len(weights):
        out.append(error("FT0114", f"{len(weights)} weights for {len(models)} models", b.spans["weights"],
                         "one weight per model", help=f"give {len(models)} weights, or leave `weights` out"))
    if isinstance(models, list) and len(models) < 2 and isinstance(method, Call) and method.name != "linear":
        out.append(error("FT0114", "merging needs at least two models", b.at("models"), "one model",
                         help="to fold an adapter into its base, export it with merge = true"))
    return out


def summary(meta: dict[str, Any]) -> str:
    return f"{meta['params']:,} parameters" if isinstance(meta.get("params"), int) else ""


SPEC = StepSpec(
    kind="merge", version=1, output="model", run="ftlang.stdlib.merge:run",
    signature=Signature("merge", (
        Attr("models", "list[model]", REQUIRED, "the models (or adapters) to combine"),
        Attr("method", "call[merge]", "linear", "linear, ties(...), dare_ties(...), dare_linear(...), svd(...)"),
        Attr("weights", "list[float]", None, "one weight per model; default equal weights summing to 1"),
        Attr("base", "model", None, "the model task vectors are measured from (ties, dare, svd); "
             "default: the common base of adapter models"),
    ), "Combine models into one full model (task arithmetic on their weights); evaluate, "
       "train or export it like any model."),
    rules=rules, summary=summary,
)


def _load(art: Artifact) -> Any:
    if modelio.is_classifier(art):
        raise StepError(f"{art.node} is a reward model: merge merges language models",
                        hint="merge the models the reward models were trained from")
    lm = modelio.load_model(art, merged=True)
    if not modelio.is_plain(lm):
        raise StepError(f"{art.node} is prompt- or prefix-tuned: it has no weights to merge",
                        hint="merge full models, LoRA or IA3 adapters")
    return lm


def _common_base(models: list[Artifact]) -> Artifact | None:
    metas = [modelio.read_meta(m) for m in models]
    bases = {m.get("base") for m in metas if m["type"] == "adapter"}
    if len(bases) == 1 and all(m["type"] == "adapter" for m in metas):
        digest = bases.pop()
        return Artifact("base", digest, modelio.base_folder(models[0]))
    return None


def _state(lm: Any) -> dict[str, Any]:
    return {k: v.detach().to("cpu").float() if v.is_floating_point() else v.detach().to("cpu")
            for k, v in lm.state_dict().items()}


def trim(tau: Any, density: float) -> Any:
    """tau with all but its `density` share of largest-magnitude entries set to 0."""
    import torch

    k = max(1, int(round(density * tau.numel())))
    if k >= tau.numel():
        return tau
    flat = tau.abs().flatten()
    threshold = torch.topk(flat, k, largest=True, sorted=True).values[-1]
    return torch.where(tau.abs() >= threshold, tau, torch.zeros_like(tau))


def dare(tau: Any, density: float, generator: Any) -> Any:
    import torch

    keep = torch.rand(tau.shape, generator=generator) < density
    return torch.where(keep, tau / density, torch.zeros_like(tau))


def elect(taus: list[Any], weights: list[float]) -> Any:
    """TIES: the per-entry sign of the weighted sum, then the weighted mean of the entries
    that agree with it (entries of the other sign, and zeros, take no part)."""
    import torch

    total = sum(w * t for w, t in zip(weights, taus))
    sign = torch.sign(total)
    num = torch.zeros_like(taus[0])
    den = torch.zeros_like(taus[0])
    for w, t in zip(weights, taus):
        agree = (torch.sign(t) == sign) & (t != 0)
        num += torch.where(agree, w * t, torch.zeros_like(t))
        den += torch.where(agree, torch.full_like(t, abs(w)), torch.zeros_like(t))
    return torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num)) * sum(weights)


def low_rank(delta: Any, rank: int) -> Any:
    import torch

    if delta.dim() != 2 or min(delta.shape) <= rank:
        return delta
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank]


def combine(states: list[dict[str, Any]], base: dict[str, Any] | None, method: Call,
            weights: list[float]) -> dict[str, Any]:
    """The merged state dict (pure tensor code, exposed for tests)."""
    import torch

    name, a = method.name, method.args
    # Each method declares only its own arguments (linear none, svd only rank).
    generator = torch.Generator().manual_seed(int(a["seed"])) if name.startswith("dare_") else None
    out: dict[str, Any] = {}
    for key in states[0]:  # state-dict order: fixed for an architecture, so the drop masks are too
        tensors = [s[key] for s in states]
        if not tensors[0].is_floating_point():
            out[key] = tensors[0]
            continue
        if name == "linear" or base is None:
            out[key] = sum(w * t for w, t in zip(weights, tensors))
            continue
        b = base[key]
        taus = [t - b for t in tensors]
        if name == "ties":
            merged = elect([trim(t, float(a["density"])) for t in taus], weights)
        elif name == "dare_ties":
            merged = elect([dare(t, float(a["density"]), generator) for t in taus], weights)
        elif name == "dare_linear":
            merged = sum(w * dare(t, float(a["density"]), generator) for w, t in zip(weights, taus))
        elif name == "svd":
            merged = low_rank(sum(w * t for w, t in zip(weights, taus)), int(a["rank"]))
        else:
            raise StepError(f"unknown merge method {name!r}", hint="linear, ties, dare_ties, dare_linear, svd")
        out[key] = b + merged
    return out


def run(ctx: StepContext) -> dict[str, Any]:
    from ftlang.stdlib import tokencache

    p = ctx.params
    models: list[Artifact] = list(p["models"])
    method: Call = p["method"]
    # weights = None (the declared default): equal weights summing to 1.
    weights = [float(w) for w in (p["weights"] or [1.0 / len(models)] * len(models))]
    if len(weights) != len(models):
        raise StepError(f"{len(weights)} weights for {len(models)} models")
    toks = {tokencache.tokenizer_digest(modelio.tokenizer_folder(m)) for m in models}
    if len(toks) > 1:
        raise StepError("the models have different tokenizers: their weights do not line up",
                        hint="merge models fine-tuned from the same base")
    base_art: Artifact | None = p["base"]
    if method.name in TASK_VECTOR_METHODS and base_art is None:
        base_art = _common_base(models)
        if base_art is None:
            raise StepError(f"{method.name} measures task vectors from a base model: say which",
                            hint="add `base = <model>` (the model the merged models were trained from)")
    lms = [_load(m) for m in models]
    states = [_state(lm) for lm in lms]
    shapes = {k: tuple(v.shape) for k, v in states[0].items()}
    for m, s in zip(models[1:], states[1:]):
        if {k: tuple(v.shape) for k, v in s.items()} != shapes:
            raise StepError(f"{m.node} does not have the architecture of {models[0].node}",
                            hint="merged models must share one architecture and size")
    base = None
    if method.name in TASK_VECTOR_METHODS and base_art is not None:
        base = _state(_load(base_art))
        if {k: tuple(v.shape) for k, v in base.items()} != shapes:
            raise StepError("the base model does not have the merged models' architecture")
    merged = combine(states, base, method, weights)
    target = lms[0]
    target.load_state_dict(merged)
    target.eval()
    tokenizer = modelio.load_tokenizer(models[0])
    modelio.save_full(target, tokenizer, ctx.out, template=modelio.template_of(models[0]))
    n = modelio.count_params(target)
    ctx.log(f"{method.name} merge of {len(models)} models ({', '.join(m.node for m in models)}), "
            f"weights {weights}" + (f", base {base_art.node}" if base is not None and base_art else ""))
    return {"models": [m.node for m in models], "method": method.name, "weights": weights, "params": n}
