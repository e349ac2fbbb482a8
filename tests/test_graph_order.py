"""compiler/graph.py: the compile links nodes without networkx; its order and edges are
networkx's own (the planner and `ft graph` still build the DiGraph from them)."""

from __future__ import annotations

import random

import networkx as nx
from ftlang.compiler import graph


def test_order_is_networkx_lexicographical_topological_sort() -> None:
    rng = random.Random(7)
    for _ in range(200):
        names = [f"n{rng.randrange(10_000)}" for _ in range(rng.randrange(1, 40))]
        names = list(dict.fromkeys(names))
        rng.shuffle(names)
        edges = [(names[i], names[j], {}) for i in range(len(names)) for j in range(i + 1, len(names))
                 if rng.random() < 0.15]
        g = nx.DiGraph()
        g.add_nodes_from(names)
        g.add_edges_from(edges)
        assert graph.order(names, edges) == list(nx.lexicographical_topological_sort(g))


def test_program_graph_is_built_from_the_edges_on_first_use(tmp_path) -> None:
    from ftlang.compiler import compile_source

    (tmp_path / "c.jsonl").write_text('{"text": "a"}\n')
    text = ('ft 0.1\ndataset d { source = jsonl("c.jsonl") }\n'
            "model m { init = tiny(hidden = 16, layers = 1, heads = 2, vocab = 64, data = d) }\n"
            "train t { from = m, data = d, objective = clm, max_steps = 1 }\n")
    prog = compile_source(text, "p.ft", tmp_path)
    assert "_graph" not in prog.__dict__  # not built by the compile
    assert sorted((u, v) for u, v, _ in prog.edges) == [("dataset.d", "model.m"), ("dataset.d", "train.t"),
                                                       ("model.m", "train.t")]
    g = prog.graph
    assert isinstance(g, nx.DiGraph) and sorted(g.edges) == sorted((u, v) for u, v, _ in prog.edges)
    assert g.nodes["train.t"]["kind"] == "train" and prog.graph is g
    assert prog.order() == list(nx.lexicographical_topological_sort(g))
