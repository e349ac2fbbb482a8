"""Reading the run ledger for one .ft file: `ft runs`, `ft show`, `ft diff`, and the argparse
types of run refs and run counts (every command that reads the ledger)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ftlang.runtime.cli import EXIT_FAILED, EXIT_OK, _root

# ---- argument types of the commands that read the ledger (cli.build_parser) ----

def count(least: int) -> Any:
    """An argparse type: a whole number >= `least` (a negative count is a typo, and DuckDB
    would report it as an unreadable ledger)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if n < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, not {n}")
        return n

    return parse


def run_ref(text: str) -> str:
    """An argparse type: a run id prefix, `last` or `last~N` (N >= 0); never empty, which as a
    prefix would match every run."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a run is a run id (prefix), last, or last~N; not empty")
    if text.startswith("last~") and not text[5:].isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: last~N needs a whole number N >= 0")
    return text


def cmd_runs(args: argparse.Namespace) -> int:
    from ftlang.runtime import ledger
    from ftlang.runtime.display import table

    root = _root(args)
    rows = ledger.runs(root, limit=args.limit, file=args.file)
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return EXIT_OK
    if args.csv:
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(["run", "file", "started", "finished", "status", "ran", "cached", "failed"])
        for r in rows:
            writer.writerow([r["run_id"], r["file"], r["started"], r["finished"], r["status"], r["ran"],
                             r["cached"], r["failed"]])
        return EXIT_OK
    if not rows:
        print("no runs yet")
        return EXIT_OK
    print(table(["run", "started", "status", "ran", "cached", "failed"],
                [[r["run_id"], str(r["started"])[:19], r["status"], r["ran"], r["cached"], r["failed"]]
                 for r in rows]))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from ftlang.runtime import ledger
    from ftlang.runtime.display import table

    nodes = ledger.run_nodes(_root(args), args.run, args.file)
    if not nodes:
        print(f"error: no run matches {args.run!r}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(nodes, indent=1, default=str))
        return EXIT_OK
    print(f"run {nodes[0]['run_id']}")
    print(table(["node", "status", "seconds", "key", "digest", "why"],
                [[n["node"], n["status"], n["seconds"], (n["key"] or "")[:12], (n["digest"] or "")[:12],
                  "; ".join(n["reasons"])] for n in nodes]))
    for n in nodes:
        models = n["meta"].get("models") if isinstance(n["meta"], dict) else None
        if isinstance(models, dict) and models:
            names = sorted({m for v in models.values() if isinstance(v, dict) for m in v})
            print(f"\n{n['node']}")
            print(table(["model", *names], [[k, *(v.get(m) for m in names)] for k, v in models.items()]))
    return EXIT_OK


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    """A canonical key component as `name -> leaf`: `method.lora.r`, never raw dicts."""
    if isinstance(value, dict) and "call" in value and "args" in value:
        out[f"{prefix}.call" if prefix else "call"] = value["call"]
        return _flat(f"{prefix}.{value['call']}" if prefix else value["call"], value["args"], out)
    if isinstance(value, dict) and not ({"ref", "file", "env"} & set(value)):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = value
    return out


def _components(comp: Any) -> dict[str, Any]:
    """A ledger node's key components as flat rows: params, `step version`, `env <package>`."""
    if not isinstance(comp, dict):
        return {}
    out = _flat("", comp.get("params") or {}, {})
    out["step version"] = comp.get("version")
    out.update({f"env {k}": v for k, v in (comp.get("env") or {}).items()})
    return out


def _shown(v: Any) -> str:
    """A value for a table cell: inputs by what they are, never a 64-character digest."""
    if isinstance(v, dict) and "file" in v:
        return f"file {str(v['file'])[:8]}"
    if isinstance(v, dict) and "ref" in v:
        return f"output {str(v['ref'])[:8]}"
    if isinstance(v, dict) and "env" in v:
        return f"env {v['env']} (secret)"
    if isinstance(v, list):
        return "[" + ", ".join(_shown(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, str):
        one = " ".join(v.split())
        return one if len(one) <= 40 else one[:39] + "…"
    return "-" if v is None else str(v)


def cmd_diff(args: argparse.Namespace) -> int:
    """What changed between two runs: data, params, step versions, environment, metrics."""
    from ftlang.runtime import ledger
    from ftlang.runtime.display import table

    root = _root(args)
    a, b = ledger.run_nodes(root, args.run_a, args.file), ledger.run_nodes(root, args.run_b, args.file)
    if not a or not b:
        print("error: both runs must exist (see `ft runs`)", file=sys.stderr)
        return EXIT_FAILED
    na, nb = {n["node"]: n for n in a}, {n["node"]: n for n in b}
    rows: list[list[Any]] = []
    for node in sorted(set(na) | set(nb)):
        x, y = na.get(node), nb.get(node)
        if x is None or y is None:
            rows.append([node, "step", "absent" if x is None else "present", "absent" if y is None else "present", ""])
            continue
        before = len(rows)
        px, py = _components(x["params"]), _components(y["params"])
        for k in sorted(set(px) | set(py)):
            vx, vy = px.get(k), py.get(k)
            if vx == vy:
                continue
            shown = _shown(vx) + _shown(vy)
            what = "data" if "file " in shown else "input" if "output " in shown else \
                k.split(" ", 1)[0] if k.startswith(("step ", "env ")) else "param"
            name = k.split(" ", 1)[1] if what in ("step", "env") else k
            rows.append([node, f"{what} {name}", _shown(vx), _shown(vy), "changed" if what in ("data", "input") else ""])
        mx = _flat("", x["meta"].get("models", {}), {}) if isinstance(x["meta"], dict) else {}
        my = _flat("", y["meta"].get("models", {}), {}) if isinstance(y["meta"], dict) else {}
        for k in sorted(set(mx) | set(my)):
            fx, fy = mx.get(k), my.get(k)
            if fx == fy:
                continue
            delta = f"{fy - fx:+.4g}" if isinstance(fx, (int, float)) and isinstance(fy, (int, float)) else ""
            rows.append([node, f"metric {k}", _shown(fx), _shown(fy), delta])
        if x["digest"] != y["digest"] and len(rows) == before:
            rows.append([node, "output", _shown({"ref": x["digest"]}), _shown({"ref": y["digest"]}), "changed"])
    if not rows:
        print("no differences")
        return EXIT_OK
    print(f"A = {a[0]['run_id']}, B = {b[0]['run_id']}\n")
    print(table(["node", "what", "A", "B", "change"], rows))
    return EXIT_OK
