"""The plan: each node cached, run, pending (runs if an upstream output changes) or
skipped, with the reason. Honest about early cutoff: below a node that reruns,
nothing is called cached."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ftlang.compiler.ir import (
    DESCEND,
    FileValue,
    Node,
    Program,
    RefValue,
    files_in,
    refs_in,
    transform,
    walk,
)
from ftlang.runtime.hashing import StatCache
from ftlang.runtime.keys import DETERMINISTIC, RERUNS_ALWAYS, components, node_key, reruns_always
from ftlang.runtime.store import Entry, Store


@dataclass
class PlanItem:
    node: str
    status: str  # cached | remote | run | pending | skipped
    reasons: list[str] = field(default_factory=list)
    key: str | None = None
    entry: Entry | None = None
    cost: str | None = None  # training cost estimate, for train nodes that will run
    flops: float | None = None
    device: str | None = None  # where a step that runs models will run them (its one decision)

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "status": self.status, "reasons": self.reasons, "key": self.key,
                "digest": self.entry.digest if self.entry else None, "estimate": self.cost,
                "flops": self.flops, "device": self.device}


def select(program: Program, patterns: list[str] | None) -> list[str]:
    """Node ids to consider, in order. `x` and `+x`: x and its ancestors; `x+`: also descendants."""
    import networkx as nx

    order = program.order()
    if not patterns:
        return order
    g = program.graph
    chosen: set[str] = set()
    for pat in patterns:
        down = pat.endswith("+")
        name = pat.strip("+")
        ids = [n for n in order if matches(program, n, name)]
        if not ids:
            raise KeyError(name)
        for nid in ids:
            targets = {nid} | (nx.descendants(g, nid) if down else set())
            for t in targets:
                chosen |= {t} | nx.ancestors(g, t)
    return [n for n in order if n in chosen]


def matches(program: Program, nid: str, name: str) -> bool:
    """A node answers to its id, its name, and (for sweep points) its block's id and name."""
    block = program.nodes[nid].block
    return name in (nid, nid.split(".", 1)[1], block, block.split(".", 1)[1])


def plan(program: Program, store: Store, stat: StatCache, nodes: list[str] | None = None,
         force: set[str] | None = None, remote: Any = None) -> list[PlanItem]:
    items: dict[str, PlanItem] = {}
    force = force or set()
    for nid in nodes or program.order():
        node = program.nodes[nid]
        ups = sorted({r.node for r in node.refs()})
        unknown = [u for u in ups if items[u].entry is None]
        if unknown:
            item = PlanItem(nid, "pending", [f"runs if {u} changes" for u in unknown])
            own = _own_changes(node, store)
            if own == ["new"]:
                item.status, item.reasons = "run", own
            elif own or nid in force:
                item.status = "run"
                item.reasons = (own or ["forced"]) + item.reasons
            items[nid] = item
            continue
        inputs = {u: items[u].entry for u in ups}
        comp = components(node, inputs, stat)  # type: ignore[arg-type]
        key = node_key(comp)
        d = decide(node, comp, key, store, stat, nid in force)
        hit = remote.lookup(key) if remote is not None and d.entry is None and nid not in force \
            and "nonce" not in comp else None
        if hit is not None:  # the remote cache has it: a download, not a run
            from ftlang.runtime.remote import human

            items[nid] = PlanItem(nid, "remote", [f"fetch {human(hit.size)} from the remote cache"], key,
                                  hit.entry())
            continue
        items[nid] = PlanItem(nid, "cached" if d.entry else "run", d.reasons, key, d.entry)
    _estimate(program, store, items)
    _devices(program, items)
    _search_notes(program, items)
    return list(items.values())


def _search_notes(program: Program, items: dict[str, PlanItem]) -> None:
    """A search trial's values: shown when committed, else when they will be known."""
    from ftlang.stdlib import search

    for item in items.values():
        params = program.nodes[item.node].params
        setting = params.get(search.NAME)
        history = [items[r.node].entry.meta if r.node in items and items[r.node].entry else None
                   for r in setting.get("history", [])] if isinstance(setting, dict) else None
        note = search.plan_note(params, item.entry.meta if item.entry else None, history)
        if note is not None:
            # "runs if trial j changes" for every earlier trial says one thing: keep the last.
            earlier = {f"runs if {r.node} changes" for r in setting["history"][:-1]}
            item.reasons = [r for r in item.reasons if r not in earlier] + [note]


