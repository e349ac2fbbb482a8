"""Text -> AST. One Lark LALR parser (built once, cached), one error converter."""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Iterator
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ftlang.lang import ast
from ftlang.lang.diagnostics import Diagnostic, FtError, Label

SUPPORTED_VERSIONS = ("0.1",)

# How deep the AST may nest (brackets, calls, blocks, each operator of a chain). The
# compiler's passes recurse over it; real files stay under 10 levels.
MAX_DEPTH = 100
MAX_CHAIN = 50  # operators in one chain (`a + b + ...`)
_CHAINS = ("comparison", "sum", "product")  # one tree node, folded into a chain of BinOps
BOM = "\ufeff"


def plain_text(text: str) -> str:
    """A file's text as it is parsed: without a leading byte-order mark, and with CRLF line
    ends read as LF. What a file says must not depend on the editor or on git's line-end
    conversion: a CRLF checkout would otherwise put "\r" into every multi-line string (SQL,
    prompts), so into cache keys, and shift SQL positions in diagnostics."""
    text = text.removeprefix(BOM)
    return text.replace("\r\n", "\n") if "\r" in text else text

# English names for terminals, for "expected ..." lists.
TERMINAL_NAMES: dict[str, str] = {
    "NAME": "a name", "STRING": "a string", "LONG_STRING": "a string", "NUMBER": "a number",
    "VERSION": "a version such as 0.1", "_NL": "a new line", "$END": "the end of the file",
    "LBRACE": "`{`", "RBRACE": "`}`", "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`",
    "RSQB": "`]`", "COMMA": "`,`", "EQUAL": "`=`", "COLON": "`:`", "DOT": "`.`",
    "MINUS": "`-`", "PLUS": "`+`", "STAR": "`*`", "SLASH": "`/`", "MORETHAN": "`>`",
    "LESSTHAN": "`<`", "__ANON_0": "an operator",
}


class BracketNewlines:
    """Drops newlines inside ( ) and [ ]; inside { } they end statements."""

    always_accept = ("_NL",)

    def process(self, stream: Iterator[Any]) -> Iterator[Any]:
        depth = 0
        for tok in stream:
            if tok.type in ("LPAR", "LSQB"):
                depth += 1
            elif tok.type in ("RPAR", "RSQB"):
                depth = max(0, depth - 1)
            elif tok.type == "_NL" and depth:
                continue
            yield tok


_OPTIONAL = ("regex", "interegular")  # lark imports them when installed; ftlang's grammar uses neither


def _import_lark() -> None:
    """Imports lark without its optional `regex` and `interegular` (their import is a
    good part of lark's, at every compile): the grammar's terminals are plain `re` patterns, and interegular only
    checks terminals for collisions, which tests/test_lang.py asks of strict mode in a fresh
    process where lark is imported whole. Both stay importable for anything else (they are
    hidden only while lark itself is imported, once per process, before any step runs)."""
    if "lark" in sys.modules:
        return
    absent = [m for m in _OPTIONAL if m not in sys.modules]
    for m in absent:
        sys.modules[m] = None  # type: ignore[assignment]  # makes `import m` raise ImportError
    try:
        import lark  # noqa: F401
    finally:
        for m in absent:
            if sys.modules.get(m, "") is None:
                del sys.modules[m]


@lru_cache(maxsize=2)
def _parser(strict: bool = False) -> Any:
    _import_lark()
    from lark import Lark

    grammar = resources.files("ftlang.lang").joinpath("ft.lark").read_text()
    return Lark(grammar, parser="lalr", lexer="contextual", postlex=BracketNewlines(),
                propagate_positions=True, maybe_placeholders=True, strict=strict,
                cache=not strict)


