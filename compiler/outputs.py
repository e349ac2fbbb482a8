"""Pass: where exports may publish. Refuses, before anything runs, a `to` that could
replace what ftlang did not write: the project folder or a folder above it, the home
folder or one above it, the `.ft/` cache, a folder holding a declared input, a folder
another export publishes to, or (without `allow_outside = true`) a path outside the
project. The runtime re-checks the folder itself before replacing it
(ftlang.runtime.publish); this pass catches what the file alone shows.
"""

from __future__ import annotations

import os
from pathlib import Path

from ftlang.compiler import types as T
from ftlang.compiler.ir import Node, OutPath, files_in


def _real(p: str | Path) -> Path:
    return Path(os.path.realpath(p))


def _within(child: Path, parent: Path) -> bool:
    """child is parent or below it (both real paths: compared as text, which pathlib's
    `parents` would build one Path per level for)."""
    c, p = str(child), str(parent)
    return c == p or c.startswith(p if p.endswith(os.sep) else p + os.sep)


def check(nodes: dict[str, Node], ctx: T.Ctx) -> None:
    project = _real(ctx.project)
    home = _real(Path.home())
    # Each distinct input once (many datasets read the same file): the checks below stay
    # linear in the number of exports instead of exports x inputs.
    firsts: dict[str, str] = {}
    for n in nodes.values():
        for f in files_in(n.params):
            firsts.setdefault(f.abs, f.rel)
    inputs = [(rel, _real(abs_)) for abs_, rel in firsts.items()]
    seen: dict[Path, int] = {}  # each accepted export's folder -> its position in `order`
    above: dict[Path, int] = {}  # every folder holding one -> the first such export
    order: list[Node] = []
    for node in nodes.values():
        to = node.params.get("to")
        if node.kind != "export" or not isinstance(to, OutPath):
            continue
        span = node.attr_spans.get("to", node.span)
        dest = _real(to.abs)
        problem = _problem(dest, project, home, inputs, bool(node.params.get("allow_outside")))
        if problem is None:
            # The first accepted export at, above or below dest (dict look-ups, not a scan).
            hits = [seen.get(d) for d in (dest, *dest.parents)] + [above.get(dest)]
            first = min((i for i in hits if i is not None), default=None)
            other = order[first] if first is not None else None
            if other is not None:
                problem = (f"`{node.id}` and `{other.id}` publish to the same or nested folders",
                           "give each export its own folder")
        if problem is not None:
            message, help_ = problem
            ctx.error("FT0140", f"export `{node.name}` cannot publish to \"{to.rel}\": {message}", span,
                      "unsafe export target", help=help_)
        else:
            seen.setdefault(dest, len(order))
            for d in dest.parents:
                above.setdefault(d, len(order))
            order.append(node)


def _problem(dest: Path, project: Path, home: Path, inputs: list[tuple[str, Path]],
             allow_outside: bool) -> tuple[str, str] | None:
    new_folder = 'publish to a new folder of its own, such as "out/<name>"'
    if _within(project, dest):
        what = "the project folder" if dest == project else "a folder that holds the project"
        return f"it is {what}", new_folder
    if _within(home, dest):
        what = "the home folder" if dest == home else "a folder that holds the home folder"
        return f"it is {what}", new_folder
    if _within(dest, project / ".ft"):
        return "it is inside the `.ft/` cache", new_folder
    for rel, path in inputs:
        if _within(path, dest):
            return f"it holds the input \"{rel}\"", new_folder
        if _within(dest, path):
            return f"it is inside the input \"{rel}\"", new_folder
    if not allow_outside and not _within(dest, project):
        return ("it is outside the project folder",
                "add `allow_outside = true` to the export to publish there")
    return None
