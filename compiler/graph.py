"""Pass 3: link IR nodes into a networkx DiGraph; a cycle is a diagnostic naming it."""

from __future__ import annotations

from typing import Any

from ftlang.compiler.ir import Node
from ftlang.lang.diagnostics import Diagnostic, Label


def build(nodes: dict[str, Node]) -> tuple[Any, list[Diagnostic]]:
    import networkx as nx

    g = nx.DiGraph()
    for nid, node in nodes.items():
        g.add_node(nid, kind=node.kind)
    for nid, node in nodes.items():
        for ref in node.refs():
            if ref.node in nodes:
                g.add_edge(ref.node, nid, port=ref.port, span=ref.span)
    diags: list[Diagnostic] = []
    try:
        cycle = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        return g, diags
    path = " -> ".join([cycle[0][0]] + [v for _, v in cycle])
    labels = [Label(g.edges[u, v]["span"], f"{v} uses {u.split('.', 1)[1]}", i == 0)
              for i, (u, v) in enumerate(cycle) if g.edges[u, v].get("span")]
    diags.append(Diagnostic("FT0110", f"dependency cycle: {path}", labels,
                            help="a step cannot depend on its own output; break one of these references"))
    return g, diags