def read_source(path: str | Path, file: str) -> str:
    """The text of a .ft file, shown as `file` in diagnostics: UTF-8, without a leading
    byte-order mark. FtError (FT0131) when it is not a readable regular file, or not UTF-8
    (naming the line and column of the first bad byte)."""
    p = Path(path)
    try:
        if not stat.S_ISREG(os.stat(p).st_mode):  # a pipe would block the read forever
            raise _unreadable(file, "not a regular file")
        data = p.read_bytes()
    except OSError as e:
        raise _unreadable(file, e.strerror or str(e)) from None
    try:
        return plain_text(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise _not_utf8(data, e, file) from None


def _unreadable(file: str, why: str) -> FtError:
    return FtError([Diagnostic("FT0131", f"cannot read {file}: {why}", [],
                               help="check the path and the file's permissions")])


def _not_utf8(data: bytes, e: UnicodeDecodeError, file: str) -> FtError:
    line = data.count(b"\n", 0, e.start) + 1
    start = data.rfind(b"\n", 0, e.start) + 1
    before = data[start:e.start].decode("utf-8").removeprefix(BOM)  # valid: the first bad byte is at e.start
    col = len(before) + 1
    text = data.decode("utf-8", "replace").removeprefix(BOM)  # each bad byte shows as U+FFFD
    diag = Diagnostic("FT0131", f"{file} is not UTF-8 text: byte 0x{data[e.start]:02x} is not valid here",
                      [Label(ast.Span(file, line, col, line, col + 1), "not UTF-8")],
                      help="save the file as UTF-8 (for Latin-1: iconv -f latin1 -t utf-8)")
    return FtError([diag], sources={file: text})


def parse(text: str, file: str = "<input>") -> ast.Module:
    """Parse a whole file; raises FtError with one diagnostic on a syntax error."""
    text = plain_text(text)
    version, items = parse_items(text, file)
    return finish(ast.Module(file, "", version, items), text)


def parse_items(text: str, file: str) -> tuple[ast.Version | None, list[ast.Item]]:
    """The version line and the items of `text` (a whole file, or lang/incremental.py's
    piece of one, its lines numbered as in the file); FtError on a syntax error."""
    _import_lark()
    from lark.exceptions import UnexpectedInput

    try:
        tree = _parser().parse(text + "\n")
    except UnexpectedInput as exc:
        raise FtError([convert_error(exc, text, file)]) from None
    deep = _nesting_error(tree, file)
    if deep is not None:
        raise FtError([deep])
    module = _Builder(file).module(tree)
    return module.version, module.items


def finish(module: ast.Module, text: str) -> ast.Module:
    """The module with its source; FT0008 for a version this ftlang does not know."""
    module.source = text
    if module.version is not None and module.version.text not in SUPPORTED_VERSIONS:
        raise FtError([Diagnostic(
            "FT0008", f"unsupported language version `ft {module.version.text}`",
            [Label(module.version.span, "this version is not known")],
            help=f"this ftlang understands: {', '.join('ft ' + v for v in SUPPORTED_VERSIONS)}")])
    return module


def _nesting_error(tree: Any, file: str) -> Diagnostic | None:
    """FT0130 where the AST would nest deeper than MAX_DEPTH levels, or a chain of
    operators (folded into nested BinOps) is longer than MAX_CHAIN; found without recursion."""
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if not hasattr(node, "data"):
            continue  # a token
        ops = (len(node.children) - 1) // 2 if node.data in _CHAINS else 0
        if ops > MAX_CHAIN:
            return Diagnostic("FT0130", f"expression too long: {ops + 1} terms in one chain of operators",
                              [Label(_tree_span(node, file), f"at most {MAX_CHAIN} operators")],
                              help="compute the value outside the .ft file, or write a list")
        depth += max(1, ops)
        if depth > MAX_DEPTH:
            span = _tree_span(node, file)
            return Diagnostic("FT0130", f"nested too deeply: more than {MAX_DEPTH} levels",
                              [Label(ast.Span(file, span.line, span.col, span.line, span.col + 1),
                                     "the nesting passes the limit here")],
                              help=f"flatten the value: brackets, calls, blocks and operators nest at "
                                   f"most {MAX_DEPTH} levels deep (a flat list of any length is fine)")
        stack.extend((c, depth) for c in node.children)
    return None


def _tree_span(node: Any, file: str) -> ast.Span:
    m = node.meta
    line, col = getattr(m, "line", 1), getattr(m, "column", 1)
    return ast.Span(file, line, col, getattr(m, "end_line", line), getattr(m, "end_column", col + 1))


# ---- tree -> AST ------------------------------------------------------------


def _tok_span(file: str, tok: Any) -> ast.Span:
    return ast.Span(file, tok.line, tok.column, tok.end_line, tok.end_column)


class _Builder:
    """Turns the Lark tree into AST dataclasses with spans."""

    def __init__(self, file: str) -> None:
        self.file = file

    def span(self, node: Any) -> ast.Span:
        if hasattr(node, "type"):  # a Token
            return _tok_span(self.file, node)
        m = node.meta
        return ast.Span(self.file, m.line, m.column, m.end_line, m.end_column)

    def module(self, tree: Any) -> ast.Module:
        version = None
        items: list[ast.Item] = []
        for child in tree.children:
            if child is None:
                continue
            if child.data == "version":
                tok = child.children[0]
                # From `ft` to the version number: the rule's own span runs past the newline.
                start = self.span(child)
                version = ast.Version(str(tok), ast.Span(self.file, start.line, start.col,
                                                         tok.end_line, tok.end_column))
            else:
                items.append(self.item(child))
        return ast.Module(self.file, "", version, items)

    def name(self, tok: Any) -> ast.Name:
        return ast.Name(str(tok), self.span(tok))

    def item(self, t: Any) -> ast.Item:
        kind = t.data
        if kind == "use":
            mod, names = t.children
            target = mod.children[0]
            if hasattr(target, "type"):
                module, is_file = _unquote(str(target)), True
            else:
                module, is_file = ".".join(str(x) for x in target.children), False
            name_list = names.children[0]
            return ast.Use(module, is_file, tuple(self.name(n) for n in name_list.children),
                           self.span(t).to(self.span(names)))
        if kind == "block":
            k, n, body = t.children
            kn, nn = self.name(k), self.name(n)
            return ast.Block(kn, nn, self.body(body), kn.span.to(nn.span), self.span(body))
        if kind == "settings":
            k, body = t.children
            kn = self.name(k)
            return ast.Settings(kn, self.body(body), kn.span, self.span(body))
        if kind == "definition":
            k, n, value = t.children
            kn, val = self.name(k), self.expr(value)
            return ast.Definition(kn, self.name(n), val, kn.span.to(val.span))
        if kind == "preset":
            k, n, *params, last = t.children
            ps = tuple(self.param(p) for p in params if p is not None)
            kn, nn = self.name(k), self.name(n)
            if getattr(last, "data", None) == "body":
                return ast.Preset(kn, nn, ps, self.body(last), kn.span.to(nn.span),
                                  body_span=self.span(last))
            return ast.Preset(kn, nn, ps, (), kn.span.to(nn.span), value=self.expr(last))
        raise AssertionError(kind)

    def param(self, t: Any) -> ast.Param:
        name, typ, default = t.children
        return ast.Param(str(name), _type_text(typ),
                         self.expr(default) if default is not None else None,
                         self.span(t), self.span(name))

    def body(self, t: Any) -> tuple[ast.Stmt, ...]:
        return tuple(self.stmt(c) for c in t.children if c is not None)

    def stmt(self, t: Any) -> ast.Stmt:
        kind = t.data
        if kind == "attr":
            name, value = t.children
            return ast.Attr(str(name), self.expr(value), self.span(t), self.span(name))
        if kind == "subblock":
            name, body = t.children
            return ast.SubBlock(str(name), self.body(body), self.span(t), self.span(name))
        if kind == "typed":
            name, typ = t.children
            return ast.Typed(str(name), _type_text(typ), self.span(t), self.span(name))
        if kind == "sql":
            return ast.Sql(self.string(t.children[0]), self.span(t))
        if kind == "assert_":
            return ast.Assert(self.expr(t.children[0]), self.span(t))
        raise AssertionError(kind)

    def string(self, t: Any) -> ast.Str:
        tok = t.children[0]
        raw = str(tok)
        if tok.type == "LONG_STRING":
            return ast.Str(_dedent(raw[3:-3]), self.span(tok), long=True)
        return ast.Str(_unquote(raw), self.span(tok))

    def expr(self, t: Any) -> ast.Expr:
        kind = getattr(t, "data", None)
        if kind == "number":
            tok = t.children[0]
            text = str(tok)
            is_float = any(ch in text for ch in ".eE")
            return ast.Num(float(text) if is_float else _integer(text), text, self.span(tok))
        if kind == "string":
            return self.string(t)
        if kind in ("true", "false"):
            return ast.Bool(kind == "true", self.span(t))
        if kind == "list":
            items = tuple(self.expr(c) for c in t.children if c is not None)
            return ast.ListExpr(items, self.span(t))
        if kind == "ref":
            dotted = t.children[0]
            return ast.Ref(tuple(str(x) for x in dotted.children), self.span(t))
        if kind == "call":
            dotted, args = t.children
            pos: list[ast.Expr] = []
            kws: list[ast.Kwarg] = []
            for a in (args.children if args is not None else []):
                if getattr(a, "data", None) == "kwarg":
                    kws.append(ast.Kwarg(str(a.children[0]), self.expr(a.children[1]),
                                         self.span(a.children[0])))
                else:
                    pos.append(self.expr(a))
            return ast.CallExpr(tuple(str(x) for x in dotted.children), tuple(pos), tuple(kws),
                                self.span(t), self.span(dotted))
        if kind in ("comparison", "sum", "product"):
            left = self.expr(t.children[0])
            rest = t.children[1:]
            for i in range(0, len(rest), 2):
                op = str(rest[i].children[0])
                right = self.expr(rest[i + 1])
                left = ast.BinOp(op, left, right, left.span.to(right.span))
            return left
        if kind == "neg":
            return ast.Neg(self.expr(t.children[0]), self.span(t))
        if kind == "sweep":
            lst = self.expr(t.children[0])
            assert isinstance(lst, ast.ListExpr)
            return ast.Sweep(lst, self.span(t))
        if kind == "select":
            op, metric, dotted = t.children
            ref = ast.Ref(tuple(str(x) for x in dotted.children), self.span(dotted))
            return ast.Select(str(op.children[0]), str(metric), ref, self.span(t))
        raise AssertionError(f"unexpected tree {t!r}")


def _type_text(t: Any) -> str:
    if hasattr(t, "type"):
        return str(t)
    head, *args = t.children
    return f"{head}[{', '.join(_type_text(a) for a in args)}]"


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "0": "\0"}


