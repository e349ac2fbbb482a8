"""Diagnostics: rustc-style messages with codes, spans, carets and help lines."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ftlang.lang.ast import Span, source_lines


@dataclass(frozen=True)
class Code:
    title: str  # "unknown reference"
    explain: str  # when it happens and what to do, for docs/errors.md


# Every code: a one-line title and what it means. docs/errors.md is generated from this
# one table (python -m ftlang.compiler.docgen errors), each code with an example.
CODES: dict[str, Code] = {
    "FT0001": Code('syntax error',
         'The parser found a token it did not expect. The help line lists what would fit.'),
    "FT0002": Code('unexpected end of file',
         'The file ends inside a block, a list or a call; the help names the bracket left '
         'open.'),
    "FT0003": Code('unexpected character', 'A character that is not part of ftlang, such as `;` or `@`.'),
    "FT0004": Code('unterminated string', 'A string without its closing quote on the same line.'),
    "FT0005": Code('`:` used where `=` was meant',
         '`name: value` is YAML; ftlang sets attributes with `=`. `:` only declares a '
         'type.'),
    "FT0006": Code('missing value after `=`', '`name =` with nothing after it.'),
    "FT0007": Code('`${...}` interpolation',
         '`${...}` is shell/YAML interpolation. Refer to a block by name, or use '
         '`env("NAME")`.'),
    "FT0008": Code('unsupported language version',
         'The `ft` line names a language version this ftlang does not know.'),
    "FT0009": Code('single-quoted string', 'Strings use double quotes.'),
    "FT0101": Code('unknown block kind',
         'The first word of a block is not a block kind (or a preset family, for a '
         'preset).'),
    "FT0102": Code('unknown reference',
         'A name that no block defines, a part a block does not have, or a table a query '
         'reads that is not an input.'),
    "FT0103": Code('duplicate block name',
         'Two blocks (or presets) with the same name; both places are shown.'),
    "FT0104": Code('unknown attribute',
         'An attribute or argument the block or call does not take; the help suggests the '
         'closest one and lists the rest.'),
    "FT0105": Code('missing required attribute',
         'A required attribute or argument is missing, or is an empty list where the step needs '
         'an entry (an eval with `models = []` evaluates no model).'),
    "FT0106": Code('wrong type',
         'A value of the wrong type: a string where a reference was meant (or the '
         'reverse), a quoted number, an unknown choice.'),
    "FT0107": Code('value out of range',
         'A number outside its allowed range (lr > 0, r >= 1, dropout <= 0.99, ...).'),
    "FT0108": Code('duplicate attribute',
         'An attribute or argument given twice, or an entry listed twice in a list where a '
         'repeat means nothing: eval `models`, `metrics` (two metrics stored under one name, '
         'as `exact_match` and `exact_match(strip = false)`) and `extra_data`, the `from` of a '
         '`mix`. Both places are shown.'),
    "FT0109": Code('reference of the wrong kind',
         'A reference to a block of the wrong kind: a model where a dataset is expected, '
         '...'),
    "FT0110": Code('dependency cycle',
         'Blocks that depend on each other in a circle; every edge of the cycle is shown.'),
    "FT0111": Code('file not found', 'A file (a data file, an imported .ft file) that does not exist.'),
    "FT0112": Code('unknown function',
         'An unknown call: a source, method, init, metric or template that does not exist.'),
    "FT0113": Code('invalid split', 'A `split` whose parts do not add up to 1, or without `by`.'),
    "FT0114": Code('conflicting attributes',
         'Attributes that conflict (a model with both `hub` and `path`), or one the chosen '
         'method does not use (`truncation` with dpo, `max_length` with grpo: the help says '
         'why); also warnings such as an unpinned or branch revision, a warmup longer than '
         'max_steps, eval_steps without eval_data.'),
    "FT0115": Code('statement not allowed here',
         'A statement in a block that does not take it (`sql` outside curate, `assert` '
         'outside eval).'),
    "FT0116": Code('YAML-style value',
         'A YAML habit: an unquoted path or hub id (`org/name`), `yes`/`no`/`on`/`off`.'),
    "FT0117": Code('unknown import',
         'A `use` that names an unknown module, or a name the module does not have.'),
    "FT0118": Code('invalid assertion',
         'An `assert` that does not compare `model.metric` values of this eval, names a'
         ' swept model without a selection, or compares no metric at all (`assert 1 > 2`:'
         ' always false, or always true, whatever the eval measures).'),
    "FT0119": Code('unknown sub-block', 'A sub-block the block does not have (`schema`, `split`).'),
    "FT0120": Code('environment variable not set',
         '`env("NAME")` without a default, and the variable is not set.'),
    "FT0121": Code('invalid select',
         'A `select = ...` that is misplaced, names an unknown metric or has no sweep to '
         'choose from; a warning when it keeps the worst point.'),
    "FT0122": Code('invalid preset',
         'A preset that is not written `family name(params) = call(...)`, belongs to no '
         'family, or calls itself.'),
    "FT0123": Code('invalid sweep',
         'An empty sweep, a repeated value, a sweep where none is allowed, or sweeps that '
         'would make more than 10,000 steps.'),
    "FT0124": Code('import cycle', 'Files that import each other.'),
    "FT0125": Code('dataset contract',
         'A dataset contract: a consumer needs columns its input does not have, a query '
         'reads a column its tables do not have, or a split is by a missing column.'),
    "FT0126": Code('SQL syntax error',
         'The SQL of a curate block does not parse; the caret points into the query.'),
    "FT0127": Code('nondeterministic SQL',
         'A curate query whose rows could change between runs over the same inputs: the '
         "clock (now(), current_date), random() or USING SAMPLE without a seed, DuckDB's "
         'own state (duckdb_settings(), current_setting(), version()). random() is fine '
         'after a `SELECT setseed(x);` statement; `deterministic = false` allows the rest,'
         ' and the block then reruns every time.'),
    "FT0128": Code('SQL not allowed in curate',
         'A statement or function a curate query may not run: SET, PRAGMA, ATTACH, LOAD, '
         'COPY, EXPORT, CALL (`CALL enable_logging(...)` would end the process), file '
         'readers such as read_csv() (declare a dataset block), query() and DuckDB '
         'internals; or a last statement that is not a query.'),
    "FT0129": Code('SQL rejected by DuckDB',
         "DuckDB's binder rejects a curate query, bound against empty tables with the "
         'upstream columns: an unknown function or type, a wrong argument type, a column '
         'missing from GROUP BY, the `x -> x + 1` lambda DuckDB 2.0 no longer reads.'),
    "FT0130": Code('nesting too deep',
         'Brackets, calls, blocks and operators nested more than 100 levels deep, or more '
         'than 50 operators in one chain (`a + b + ...`). A flat list of any length is '
         'fine.'),
    "FT0131": Code('file cannot be read',
         'A file that exists but cannot be read: a folder, a named pipe or device, a '
         'symbolic link loop, no read permission, or a .ft file that is not UTF-8 (the '
         'caret is on the first bad byte). Checked with stat before opening, so `ft check`'
         ' never hangs.'),
    "FT0132": Code('invalid regular expression',
         'A regular expression that Python\'s `re` cannot compile, in a metric that matches with '
         'one (`regex("...")`, `refusal_rate(patterns = [...])`); the message is re\'s own, with '
         'the position in the pattern.'),
    "FT0133": Code('the file declares nothing',
         'A warning: the .ft file is empty, or holds only comments and its `ft` version line, so '
         '`ft run` has nothing to do; usually the wrong file was named.'),
    "FT0140": Code('unsafe export target',
         'An export `to` that could replace what ftlang did not write: the project folder '
         'or one above it, the home folder or one above it, the `.ft/` cache, a folder '
         "holding an input, another export's folder, or (without `allow_outside = true`) a"
         ' path outside the project. At run time ftlang also replaces only a folder it '
         'published itself and that is unchanged since (step error FT0201 otherwise).'),
    "FT0240": Code('reward missing',
         'An RL method (ppo) or a safety metric given an empty list of rewards or judges: '
         'nothing would score the completions.'),
    "FT0241": Code('invalid PPO batch',
         'ppo splits each rollout batch (batch_size rows) into mini_batches optimiser '
         'steps: mini_batches cannot exceed batch_size.'),
    "FT0280": Code('template has no system role',
         "`template x = gemma(system = ...)`: gemma's published chat template refuses a "
         'system message (it raises "System role not supported"); the instruction goes '
         'into the first user message.'),
    "FT0281": Code('a JSON array read as JSON Lines',
         '`source = jsonl("x.json")` on a file that is one JSON array (`[{...}, {...}]`): '
         'JSON Lines holds one object per line. `json("x.json")` reads an array.'),
    "FT0282": Code('rows not in the named shape',
         'A dataset with `shape = alpaca` (instruction, input, output) or `shape = sharegpt` '
         '(conversations of {from, value}) whose file lacks the columns that shape reads.'),
    "FT0283": Code('training cadence that cannot act',
         'Train attributes of the cadence that contradict each other: `eval_every` with '
         '`eval_steps` (or `save_every` with `save_steps`), a step count that is not whole '
         '(`eval_every = 2.5`: a number >= 1 is steps, < 1 a fraction of an epoch), early '
         'stopping with a fraction-of-an-epoch cadence, `keep_checkpoints` with no checkpoint '
         'written, `stop_if_loss_above_steps` without `stop_if_loss_above`.'),
    "FT0300": Code('cannot push to the hub',
         'An export with `push = hub("org/name")` whose repository id is not "org/name" '
         '(compile time), or that cannot push from here: HF_HUB_OFFLINE is set, or there '
         'is no Hugging Face token (`hf auth login` or HF_TOKEN). The second is checked '
         'when `ft run` starts, before any step runs, so no training is lost to it.'),
    "FT0301": Code('bad shard size',
         'An export `max_shard_size` that is not a whole number and a unit, written '
         'without a space: "2GB", "500MB", "1GiB" (KB, MB, GB, KiB, MiB, GiB).'),
    "FT0302": Code('not in a GGUF export',
         'An export with `format = gguf(...)` and an attribute a GGUF file cannot hold: '
         '`merge = false` (GGUF holds merged weights) or `max_shard_size` (it is one '
         'file).'),
    "FT0242": Code('judge rubric without the response',
         'A judge(...) metric whose rubric has no {response} placeholder: the judge would '
         'never see what it classifies.'),
    "FT0243": Code('invalid judge answers',
         'A judge(...) metric needs two or more distinct answers (its classes). Whether each '
         "is a single token of the judge's vocabulary is checked when the judge is loaded."),
    "FT0320": Code('adapter on an untrained model',
         'A warning: a train block puts an adapter (lora, ia3, prompt or prefix tuning) on '
         'a model built with `init = ...`, whose weights are random. A few adapter steps '
         'on random weights learn little; pretrain it first (a full train with '
         'objective = clm, as examples/quickstart.ft does) and tune that.'),
    "FT0330": Code('mixture ratios do not sum to 1',
         "A `mix` block's `ratios` are the fractions of the mixed rows each dataset gives: "
         'they must sum to 1. The help line shows them scaled to sum to 1.'),
    "FT0331": Code('one ratio per dataset',
         "A `mix` block needs exactly one ratio per dataset in `from`, in the same order."),
    "FT0332": Code('mixture ratio out of range',
         "Each of a `mix` block's ratios is a fraction of the mixed rows: above 0, at most 1."),
    "FT0333": Code('shuffle against an order',
         'A train block with `order = curriculum(...)` or `length(...)` reads its rows in that '
         'order; `shuffle = true` would undo it. Curriculum stages shuffle within themselves.'),
    "FT0334": Code('clean does nothing',
         'A `clean` block needs at least one stage (pii, dedup, language, decontaminate), and '
         'a language filter must keep at least one language.'),
    "FT0335": Code('parse rule makes no column',
         "A `generate` block's parse rule must produce columns: a regex needs valid Python "
         'syntax and named groups (?P<name>...), json(...) needs field names.'),
    "FT0336": Code('malformed prompt template',
         "A `generate` block's prompt fills {column} placeholders from each input row; a "
         'literal brace is written {{ or }}, and format specs are not allowed.'),
    "FT0360": Code('bad process count',
         'A train block\'s `distributed { processes = ... }` that is not a whole number >= 1 or '
         '"auto" (every visible GPU). One process drives one GPU; on the CPU, processes > 1 '
         'run with the gloo backend.'),
    "FT0361": Code('no rendezvous for several machines',
         '`distributed { nodes = N }` with N > 1 and no `rdzv = "HOST:PORT"`: the machines '
         'find each other through torchrun\'s c10d rendezvous on node rank 0\'s machine. Give '
         'it in the block, or leave nodes out and pass `ft run --nnodes N --node-rank K '
         '--rdzv HOST:PORT` (what `ft launch slurm` writes).'),
    "FT0362": Code('quantised base under FSDP',
         'QLoRA (lora(quant = "nf4" | "fp4")) under `strategy = fsdp(...)` without '
         '`quant_storage`: FSDP shards only float tensors, so the 4-bit weights must be stored '
         'in bf16/fp16/fp32 (bitsandbytes\' bnb_4bit_quant_storage). 8-bit LoRA cannot be '
         'sharded at all.'),
    "FT0363": Code('ZeRO-3 with virtual tokens',
         '`strategy = deepspeed(stage = 3)` with prefix or prompt tuning: ZeRO-3 partitions the '
         'weights their virtual tokens are built from. Use stage 2 or a LoRA adapter.'),
    "FT0364": Code('distributed on MPS',
         'Several processes (or a sharding strategy) with `device = mps`: PyTorch has no '
         'process-group backend for Apple GPUs. Use CUDA (nccl) or the CPU (gloo).'),
    "FT0365": Code('sharding without CUDA',
         '`strategy = deepspeed(...)` or `fsdp(...)` with `device = cpu` or `mps`: DeepSpeed and '
         'accelerate\'s FSDP shard on CUDA GPUs only (on the CPU accelerate would run plain DDP '
         'without a word). Use `strategy = ddp` there. With `device = auto` on a machine without '
         'a GPU, the step fails with the same message before any worker starts.'),
    "FT0366": Code('attention kernel cannot run here',
         '`attention = "flash_attention_2"` with `device = cpu` or `mps`, or with `precision = '
         'fp32`: FlashAttention 2 runs on CUDA GPUs in bf16 or fp16. Use `attention = "sdpa"`.'),
    "FT0400": Code('search space is not allowed here',
         '`search(...)` stands for the value of a numeric attribute of a train block (`lr = '
         'search(loguniform(1e-5, 1e-3))`) or of an argument of its method (`lora(r = '
         'search(choice([8, 16])))`). A string, a name, a list, or a block other than train '
         'cannot be searched: sweep it (`sweep [...]`) instead.'),
    "FT0401": Code('bad search space',
         'The space inside `search(...)` is one of loguniform(low, high), uniform(low, high) and '
         'choice([...]), with low < high (low > 0 for loguniform) and each value valid for the '
         'attribute.'),
    "FT0402": Code('search without its settings',
         'A train block with `search(...)` needs a `search { trials = N, objective = min loss on '
         '<dataset> }` sub-block (and the sub-block needs a `search(...)` to search). `trials` '
         'must be at least 1.'),
    "FT0403": Code('search combined with a sweep or select',
         'A block is either searched (search(...)) or swept (`sweep [...]` with `select = ...`): '
         'the search keeps its own winner.'),
    "FT0404": Code('pruning without validation data',
         '`pruner = median` stops a trial whose validation losses are worse than the median of '
         'earlier trials at the same step; it needs `eval_data` (and `eval_steps`) in the train '
         'block.'),
    "FT0405": Code('search with distributed',
         'The trials of a searched train block run one after another, each in one process: '
         '`distributed { ... }` cannot be combined with `search { ... }` (yet).'),
    "FT0410": Code('`trainable` with an adapter',
         '`trainable = ...` chooses which weights a full fine-tune updates; an adapter method '
         'trains its adapter. For whole modules beside a LoRA adapter use '
         '`lora(modules_to_save = ["embed_tokens", "lm_head"])`.'),
    "FT0411": Code('`trainable` selects nothing',
         '`layers(a, b)` selects the blocks a <= i < b, so b must be greater than a; an empty '
         'pattern list freezes every weight.'),
    "FT0420": Code('judge_pairs rubric without its slots',
         "A judge_pairs rubric must show the judge the request and both candidates: {prompt}, {a} "
         "and {b}. Whether each answer is one token of the judge's vocabulary is checked when the "
         "judge is loaded (the step fails naming the answer)."),
    "FT0421": Code('judge_pairs answers',
         'A pairwise judge answers with exactly two distinct, non-empty answers (default ["A", "B"]); '
         'the first means candidate {a} is better.'),
    "FT0422": Code('identical candidates',
         'judge_pairs without a `rival` samples the policy twice; with `temperature = 0` (greedy) '
         'both samples are the same text, so no pair would have a preference.'),
    "FT0423": Code('rubric for a reward-model judge',
         'A judge that is a reward model (a train block with method = reward_model) scores each '
         'candidate on its own: `rubric` and `answers` are for a causal-LM judge only.'),
    "FT0424": Code('critique principles',
         'A critique block takes its principles either as `principles = [...]` or as '
         '`principles_file = "..."` (one per non-empty line), exactly one of them, and none empty.'),
    "FT0425": Code('critique prompt without its slots',
         'critique_prompt must fill in {prompt}, {response} and {principles}; revision_prompt '
         '{prompt}, {response} and {critique}: otherwise the model does not see what it revises.'),
    "FT0380": Code('unknown cache setting',
         'A `cache { ... }` block holds only `remote = "URL"` (a folder, s3://..., any fsspec URL).'),
    "FT0381": Code('bad cache setting',
         'The `remote` of a `cache` block must be a non-empty string, and a file has at most one '
         '`cache` block.'),
    "FT0201": Code('step failed',
         "A step failed while running. Its own message says why; a Python error's "
         'traceback is written to .ft/logs/.'),
    "FT0202": Code('assertion failed', 'An eval `assert` was false after the eval ran.'),
}

LEVELS = ("error", "warning", "note", "help")


@dataclass(frozen=True)
class Label:
    span: Span
    message: str = ""
    primary: bool = True


@dataclass
class Diagnostic:
    code: str
    message: str
    labels: list[Label] = field(default_factory=list)
    level: str = "error"
    help: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def span(self) -> Span | None:
        return self.labels[0].span if self.labels else None

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "level": self.level,
            "message": self.message,
            "help": self.help,
            "notes": self.notes,
            "labels": [
                {"file": lb.span.file, "line": lb.span.line, "col": lb.span.col,
                 "end_line": lb.span.end_line, "end_col": lb.span.end_col,
                 "message": lb.message, "primary": lb.primary}
                for lb in self.labels
            ],
        }


class FtError(Exception):
    """Raised with every diagnostic found; callers print them all."""

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, str] | None = None) -> None:
        super().__init__("; ".join(d.message for d in diagnostics))
        self.diagnostics = diagnostics
        self.sources: dict[str, str] = sources or {}


_COLORS = {"error": "\033[1;31m", "warning": "\033[1;33m", "note": "\033[1;36m",
           "help": "\033[1;32m", "bold": "\033[1m", "blue": "\033[1;34m", "reset": "\033[0m"}


def render(diag: Diagnostic, sources: dict[str, str], color: bool = False) -> str:
    """rustc layout: header, `--> file:line:col`, each labelled line with a caret."""

    def c(name: str, text: str) -> str:
        return f"{_COLORS[name]}{text}{_COLORS['reset']}" if color else text

    head = f"{diag.level}[{diag.code}]" if diag.code else diag.level
    out = [c(diag.level, head) + c("bold", f": {diag.message}")]
    labels = diag.labels
    width = max((len(str(lb.span.line)) for lb in labels), default=1)
    pad = " " * width
    for i, lb in enumerate(labels):
        s = lb.span
        arrow = "-->" if i == 0 else ":::"
        out.append(f"{pad}{c('blue', arrow)} {s.file}:{s.line}:{s.col}")
        lines = source_lines(sources.get(s.file, ""))
        if 1 <= s.line <= len(lines):
            text = lines[s.line - 1]
            end = s.end_col if s.end_line == s.line else len(text) + 1
            shown, cells = _shown_line(text)
            start = sum(cells[:s.col - 1])
            n = max(1, sum(cells[s.col - 1:end - 1]))
            marker = ("^" if lb.primary else "-") * n
            out.append(f"{pad} {c('blue', '|')}")
            out.append(f"{c('blue', str(s.line).rjust(width))} {c('blue', '|')} {shown}")
            msg = f" {lb.message}" if lb.message else ""
            caret = " " * start + marker + msg
            out.append(f"{pad} {c('blue', '|')} " + c(diag.level if lb.primary else "blue", caret))
    if diag.help or diag.notes:
        out.append(f"{pad} {c('blue', '|')}")
    for note in diag.notes:
        out.append(f"{pad} {c('blue', '=')} note: {note}")
    if diag.help:
        out.append(f"{pad} {c('blue', '=')} {c('help', 'help')}: {diag.help}")
    return "\n".join(out)


_TAB = "    "  # a tab is shown as 4 spaces, as rustc does: the caret row can then match it


def _shown_line(text: str) -> tuple[str, list[int]]:
    """The source line as printed, and how many terminal cells each of its characters
    takes there: columns count characters, but a tab, a wide (CJK, emoji) or a combining
    character is not one cell, and a control character (a lone CR) would garble the
    terminal, so it is printed as U+FFFD."""
    import unicodedata

    shown, cells = [], []
    for ch in text:
        if ch == "\t":
            shown.append(_TAB)
            cells.append(len(_TAB))
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            shown.append("\ufffd")
            cells.append(1)
        elif unicodedata.combining(ch):
            shown.append(ch)
            cells.append(0)
        else:
            shown.append(ch)
            cells.append(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1)
    return "".join(shown), cells


def render_all(diags: list[Diagnostic], sources: dict[str, str], color: bool = False) -> str:
    parts = [render(d, sources, color) for d in diags]
    errors = sum(1 for d in diags if d.level == "error")
    warnings = sum(1 for d in diags if d.level == "warning")
    summary = []
    if errors:
        summary.append(f"{errors} error{'s' if errors != 1 else ''}")
    if warnings:
        summary.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    if summary:
        parts.append(" and ".join(summary) + " found")
    return "\n\n".join(parts)


def to_json(diags: list[Diagnostic]) -> str:
    return json.dumps([d.to_json() for d in diags], indent=1)


def did_you_mean(word: str, candidates: list[str] | tuple[str, ...] | set[str]) -> str | None:
    """The closest candidate, like rustc's suggestions; None when nothing is close."""
    import difflib

    best = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    if best:
        return best[0]
    low = {c.lower(): c for c in candidates}
    return low.get(word.lower())
