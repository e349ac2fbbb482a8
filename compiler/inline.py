"""Inline mixtures: `data = mix(chats = 0.7, code = 0.3, seed = 1)` in any block is a `mix`
block of its own, named `<block>_<attribute>`, and the attribute refers to it.

In:  one parsed block (lang.ast.Block). Out: the blocks to add to the symbol table: the
block itself with each inline mix replaced by a reference, then one `mix` block per call.

The call's argument names are the datasets (whole blocks: `clean.train` cannot be an
argument name; write a `mix` block for parts), their values the ratios; `seed`, `rows` and
`source_column` are the mix block's own attributes. The generated block's attributes point
at the call, so FT0330 (ratios not summing to 1) is reported on the `data = mix(...)` line.
"""

from __future__ import annotations

from ftlang.lang import ast

CALL = "mix"
OWN = ("seed", "rows", "source_column")  # arguments that are the mix block's attributes


def expand(block: ast.Block) -> list[ast.Block]:
    """`block` with its inline mixes replaced by references, then the mix blocks."""
    if block.kind.name == CALL:
        return [block]
    body: list[ast.Stmt] = []
    made: list[ast.Block] = []
    for stmt in block.body:
        value = getattr(stmt, "value", None)
        if isinstance(stmt, ast.Attr) and isinstance(value, ast.CallExpr) and value.dotted == CALL \
                and not value.args and any(k.name not in OWN for k in value.kwargs):
            name = f"{block.name.name}_{stmt.name}"
            made.append(_block(name, value))
            body.append(ast.Attr(stmt.name, ast.Ref((name,), value.span), stmt.span, stmt.name_span))
        else:
            body.append(stmt)
    if not made:
        return [block]
    return [ast.Block(block.kind, block.name, tuple(body), block.span, block.body_span), *made]


def _block(name: str, call: ast.CallExpr) -> ast.Block:
    parts = [k for k in call.kwargs if k.name not in OWN]
    at = call.span
    body: list[ast.Stmt] = [
        ast.Attr("from", ast.ListExpr(tuple(ast.Ref((k.name,), k.span) for k in parts), at), at, call.name_span),
        ast.Attr("ratios", ast.ListExpr(tuple(k.value for k in parts), at), at, call.name_span),
    ]
    body += [ast.Attr(k.name, k.value, k.span.to(k.value.span), k.span) for k in call.kwargs if k.name in OWN]
    return ast.Block(ast.Name(CALL, call.name_span), ast.Name(name, call.name_span), tuple(body), call.name_span)