def _unquote(raw: str) -> str:
    body = raw[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), body)


def _dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text.strip("\n")).strip()


def collect_comments(text: str) -> list[ast.Comment]:
    """Comments with their positions, for `ft fmt` (the grammar drops them)."""
    out: list[ast.Comment] = []
    in_long = False
    for lineno, line in enumerate(ast.source_lines(text), 1):
        i, n, in_str = 0, len(line), False
        while i < n:
            if in_long:
                j = line.find('"""', i)
                if j < 0:
                    break
                in_long, i = False, j + 3
                continue
            ch = line[i]
            if in_str:
                if ch == "\\":
                    i += 2
                    continue
                if ch == '"':
                    in_str = False
            elif line.startswith('"""', i):
                in_long, i = True, i + 3
                continue
            elif ch == '"':
                in_str = True
            elif ch == "#":
                out.append(ast.Comment(line[i:].rstrip(), lineno, i + 1, not line[:i].strip()))
                break
            i += 1
    return out


# ---- Lark exceptions -> one Diagnostic --------------------------------------


_OPERATORS = {"MINUS", "PLUS", "STAR", "SLASH", "MORETHAN", "LESSTHAN"}


def _expected(names: set[str]) -> str:
    if names & _OPERATORS or any(n.startswith("__ANON") for n in names):
        names = {n for n in names if n not in _OPERATORS and not n.startswith("__ANON")} | {"__OP"}
    words = sorted({TERMINAL_NAMES.get(n, "an operator" if n == "__OP" else f"`{n.lower()}`")
                    for n in names})
    if not words:
        return ""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _integer(text: str) -> int:
    """An integer literal. Past 4000 digits (Python refuses to convert past 4300) it is far
    beyond every bound the checker enforces: a stand-in of the same sign, itself out of every
    range, keeps the error a range diagnostic on the literal as written."""
    if len(text.lstrip("+-")) > 4000:
        return -(10**4000) if text.startswith("-") else 10**4000
    return int(text)


