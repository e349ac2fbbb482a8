"""The Hugging Face model card (README.md) an export writes, generated from what ftlang knows.

In:  the export's StepContext and its model Artifact. The lineage is read from the
     project's node states (`.ft/state/<file>/<node>.json`: each node's key components,
     where an upstream reference is the digest of its output) and the committed objects
     they name: the model's training steps back to the base model, the datasets each
     step read (with their digests), the method and its hyperparameters, and the metrics
     of every eval that had measured this exact model (by digest) when it was exported.
Out: README.md text: YAML front matter (library_name, base_model / datasets when they
     are hub ids, tags, model-index with the eval metrics, and an `ftlang` section with
     the full lineage and the package versions) and a body with the same facts, the
     limitations, and the `.ft` source.

Everything is read from files; no timestamps, so the same lineage gives the same bytes.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from ftlang.stdlib.spec import Artifact, StepContext

PACKAGES = ("ftlang", "torch", "transformers", "peft", "trl", "accelerate", "tokenizers", "safetensors",
            "huggingface_hub", "gguf")
SKIP_PARAMS = {"from", "data", "eval_data", "method", "template", "models", "model", "base"}


def versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    from importlib import metadata  # here, not at the top: every `ft check` imports this module

    out = {}
    for pkg in (*PACKAGES, *extra):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


class Lineage:
    """The node states of the project, indexed by the digest of what each node produced."""

    def __init__(self, ctx: StepContext, source: Path | None) -> None:
        from ftlang.runtime.store import Store  # the layout's one owner; imported only here

        self.root = ctx.cache.parent
        store = Store(self.root)
        scopes = store.scopes()
        # The running file's states first: a digest two files share is explained by this one.
        order = sorted(scopes, key=lambda f: (source is None or f != source.name, f))
        self.by_digest: dict[str, tuple[str, dict[str, Any]]] = {}
        self.ports: dict[str, tuple[str, str]] = {}  # port digest -> (node, port)
        self.states: list[tuple[str, dict[str, Any]]] = []
        for f in order:
            for node, st in scopes[f].items():
                digest = st.get("digest")
                if not isinstance(digest, str):
                    continue
                self.states.append((node, st))
                self.by_digest.setdefault(digest, (node, st))
                entry = store.lookup(st["key"]) if isinstance(st.get("key"), str) else None
                for name, d in (entry.files if entry is not None else {}).items():
                    if name.endswith(".parquet"):
                        self.ports.setdefault(d, (node, name[: -len(".parquet")]))

    def node_of(self, digest: str) -> str | None:
        hit = self.by_digest.get(digest)
        if hit is not None:
            return hit[0]
        port = self.ports.get(digest)
        return f"{port[0]}.{port[1]}" if port else None

    def dataset(self, ref: Any) -> dict[str, Any] | None:
        if not (isinstance(ref, dict) and isinstance(ref.get("ref"), str)):
            return None
        d = ref["ref"]
        out: dict[str, Any] = {"name": self.node_of(d) or "unknown", "digest": d}
        hit = self.by_digest.get(d)
        node = hit[0] if hit else (self.ports[d][0] if d in self.ports else None)
        st = hit[1] if hit else next((s for n, s in self.states if n == node), {})
        params = (st.get("components") or {}).get("params") or {}
        src = params.get("source")
        if isinstance(src, dict) and src.get("call") == "hub":
            out["hub"] = src["args"].get("name") or src["args"].get("repo")
        return out

    def steps(self, digest: str) -> list[dict[str, Any]]:
        """The chain of model-producing steps from `digest` down to the base model."""
        chain: list[dict[str, Any]] = []
        seen: set[str] = set()
        while digest and digest not in seen:
            seen.add(digest)
            hit = self.by_digest.get(digest)
            if hit is None:
                chain.append({"node": "unknown", "digest": digest})
                break
            node, st = hit
            comp = st.get("components") or {}
            params = comp.get("params") or {}
            step: dict[str, Any] = {"node": node, "kind": comp.get("kind"), "digest": digest}
            nxt = ""
            if comp.get("kind") == "train":
                method = params.get("method") or {}
                step["method"] = {"name": method.get("call"), "args": _plain(method.get("args") or {})}
                step["hyperparameters"] = {k: _plain(v) for k, v in sorted(params.items())
                                           if k not in SKIP_PARAMS and not isinstance(v, dict)}
                if isinstance(params.get("template"), dict):
                    step["template"] = _plain(params["template"])
                step["datasets"] = [ds for k in ("data", "eval_data") if (ds := self.dataset(params.get(k)))]
                ref = params.get("from")
                nxt = ref["ref"] if isinstance(ref, dict) and isinstance(ref.get("ref"), str) else ""
            elif comp.get("kind") == "model":
                step["source"] = {k: _plain(v) for k, v in sorted(params.items())
                                  if v is not None and k in ("hub", "revision", "init", "path", "gguf")}
            elif comp.get("kind") == "merge":
                step["method"] = _plain(params.get("method"))
                step["models"] = [self.node_of(m["ref"]) for m in params.get("models") or []
                                  if isinstance(m, dict) and "ref" in m]
            chain.append(step)
            digest = nxt
        return chain

    def metrics(self, digest: str) -> list[dict[str, Any]]:
        """Every eval that measured the model `digest`: its node, its datasets' values."""
        out = []
        for node, st in self.states:
            comp = st.get("components") or {}
            if comp.get("kind") != "eval":
                continue
            models = (comp.get("params") or {}).get("models") or []
            if not any(isinstance(m, dict) and m.get("ref") == digest for m in models):
                continue
            path = self.root / "objects" / st["digest"] / "metrics.json"
            try:
                report = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            name = self.node_of(digest) or ""
            name = name.split(".", 1)[1] if "." in name else name
            for ds, vals in sorted((report.get("datasets") or {}).items()):
                scores = (vals.get("models") or {}).get(name)
                if scores:
                    out.append({"eval": node, "dataset": ds, "rows": vals.get("rows"),
                                "metrics": {k: v for k, v in sorted(scores.items()) if isinstance(v, (int, float))}})
        return out


