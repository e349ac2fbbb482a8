"""Pass 7: link IR nodes by their references; a cycle is a diagnostic naming it.

The links are a plain list of edges (the compile needs no more: `ft check` does not
import networkx); `Program.graph` builds the networkx DiGraph from them on first use.
"""

from __future__ import annotations

import graphlib
import heapq
from collections.abc import Iterable
from typing import Any

from ftlang.compiler.ir import Edge, Node
from ftlang.lang.diagnostics import Diagnostic, Label


def build(nodes: dict[str, Node]) -> tuple[list[Edge], list[Diagnostic]]:
    """The edges (upstream, downstream, {"port", "span"}), in networkx's order: by upstream
    node, then by first reference; a second reference between the same two nodes keeps
    the last one's data, as `DiGraph.add_edge` does."""
    succ: dict[str, dict[str, dict[str, Any]]] = {nid: {} for nid in nodes}
    for nid, node in nodes.items():
        for ref in node.refs():
            if ref.node in nodes:
                succ[ref.node][nid] = {"port": ref.port, "span": ref.span}
    edges = [(u, v, d) for u, out in succ.items() for v, d in out.items()]
    sorter = graphlib.TopologicalSorter({nid: [] for nid in nodes})
    for u, v, _ in edges:
        sorter.add(v, u)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = list(exc.args[1])  # [a, b, ..., a]: each one is used by the next
        path = " -> ".join(cycle)
        spans = {(u, v): d.get("span") for u, v, d in edges}
        pairs = list(zip(cycle, cycle[1:]))
        labels = [Label(spans[(u, v)], f"{v} uses {u.split('.', 1)[1]}", i == 0)
                  for i, (u, v) in enumerate(pairs) if spans.get((u, v))]
        return edges, [Diagnostic("FT0110", f"dependency cycle: {path}", labels,
                                  help="a step cannot depend on its own output; break one of these references")]
    return edges, []


def order(names: Iterable[str], edges: list[Edge]) -> list[str]:
    """Every node after the nodes it uses; among nodes free to go next, the smallest id
    first (networkx's lexicographical_topological_sort: the same order on every run)."""
    waiting = dict.fromkeys(names, 0)
    succ: dict[str, list[str]] = {}
    for u, v, _ in edges:
        waiting[v] += 1
        succ.setdefault(u, []).append(v)
    ready = [n for n, k in waiting.items() if k == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        n = heapq.heappop(ready)
        out.append(n)
        for v in succ.get(n, ()):
            waiting[v] -= 1
            if waiting[v] == 0:
                heapq.heappush(ready, v)
    return out