def convert_error(exc: Any, text: str, file: str) -> Diagnostic:
    """Every Lark exception becomes one Diagnostic, with a targeted hint where we know one."""
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

    lines = ast.source_lines(text) or [""]
    line = max(1, min(getattr(exc, "line", 1) or 1, len(lines) + 1))
    col = max(1, getattr(exc, "column", 1) or 1)
    src = lines[line - 1] if line <= len(lines) else ""
    before = src[: col - 1]

    def at(width: int = 1, msg: str = "") -> list[Label]:
        return [Label(ast.Span(file, line, col, line, col + max(1, width)), msg)]

    if isinstance(exc, UnexpectedCharacters):
        ch = src[col - 1] if col - 1 < len(src) else ""
        if src[col - 1:col + 1] == "${":
            m = re.match(r"\$\{([^}]*)\}?", src[col - 1:])
            inner = m.group(1) if m else "x"
            return Diagnostic("FT0007", "`${...}` interpolation is not part of ftlang",
                              at(len(m.group(0)) if m else 2, "interpolation"),
                              help=f"refer to a block by name (`{inner}`), or read an environment "
                                   f'variable with env("{inner.upper()}")')
        if ch == '"':
            return Diagnostic("FT0004", "unterminated string", at(len(src) - col + 1, "this string never ends"),
                              help='close it with `"` on the same line, or use """...""" for text over several lines')
        if ch == "'":
            return Diagnostic("FT0009", "strings use double quotes", at(1, "single quote"),
                              help="write \"...\" instead of '...'")
        return Diagnostic("FT0003", f"unexpected character `{ch}`" if ch else "unexpected character",
                          at(1, "not valid here"),
                          help=_char_help(ch, exc))
    if isinstance(exc, UnexpectedToken) and exc.token.type == "$END" or isinstance(exc, UnexpectedEOF):
        last = len(lines)
        end_col = len(lines[-1]) + 1 if lines else 1
        opened = _unclosed(text)
        return Diagnostic("FT0002", "unexpected end of file",
                          [Label(ast.Span(file, last, max(1, end_col), last, end_col + 1), "the file ends here")],
                          help=f"a `{opened}` is not closed" if opened else
                          f"expected {_expected(getattr(exc, 'expected', set()))}")
    assert isinstance(exc, UnexpectedToken)
    tok = exc.token
    width = max(1, (tok.end_column or col + 1) - col) if tok.end_line == tok.line else 1
    expected = set(exc.expected)
    # YAML habit: `lr: 2e-4`
    m = re.match(r"^(\s*)([A-Za-z_]\w*)\s*:\s*(.*)$", src)
    if m and tok.line == line:
        name, value = m.group(2), m.group(3).strip()
        return Diagnostic("FT0005", "`:` declares a type; attributes are set with `=`",
                          [Label(ast.Span(file, line, len(m.group(1)) + 1, line, len(src) + 1),
                                 "written like YAML")],
                          help=f"write `{name} = {value or '...'}`")
    if before.rstrip().endswith("=") and tok.type in ("_NL", "RBRACE", "COMMA", "$END"):
        eq = before.rstrip()
        return Diagnostic("FT0006", "missing value after `=`",
                          [Label(ast.Span(file, line, len(eq), line, len(eq) + 1), "a value must follow")],
                          help="write a value (a string, number, list, name or call), or delete the line")
    unquoted = re.match(r"^\s*([A-Za-z_]\w*)\s*=\s*([\w.-]+/[\w./-]+)\s*$", src)
    if unquoted:
        value = unquoted.group(2)
        return Diagnostic("FT0116", "a path or hub id must be quoted",
                          [Label(ast.Span(file, line, src.index(value) + 1, line,
                                          src.index(value) + len(value) + 1), "unquoted")],
                          help=f'write `{unquoted.group(1)} = "{value}"`')
    if tok.type == "LBRACE" and re.match(r"^\s*[A-Za-z_]\w*\s*\{", src):
        return Diagnostic("FT0001", "a block needs a name", at(1, "name missing before `{`"),
                          help=f"write `{src.split()[0]} NAME {{ ... }}`")
    if tok.type == "_NL":
        what = "a new line"
        lab = [Label(ast.Span(file, line, col, line, col + 1), "the line ends here")]
    else:
        what = f"`{tok}`"
        lab = at(width, "unexpected here")
    hint = f"expected {_expected(expected)}" if expected else None
    if tok.type == "NAME" and "EQUAL" in expected:
        hint = f"attributes are written `name = value`; expected {_expected(expected)}"
    elif tok.type == "NAME" and "_NL" in expected and ("COMMA" in expected or "RBRACE" in expected):
        hint = "put each statement on its own line, or separate them with `,`"
    return Diagnostic("FT0001", f"syntax error: unexpected {what}", lab, help=hint)


def _char_help(ch: str, exc: Any) -> str | None:
    if ch == ";":
        return "statements end at the end of the line; no `;` is needed"
    if ch in "@&|!%^~`":
        return None
    allowed = getattr(exc, "allowed", None)
    return f"expected {_expected(set(allowed))}" if allowed else None


def _unclosed(text: str) -> str | None:
    """The innermost bracket still open at the end of the file, ignoring strings and comments."""
    stripped = re.sub(r'"""(.|\n)*?"""|"(\\.|[^"\\\n])*"|#[^\n]*', "", text)
    stack: list[str] = []
    pairs = {"}": "{", ")": "(", "]": "["}
    for ch in stripped:
        if ch in "{([":
            stack.append(ch)
        elif ch in pairs and stack and stack[-1] == pairs[ch]:
            stack.pop()
    return stack[-1] if stack else None