def _devices(program: Program, items: dict[str, PlanItem]) -> None:
    """The device of each step that will run models (train, eval, select): the step's own
    `device` resolved as its run will resolve it (stdlib.devices), said without torch."""
    from ftlang.stdlib import devices

    for item in items.values():
        node = program.nodes[item.node]
        if item.status in ("run", "pending") and node.spec.signature.attr("device") is not None:
            item.device = devices.planned(node.params.get("device"))


@dataclass
class Decision:
    """Cached (`entry`) or run (`reasons`); `corrupt` names what is wrong with a cached
    object that must not be used (the executor quarantines it, the plan only says so)."""

    entry: Entry | None
    reasons: list[str]
    corrupt: str | None = None
    corrupt_digest: str | None = None


def decide(node: Node, comp: dict[str, Any], key: str, store: Store, stat: StatCache,
           forced: bool) -> Decision:
    """The one place that decides "cached, or run and why", for `ft plan` and `ft run` alike."""
    if forced:
        return Decision(None, ["forced"])
    entry = store.lookup(key)
    problem = store.check(entry.digest, entry.files) if entry is not None else None
    if entry is not None and problem is None:
        return Decision(entry, [])
    if problem is not None:
        return Decision(None, [f"cached artifact is corrupt ({problem}): rebuilt"], problem, entry.digest)
    return Decision(None, explain(node, comp, store.read_state(node.id), key, stat))


def _estimate(program: Program, store: Store, items: dict[str, PlanItem]) -> None:
    """Adds the training cost to train nodes that will or may run."""
    from ftlang.runtime import estimate

    entries = {n: i.entry for n, i in items.items() if i.entry is not None}
    todo = [i for i in items.values() if i.status in ("run", "pending") and program.nodes[i.node].kind == "train"]
    if not todo:
        return
    flop_rate, basis = estimate.rate(store)
    for item in todo:
        f = estimate.flops(program, program.nodes[item.node], entries, store)
        if f:
            item.cost = estimate.describe(f, flop_rate, basis)
            item.flops = f


def _own_changes(node: Node, store: Store) -> list[str]:
    """Changes we can name before upstream outputs are known: params and version."""
    state = store.read_state(node.id)
    if state is None:
        return ["new"]
    old = state.get("components", {})
    out = [RERUNS_ALWAYS] if reruns_always(node) else []
    if old.get("version") != node.spec.version:
        out.append(f"step version changed ({old.get('version')} -> {node.spec.version})")
    old_params = old.get("params", {})
    for name, value in node.params.items():
        attr = node.spec.signature.attr(name)
        if (attr is not None and not attr.semantic) or name == DETERMINISTIC:
            continue
        if _has_inputs(value):
            continue
        if node.kind == "train" and name == "distributed":  # the key's form: world size, strategy
            from ftlang.stdlib import distributed

            value = distributed.key_part(value, _plain)
        if name in old_params and old_params[name] != _plain(value):
            out += _diff(name, old_params[name], _plain(value))
        elif name not in old_params and value is not None:
            out.append(f"{name} set to {_fmt(_plain(value))}")
    return out


def _has_inputs(value: Any) -> bool:
    return any(isinstance(v, (RefValue, FileValue)) for _, v in walk(value))


def _plain(value: Any) -> Any:
    """A resolved value in the JSON shape the node state stores it in."""
    from ftlang.stdlib.spec import Call

    def fn(v: Any) -> Any:
        if isinstance(v, Call):
            return {"call": v.name, "args": {k: _plain(x) for k, x in v.args.items()}}
        if isinstance(v, tuple):
            return [_plain(x) for x in v]
        return DESCEND

    return transform(value, fn)


def _fmt(v: Any) -> str:
    if isinstance(v, dict) and "call" in v:
        args = ", ".join(f"{k}={_fmt(x)}" for k, x in v["args"].items() if x is not None)
        return f"{v['call']}({args})"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, str):
        return f'"{v}"' if len(v) < 40 else f'"{v[:37]}..."'
    return str(v)