def _plain(v: Any) -> Any:
    """A key component as a reader wants it: calls as name(args), references as digests."""
    if isinstance(v, dict) and "call" in v:
        args = ", ".join(f"{k} = {json.dumps(_plain(x))}" for k, x in sorted((v.get("args") or {}).items()))
        return f"{v['call']}({args})"
    if isinstance(v, dict) and "ref" in v:
        return v["ref"]
    if isinstance(v, dict) and "file" in v:
        return {"file_sha256": v["file"]}
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _base(chain: list[dict[str, Any]]) -> dict[str, Any]:
    return chain[-1] if chain else {}


def card(ctx: StepContext, model: Artifact, *, library: str, files: dict[str, str],
         gguf: str | None = None) -> str:
    """The README.md text. `files` names what the folder holds (for the usage section)."""
    from ftlang.stdlib.trackers import run_facts
    from huggingface_hub import EvalResult, ModelCardData

    _, source = run_facts(ctx)
    lineage = Lineage(ctx, source)
    chain = lineage.steps(model.digest)
    base = _base(chain)
    hub_base = (base.get("source") or {}).get("hub")
    evals = lineage.metrics(model.digest)
    datasets = [ds for step in chain for ds in step.get("datasets", [])]
    methods = [step["method"]["name"] for step in chain if step.get("kind") == "train"]
    results = [EvalResult(task_type="text-generation", dataset_type=e["dataset"], dataset_name=e["dataset"],
                          metric_type=m, metric_value=v)
               for e in evals for m, v in e["metrics"].items()]
    tags = ["ftlang", *sorted(set(m for m in methods if m)), *(["gguf"] if gguf else [])]
    data = ModelCardData(
        library_name=library,
        base_model=hub_base,
        datasets=sorted({ds["hub"] for ds in datasets if ds.get("hub")}) or None,
        tags=tags,
        pipeline_tag="text-generation" if library != "transformers-classifier" else "text-classification",
        model_name=ctx.name,
        eval_results=results or None,
        # Deep copies: a dict that appears twice would become a YAML anchor (&id001).
        ftlang=copy.deepcopy({"node": ctx.node, "key": ctx.key, "model": model.node, "model_digest": model.digest,
                              "lineage": chain, "datasets": datasets, "packages": versions()}),
    )
    if library == "transformers-classifier":
        data.library_name = "transformers"
    body = _body(ctx, model, chain, datasets, evals, files, gguf, source)
    return f"---\n{data.to_yaml()}\n---\n\n{body}"


