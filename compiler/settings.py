"""File-wide settings blocks, written `kind { ... }` without a name. One exists:

    cache { remote = "s3://bucket/prefix" }

the shared remote cache (runtime/remote.py). It is never a step and never enters a key:
two people who point at different remotes still compute the same keys. `--remote` and
FT_REMOTE override it at run time.

In: the parsed module and the compilation's Ctx. Out: the remote URL or None, and
diagnostics: FT0380 (an attribute a cache block does not have), FT0381 (a bad value, or a
second cache block), FT0001 for a step block written without its name (`dataset { }`),
FT0101 for any other unnamed block.
"""

from __future__ import annotations

from typing import Any

from ftlang.lang import ast
from ftlang.lang.diagnostics import Diagnostic, Label, did_you_mean

SETTINGS = {"cache": ("remote",)}


def check(module: Any, ctx: Any) -> str | None:
    from ftlang.stdlib import registry

    remote: str | None = None
    seen: ast.Settings | None = None
    for item in module.items:
        if not isinstance(item, ast.Settings):
            continue
        kind = item.kind.name
        if kind not in SETTINGS:
            if kind in registry.STEPS:
                ctx.diagnostics.append(Diagnostic(
                    "FT0001", "a block needs a name", [Label(item.kind.span, "name missing before `{`")],
                    help=f"write `{kind} NAME {{ ... }}`"))
            else:
                guess = did_you_mean(kind, [*SETTINGS, *registry.STEPS])
                ctx.diagnostics.append(Diagnostic(
                    "FT0101", f"unknown block kind `{kind}`", [Label(item.kind.span, "not a block kind")],
                    help=f"did you mean `{guess}`?" if guess else
                    f"blocks without a name: {', '.join(SETTINGS)}"))
            continue
        if seen is not None:
            ctx.diagnostics.append(Diagnostic(
                "FT0381", "a second `cache` block", [Label(item.kind.span, "again here"),
                                                     Label(seen.kind.span, "first here", primary=False)],
                help="keep one cache { remote = ... } per file"))
            continue
        seen = item
        for stmt in item.body:
            name = getattr(stmt, "name", None) or type(stmt).__name__.lower()
            span = getattr(stmt, "name_span", None) or stmt.span
            if not isinstance(stmt, ast.Attr) or name not in SETTINGS[kind]:
                guess = did_you_mean(str(name), SETTINGS[kind])
                ctx.diagnostics.append(Diagnostic(
                    "FT0380", f"`{kind}` has no setting `{name}`", [Label(span, "unknown setting")],
                    help=f"did you mean `{guess}`?" if guess else
                    'a cache block holds remote = "URL" (a folder, s3://bucket/prefix, any fsspec URL)'))
                continue
            value = stmt.value
            if not isinstance(value, ast.Str) or not value.value.strip():
                ctx.diagnostics.append(Diagnostic(
                    "FT0381", "`remote` must be a URL or a folder, as a string", [Label(value.span, "not a URL")],
                    help='write remote = "s3://bucket/prefix" or remote = "/shared/ft-cache"'))
                continue
            remote = value.value.strip()
    return remote
