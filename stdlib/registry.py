"""The index of every declaration the language knows; nothing is declared here.

Each step kind's module declares its `SPEC` (a StepSpec with its compile-time hooks) and
the call family it uses; each training method is a `Method` in the module that runs it,
each metric a `Metric` in evaluate_spec.py. This module only gathers them: the compiler
checks `.ft` files against the index, docs/language.md is generated from it, and the
runtime imports a `StepSpec.run` / `Method.run` only when a node executes. The modules it
imports are light (heavy imports stay inside their functions).
"""

from __future__ import annotations

from ftlang.stdlib import (
    adapters,
    clean,
    critique,
    curate,
    dataset,
    distributed,
    evaluate_spec,
    export,
    freeze,
    merge,
    mixing,
    model,
    ordering,
    preference,
    rl,
    rlaif,
    search,
    select,
    synth,
    template,
    train,
)
from ftlang.stdlib.spec import Method, Metric, Signature, StepSpec

# ---- block kinds ----------------------------------------------------------------------

STEPS: dict[str, StepSpec] = {s.kind: s for s in (
    dataset.SPEC, curate.SPEC, template.SPEC, model.SPEC, train.SPEC, evaluate_spec.SPEC, merge.SPEC,
    export.SPEC, synth.SPEC, clean.SPEC, mixing.SPEC, rlaif.SPEC, critique.SPEC)}
# Every kind a node can have: the block kinds, and `select`, which the compiler adds.
SPECS: dict[str, StepSpec] = {**STEPS, select.SPEC.kind: select.SPEC, search.SPEC.kind: search.SPEC}

# What a reference of each expected kind may point at.
PRODUCES = {kind: spec.output for kind, spec in STEPS.items()}

# ---- training methods and metrics -------------------------------------------------------

METHOD_INDEX: dict[str, Method] = {m.name: m for m in (
    *adapters.ADAPTER_METHODS, *preference.PREFERENCE_METHODS, *rl.ONLINE_METHODS)}
METRIC_INDEX: dict[str, Metric] = evaluate_spec.METRIC_INDEX

# ---- call families: values written as `name(args)` or a bare `name` ----------------------

SOURCES = dataset.SOURCES
METHODS: dict[str, Signature] = {name: m.signature for name, m in METHOD_INDEX.items()}
INITS = model.INITS
METRICS = evaluate_spec.METRICS
TEMPLATES = template.TEMPLATES
REWARDS = rl.REWARDS
MERGES = merge.MERGES

CALLS: dict[str, dict[str, Signature]] = {
    "source": SOURCES,
    "method": METHODS,
    "init": INITS,
    "metric": METRICS,
    "template": TEMPLATES,
    "reward": REWARDS,
    "merge": MERGES,
    "parse": synth.PARSERS,  # generate's parse rule
    "pii": clean.PII,  # clean's stages
    "dedup": clean.DEDUPS,
    "language": clean.LANGUAGES,
    "decontam": clean.DECONTAMS,
    "balance": ordering.BALANCES,  # train's balance and order
    "order": ordering.ORDERS,
    "format": export.FORMATS,
    "upload": export.PUSHES,
    "strategy": distributed.STRATEGIES,  # train's distributed { strategy = ... }
    "trainable": freeze.TRAINABLE,  # train's trainable = layers(...) / half(...) / [globs]
}

# The methods that say which weights train (the rest carry their objective and take one of
# these in `adapter`).
ADAPTERS = tuple(name for name, m in METHOD_INDEX.items() if m.family == "adapter")