def _body(ctx: StepContext, model: Artifact, chain: list[dict[str, Any]], datasets: list[dict[str, Any]],
          evals: list[dict[str, Any]], files: dict[str, str], gguf: str | None, source: Path | None) -> str:
    base = _base(chain)
    lines = [f"# {ctx.name}", "",
             f"Exported by ftlang from `{model.node}` (artifact `{model.digest[:16]}`).", ""]
    lines += ["## Lineage", ""]
    for step in chain:
        if step.get("kind") == "train":
            lines.append(f"- `{step['node']}`: {step['method']['name']}"
                         + (f"({_args(step['method']['args'])})" if step["method"]["args"] else ""))
            hp = step.get("hyperparameters") or {}
            shown = ", ".join(f"{k} = {_text(v)}" for k, v in hp.items() if v is not None)
            lines.append(f"  - hyperparameters: {shown}")
            for ds in step.get("datasets", []):
                lines.append(f"  - data: `{ds['name']}` (sha256 `{ds['digest']}`)")
        elif step.get("kind") == "model":
            src = step.get("source") or {}
            lines.append(f"- `{step['node']}`: the base model, "
                         + ", ".join(f"{k} = {_text(v)}" for k, v in src.items()))
        else:
            lines.append(f"- `{step['node']}` ({step.get('kind') or 'not in this project'})")
    lines.append("")
    lines += ["## Evaluation", ""]
    if evals:
        names = sorted({m for e in evals for m in e["metrics"]})
        lines.append("| eval | dataset | rows | " + " | ".join(names) + " |")
        lines.append("| --- | --- | --- | " + " | ".join("---" for _ in names) + " |")
        for e in evals:
            lines.append(f"| `{e['eval']}` | `{e['dataset']}` | {e['rows']} | "
                         + " | ".join(_num(e["metrics"].get(n)) for n in names) + " |")
    else:
        lines.append("No eval block had measured this model when it was exported.")
    lines.append("")
    lines += ["## Files", ""] + [f"- `{name}`: {what}" for name, what in sorted(files.items())] + [""]
    lines += ["## Limitations", ""]
    limits = ["Trained and measured only on the datasets listed above; behaviour outside them is "
              "unmeasured. No safety or bias evaluation was run."]
    src = base.get("source") or {}
    if "init" in src:
        limits.append("The base model was built in-process with random weights (`init`): a test or "
                      "toy model, not a general language model.")
    if gguf:
        limits.append(f"The GGUF file is quantised ({gguf}): its outputs differ slightly from the "
                      "safetensors weights.")
    if not evals:
        limits.append("Unevaluated: no metrics are recorded for this exact model.")
    lines += [f"- {x}" for x in limits] + [""]
    lines += ["## Package versions", ""] + [f"- {k} {v}" for k, v in versions().items()] + [""]
    if source is not None and source.is_file():
        lines += [f"## Pipeline (`{source.name}`)", "", "```", source.read_text(encoding="utf-8",
                  errors="replace").rstrip("\n"), "```", ""]
    return "\n".join(lines)


def _args(args: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {_text(v)}" for k, v in args.items())


def _text(v: Any) -> str:
    """A value as a .ft file writes it (true, null, "text" only where it is not a call)."""
    return v if isinstance(v, str) else json.dumps(v)


def _num(v: Any) -> str:
    return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
