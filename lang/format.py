"""`ft fmt`: the one canonical layout of a .ft file.

The layout, in short (docs/language.md has the long form):
- two-space indentation; top-level blocks always span several lines, one blank line
  around each; `use` lines and one-line definitions keep the user's grouping;
- inside a block, one statement per line; a blank line the user left is kept (at most
  one); runs of consecutive one-line attributes have their `=` aligned (as terraform fmt);
- a sub-block (`split { ... }`) stays on one line when it fits and holds no comment;
- calls and lists stay on one line when they fit in WIDTH columns, otherwise one item per
  line with a trailing comma;
- numbers and short strings are kept exactly as written (`1e-4` stays `1e-4`); a
  `\"\"\"long string\"\"\"` keeps its text and its inner indentation, re-indented under its
  statement;
- every comment is kept, in order, in its block (lang/format_comments.py): a comment on
  its own line stays on its own line before what follows it (before the `}` if nothing
  does), a trailing comment at the end of its statement's last line, or after the `}`
  it followed; one inside a value the layout reflows, a `use` list or a preset's
  parameters moves above its statement or item;
- parentheses only where precedence needs them, and around a negated negative: `-(-1)`.

`format_source(format_source(x)) == format_source(x)`, and parsing the result gives
the same AST as parsing `x`, spans aside (tests/test_fmt.py checks both).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ftlang.lang import ast
from ftlang.lang.format_comments import Comments, Entry

INDENT = "  "
WIDTH = 100

# Binding strength of each operator: parentheses are written only where needed.
_PREC = {">=": 1, "<=": 1, "==": 1, "!=": 1, ">": 1, "<": 1, "+": 2, "-": 2, "*": 3, "/": 3}
_UNARY, _ATOM = 4, 5


def format_source(text: str, file: str = "<input>") -> str:
    """Returns `text` in canonical layout; raises FtError when it does not parse."""
    from ftlang.lang.parser import parse

    return format_module(parse(text, file))


def meaning(node: Any) -> Any:
    """An AST as nested tuples without spans: what "the same program" means. `ft fmt`
    writes a file only when its result has the meaning and the comments of the input."""
    if isinstance(node, ast.Span):
        return None
    if isinstance(node, ast.Module):
        return (meaning(node.version), meaning(node.items))
    if dataclasses.is_dataclass(node):
        return (type(node).__name__,) + tuple(
            meaning(getattr(node, f.name)) for f in dataclasses.fields(node)
            if f.name not in ("span", "name_span", "body_span"))
    if isinstance(node, (list, tuple)):
        return tuple(meaning(x) for x in node)
    return node


def keeps_meaning(before: ast.Module, after_text: str, file: str) -> bool:
    """Whether `after_text` parses to `before`'s program with `before`'s comments."""
    from ftlang.lang.diagnostics import FtError
    from ftlang.lang.parser import parse

    try:
        after = parse(after_text, file)
    except FtError:
        return False
    return meaning(after) == meaning(before) and \
        [c.text for c in after.comments] == [c.text for c in before.comments]


def expr_text(e: ast.Expr) -> str:
    """One expression as ftlang text, from the tree alone (an expression a preset built)."""
    return _Formatter(ast.Module("<expr>", "", None, [])).op_text(e, "")


def format_module(module: ast.Module) -> str:
    return _Formatter(module).render()


class _Formatter(Comments):
    def __init__(self, module: ast.Module) -> None:
        super().__init__(module)
        self.module = module

    # ---- top level --------------------------------------------------------------

    def render(self) -> str:
        entries: list[Entry] = []
        prev_line = 0
        forced_after = False  # the previous item spans several lines: a blank line follows it
        m = self.module
        if m.version is not None:
            lead, prev_line = self.comment_entries(self.take_before(m.version.span.line), prev_line)
            entries += lead
            v = Entry([f"ft {m.version.text}"], blank_before=bool(lead) and self.blank_between(
                prev_line, m.version.span.line))
            v.trailing = self.trailing_text(m.version.span.end_line)
            entries.append(v)
            prev_line = m.version.span.end_line
        for item in m.items:
            first, last = _item_lines(item)
            lead, blank = self.lead_entries(first, _item_inner_end(item), prev_line)
            body = self.item(item)
            body.blank_before = blank
            body.trailing = self.trailing_text(last)
            multi = len(body.lines) > 1 or isinstance(item, ast.Block | ast.Settings)
            group = lead + [body]
            if entries and (multi or forced_after):
                group[0].blank_before = True
            entries += group
            forced_after = multi
            prev_line = last
        tail, _ = self.comment_entries(self.take_before(10**9), prev_line)
        if tail and entries and forced_after:
            tail[0].blank_before = True
        entries += tail
        if entries:
            entries[0].blank_before = False
        out = _join(entries, "")
        return out + "\n" if out else ""

    def item(self, item: ast.Item) -> Entry:
        if isinstance(item, ast.Use):
            return Entry(self.use(item))
        if isinstance(item, ast.Block):
            head = f"{item.kind.name} {item.name.name}"
            return Entry(self.block_body(head, item.body, item.body_span, "", force_multi=True))
        if isinstance(item, ast.Settings):
            return Entry(self.block_body(item.kind.name, item.body, item.body_span, "", force_multi=True))
        if isinstance(item, ast.Definition):
            head = f"{item.kind.name} {item.name.name} = "
            return Entry(self.expr_lines(item.value, "", head))
        if isinstance(item, ast.Preset):
            return Entry(self.preset(item))
        raise AssertionError(type(item))

    def use(self, use: ast.Use) -> list[str]:
        module = _quote(use.module) if use.is_file else use.module
        names = [n.name for n in use.names]
        flat = f"use {module} {{ {', '.join(names)} }}"
        if len(flat) <= WIDTH:
            return [flat]
        return [f"use {module} {{", *(f"{INDENT}{n}," for n in names), "}"]

    def preset(self, p: ast.Preset) -> list[str]:
        params = [self.param(x) for x in p.params]
        head = f"{p.kind.name} {p.name.name}"
        flat = f"{head}({', '.join(params)})"
        if len(flat) > WIDTH or any("\n" in x for x in params):
            lines = [f"{head}("]
            for x in p.params:
                lines += _indented(self.param_lines(x), INDENT, suffix=",")
            lines.append(")")
        else:
            lines = [flat]
        if p.value is not None:
            last = lines.pop()
            return lines + self.expr_lines(p.value, "", last + " = ")
        last = lines.pop()
        return lines + self.block_body(last, p.body, p.body_span, "", force_multi=True)

    def param(self, x: ast.Param) -> str:
        return "\n".join(self.param_lines(x))

    def param_lines(self, x: ast.Param) -> list[str]:
        head = f"{x.name}: {x.type}"
        if x.default is None:
            return [head]
        return self.expr_lines(x.default, INDENT, head + " = ")

    # ---- blocks and statements --------------------------------------------------

    def block_body(self, head: str, body: tuple[ast.Stmt, ...], span: ast.Span | None, indent: str,
                   *, force_multi: bool) -> list[str]:
        """`head { ... }` laid out at `indent` (the indent of the head's line)."""
        first = span.line if span else (body[0].span.line if body else 0)
        last = span.end_line if span else (_stmt_last_line(body[-1]) if body else 0)
        if not body and not self.has_comment_within(first, last - 1):
            return [f"{head} {{}}"]
        if not force_multi and not self.has_comment_within(first, last - 1):
            flat = self.flat_body(body)
            if flat is not None and len(indent) + len(head) + len(flat) + 4 <= WIDTH:
                return [f"{head} {{ {flat} }}" if flat else f"{head} {{}}"]
        opening = f"{head} {{"
        starts_on_head = bool(body) and body[0].span.line == first
        if not starts_on_head:
            c = self.take_trailing(first)
            if c is not None:
                opening += "  " + c.text
        inner = indent + INDENT
        entries: list[Entry] = []
        prev_line = first
        for stmt in body:
            s_first, s_last = stmt.span.line, _stmt_last_line(stmt)
            # Comments inside a sub-block stay in it; those inside a value go above it.
            inner_end = s_first if isinstance(stmt, ast.SubBlock) else s_last
            lead, blank = self.lead_entries(s_first, inner_end, prev_line)
            entries += lead
            e = self.stmt(stmt, inner)
            e.blank_before = blank
            e.trailing = self.trailing_text(s_last, _stmt_end_col(stmt))
            entries.append(e)
            prev_line = max(prev_line, s_last)
        tail, _ = self.comment_entries(self.take_before(last), prev_line)
        entries += tail
        if entries:
            entries[0].blank_before = False
        lines = [opening]
        text = _join(entries, inner)
        if text:
            lines += text.split("\n")
        lines.append(indent + "}")
        # The first line carries no indent (the caller places it); the others are absolute.
        return lines

    def flat_body(self, body: tuple[ast.Stmt, ...]) -> str | None:
        """The statements on one line, or None when one of them cannot be."""
        parts = []
        for stmt in body:
            if isinstance(stmt, ast.SubBlock):
                inner = self.flat_body(stmt.body)
                if inner is None:
                    return None
                parts.append(f"{stmt.name} {{ {inner} }}" if inner else f"{stmt.name} {{}}")
                continue
            e = self.stmt(stmt, "")
            if len(e.lines) != 1:
                return None
            parts.append(e.lines[0])
        return ", ".join(parts)

    def stmt(self, stmt: ast.Stmt, indent: str) -> Entry:
        """A statement at `indent`, without the comments around it (block_body places them)."""
        if isinstance(stmt, ast.SubBlock):
            return Entry(self.block_body(stmt.name, stmt.body, stmt.span, indent, force_multi=False))
        if isinstance(stmt, ast.Attr):
            lines = self.expr_lines(stmt.value, indent, f"{stmt.name} = ")
            align = (stmt.name, lines[0][len(stmt.name) + 1:]) if len(lines) == 1 else None
        elif isinstance(stmt, ast.Typed):
            lines, align = [f"{stmt.name}: {stmt.type}"], None
        elif isinstance(stmt, ast.Sql):
            lines, align = self.expr_lines(stmt.text, indent, "sql "), None
        elif isinstance(stmt, ast.Assert):
            lines, align = self.expr_lines(stmt.expr, indent, "assert "), None
        else:
            raise AssertionError(type(stmt))
        return Entry(lines, align=align)

    # ---- expressions ------------------------------------------------------------

    def expr_lines(self, e: ast.Expr, indent: str, prefix: str) -> list[str]:
        """`prefix` + the expression, starting on a line indented by `indent`.

        The first returned line carries no indent; continuation lines are absolute."""
        flat = self.flat(e)
        if flat is not None and len(indent) + len(prefix) + len(flat) <= WIDTH:
            return [prefix + flat]
        return self.broken(e, indent, prefix)

    def broken(self, e: ast.Expr, indent: str, prefix: str) -> list[str]:
        inner = indent + INDENT
        if isinstance(e, ast.ListExpr):
            return self._items(prefix + "[", [(None, x) for x in e.items], inner, indent + "]")
        if isinstance(e, ast.Sweep):
            return self.broken(e.items, indent, prefix + "sweep ")
        if isinstance(e, ast.CallExpr):
            items: list[tuple[str | None, ast.Expr]] = [(None, a) for a in e.args]
            items += [(k.name, k.value) for k in e.kwargs]
            return self._items(prefix + e.dotted + "(", items, inner, indent + ")")
        if isinstance(e, ast.Str) and e.long:
            return self.long_string(e, indent, prefix)
        if isinstance(e, ast.BinOp | ast.Neg):
            # Operators never break; a long string inside one keeps its own lines.
            return (prefix + self.op_text(e, indent)).split("\n")
        flat = self.flat(e)
        assert flat is not None
        return [prefix + flat]

    def _items(self, opening: str, items: list[tuple[str | None, ast.Expr]], inner: str,
               closing: str) -> list[str]:
        if not items:
            return [opening + closing.strip()]
        lines = [opening]
        for name, value in items:
            sub = self.expr_lines(value, inner, f"{name} = " if name else "")
            lines.append(inner + sub[0])
            lines += sub[1:]
            lines[-1] += ","
        lines.append(closing)
        return lines

    def flat(self, e: ast.Expr) -> str | None:
        """The expression on one line, or None when it cannot be (a multi-line string)."""
        text = self.op_text(e, "")
        return None if "\n" in text else text

    def op_text(self, e: ast.Expr, indent: str, min_prec: int = 0) -> str:
        """Flat text with the parentheses precedence needs; long strings may span lines."""
        if isinstance(e, ast.BinOp):
            p = _PREC[e.op]
            # Left operands of + - * / associate; a comparison never chains.
            left = self.op_text(e.left, indent, p + 1 if p == 1 else p)
            right = self.op_text(e.right, indent, p + 1)
            text = f"{left} {e.op} {right}"
            return f"({text})" if p < min_prec else text
        if isinstance(e, ast.Neg):
            operand = self.op_text(e.operand, indent, _UNARY)
            # -(-1), not --1: a reader (and many a language) takes `--` for one operator.
            text = f"-({operand})" if operand.startswith("-") else "-" + operand
            return f"({text})" if _UNARY < min_prec else text
        if isinstance(e, ast.Num):
            return e.text
        if isinstance(e, ast.Str):
            if e.long:
                return "\n".join(self.long_string(e, indent, ""))
            return self.raw(e.span) or _quote(e.value)
        if isinstance(e, ast.Bool):
            return "true" if e.value else "false"
        if isinstance(e, ast.Ref):
            return e.dotted
        if isinstance(e, ast.ListExpr):
            return "[" + ", ".join(self.op_text(x, indent) for x in e.items) + "]"
        if isinstance(e, ast.CallExpr):
            args = [self.op_text(a, indent) for a in e.args]
            args += [f"{k.name} = {self.op_text(k.value, indent)}" for k in e.kwargs]
            return f"{e.dotted}({', '.join(args)})"
        if isinstance(e, ast.Sweep):
            return "sweep " + self.op_text(e.items, indent)
        if isinstance(e, ast.Select):
            return f"{e.mode} {e.metric} on {e.data.dotted}"
        raise AssertionError(type(e))

    def long_string(self, s: ast.Str, indent: str, prefix: str) -> list[str]:
        """\"\"\"text\"\"\": one line if written on one line, else the text indented under it."""
        raw = self.raw(s.span)
        one_line = raw is not None and "\n" not in raw
        value = s.value
        if one_line and "\n" not in value and not value.startswith('"') and not value.endswith('"'):
            return [f'{prefix}"""{value}"""']
        inner = indent + INDENT
        body = [inner + ln if ln else "" for ln in value.split("\n")]
        return [f'{prefix}"""', *body, indent + '"""']

    def raw(self, span: ast.Span) -> str | None:
        """The source text of a span, when it lies on one line (strings as written)."""
        if span.line != span.end_line:
            return "\n" if span.line < span.end_line else None
        if not 1 <= span.line <= len(self.source_lines):
            return None
        return self.source_lines[span.line - 1][span.col - 1:span.end_col - 1] or None


# ---- helpers ---------------------------------------------------------------------


def _quote(value: str) -> str:
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\t", "\\t").replace("\r", "\\r").replace("\0", "\\0"))
    return f'"{escaped}"'


def _indented(lines: list[str], indent: str, suffix: str = "") -> list[str]:
    out = [indent + lines[0]] + lines[1:]
    out[-1] += suffix
    return out


def _item_lines(item: ast.Item) -> tuple[int, int]:
    """First and last source line of a top-level item."""
    if isinstance(item, ast.Block | ast.Settings):
        return item.span.line, (item.body_span or item.span).end_line
    if isinstance(item, ast.Definition):
        return item.span.line, item.value.span.end_line
    if isinstance(item, ast.Preset):
        if item.value is not None:
            return item.span.line, item.value.span.end_line
        return item.span.line, (item.body_span or item.span).end_line
    return item.span.line, item.span.end_line


def _item_inner_end(item: ast.Item) -> int:
    """The line before which a comment inside a top-level item is written above it: none
    for a block (its comments stay in its body), the `{` line for a preset's `{ body }`
    form (comments among its parameters), the last line for the rest (values, `use` names)."""
    if isinstance(item, ast.Block | ast.Settings):
        return item.span.line
    if isinstance(item, ast.Preset) and item.value is None:
        return (item.body_span or item.span).line
    return _item_lines(item)[1]


def _stmt_value_span(stmt: ast.Stmt) -> ast.Span:
    if isinstance(stmt, ast.Attr):
        return stmt.value.span
    if isinstance(stmt, ast.Sql):
        return stmt.text.span
    if isinstance(stmt, ast.Assert):
        return stmt.expr.span
    return stmt.span


def _stmt_last_line(stmt: ast.Stmt) -> int:
    return _stmt_value_span(stmt).end_line


def _stmt_end_col(stmt: ast.Stmt) -> int:
    return _stmt_value_span(stmt).end_col


def _join(entries: list[Entry], indent: str) -> str:
    """Entries as text at `indent`, with aligned `=` in runs of one-line attributes."""
    widths: list[int] = [0] * len(entries)
    i = 0
    while i < len(entries):
        if entries[i].align is None:
            i += 1
            continue
        j = i
        while j + 1 < len(entries) and entries[j + 1].align is not None and not entries[j + 1].blank_before:
            j += 1
        width = max(len(e.align[0]) for e in entries[i:j + 1] if e.align)
        for k in range(i, j + 1):
            widths[k] = width
        i = j + 1
    out: list[str] = []
    for e, width in zip(entries, widths):
        if e.blank_before and out:
            out.append("")
        lines = list(e.lines)
        if e.align is not None:
            lines = [e.align[0].ljust(width) + " " + e.align[1]]
        lines[0] = indent + lines[0]
        if e.trailing:
            lines[-1] += "  " + e.trailing
        out += lines
    return "\n".join(out)