def explain(node: Node, comp: dict[str, Any], state: dict[str, Any] | None, key: str,
            stat: StatCache | None = None) -> list[str]:
    """Why a node's key differs from what it resolved to last time."""
    if state is None:
        return ["new"] + ([RERUNS_ALWAYS] if "nonce" in comp else [])
    if state.get("key") == key:
        return ["artifact missing from the cache"]
    old = state.get("components", {})
    out: list[str] = [RERUNS_ALWAYS] if "nonce" in comp else []
    if old.get("version") != comp["version"]:
        out.append(f"step version changed ({old.get('version')} -> {comp['version']})")
    if old.get("env") != comp.get("env") and comp.get("env"):
        diffs = [f"{k} {old.get('env', {}).get(k)} -> {v}" for k, v in comp["env"].items()
                 if old.get("env", {}).get(k) != v]
        out.append("environment changed: " + ", ".join(diffs))
    old_params, new_params = old.get("params", {}), comp["params"]
    for name in sorted(set(old_params) | set(new_params)):
        a, b = old_params.get(name), new_params.get(name)
        if a == b:
            continue
        if node.kind == "train" and name == "distributed":  # absent = one plain process
            from ftlang.stdlib.distributed import PLAIN_KEY

            a, b = a or PLAIN_KEY, b or PLAIN_KEY
        raw = node.params.get(name)
        files = files_in(raw)
        refs = refs_in(raw)
        if files:
            out += [_file_change(f, state, stat) for f in files]
        elif refs:
            out += [f"upstream {r.label} changed" for r in _changed_refs(refs, a, b)]
        else:
            out += _diff(name, a, b)
    return out or ["inputs changed"]


def _ref_digests(canon: Any) -> list[str]:
    """The upstream digests in a canonical value, in walk order (the order of its refs)."""
    return [v["ref"] for _, v in walk(canon) if isinstance(v, dict) and "ref" in v]


def _changed_refs(refs: list[RefValue], old: Any, new: Any) -> list[RefValue]:
    """The references whose output changed: `models = [base, sft]` where only sft reran
    names sft alone. When the lists cannot be paired, every reference is named."""
    before, after = _ref_digests(old), _ref_digests(new)
    if len(after) != len(refs):
        return refs
    changed = [r for r, d in zip(refs, after) if d not in before]
    return changed or refs


def _file_change(f: FileValue, state: dict[str, Any], stat: StatCache | None) -> str:
    """`data/chats.jsonl changed (+120 rows)` when the line counts tell."""
    from pathlib import Path

    old = (state.get("lines") or {}).get(f.rel)
    new = stat.lines(Path(f.abs)) if stat is not None else None
    if old is None or new is None:
        return f"{f.rel} changed"
    delta = new - old
    if delta > 0:
        return f"{f.rel} changed (+{delta} rows)"
    if delta < 0:
        return f"{f.rel} changed ({delta} rows)"
    return f"{f.rel} changed (rows edited)"


def _diff(prefix: str, a: Any, b: Any) -> list[str]:
    """`split.seed 0 -> 4` rather than two whole dicts."""
    if isinstance(a, dict) and isinstance(b, dict) and "call" not in a:
        out = []
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                out += _diff(f"{prefix}.{k}", a.get(k), b.get(k))
        return out
    if isinstance(a, dict) and isinstance(b, dict) and a.get("call") == b.get("call"):
        return _diff(f"{prefix}.{a['call']}", a.get("args", {}), b.get("args", {}))
    if isinstance(a, str) and isinstance(b, str) and ("\n" in a + b or max(len(a), len(b)) >= 40):
        return [f"{prefix} changed:\n" + _text_diff(a, b)]
    return [f"{prefix} {_fmt(a)} -> {_fmt(b)}"]


def _text_diff(a: str, b: str) -> str:
    """A unified diff of two texts (a query), without file headers; one line per change."""
    import difflib

    lines = difflib.unified_diff(a.strip().splitlines(), b.strip().splitlines(), lineterm="", n=1)
    return "\n".join(line for line in lines if not line.startswith(("---", "+++")))
