"""Functional tokens: the eight tags, their grammar, and the tagged-response text format.

An RFTT response is a sequence of *steps*; each step is one functional tag pair around its text::

    <next_step>
    12 = 5 + 7, so the sum is 12.
    </next_step>
    <output>
    The answer is \\boxed{12}.
    </output>

This module is the contract the rest of the plugin codes against (design.md section 3). It is
pure Python: no torch or transformers import, so search, reward and data code can use it in any
process. The token ids of the tags in one tokenizer live in :mod:`rftt_plugin.tag_ids`.

Naming: the reference code spells the second tag ``analysis``; the design contract (and this
module) uses ``analyze``, as in the paper's abstract.

>>> steps = [Step(FunctionalTag.NEXT_STEP, "2 + 3 = 5"), Step(FunctionalTag.OUTPUT, r"\\boxed{5}")]
>>> text = render(steps)
>>> print(text, end="")
<next_step>
2 + 3 = 5
</next_step>
<output>
\\boxed{5}
</output>
>>> parse(text) == steps
True
>>> validate(text).ok
True
>>> final_answer_block(text)
'\\\\boxed{5}'
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterable, Mapping

__all__ = [
    "CLOSE_STRINGS", "DEFAULT_MAX_DEPTH", "GRAMMAR", "OPEN_STRINGS", "ROOT", "TAG_STRINGS", "TAGS",
    "FunctionalTag", "Problem", "Step", "TagFormatError", "ValidationReport", "allowed_next",
    "final_answer_block", "is_terminal", "looks_like_tag", "parse", "render", "render_step", "validate",
]


class FunctionalTag(str, enum.Enum):
    """One of the eight functional behaviours. Declaration order is the canonical order.

    >>> FunctionalTag.NEXT_STEP.open, FunctionalTag.NEXT_STEP.close
    ('<next_step>', '</next_step>')
    >>> FunctionalTag("verify") is FunctionalTag.VERIFY
    True
    >>> str(FunctionalTag.OUTPUT)
    'output'
    """

    CLARIFY = "clarify"
    ANALYZE = "analyze"
    SUBQUESTION = "subquestion"
    NEXT_STEP = "next_step"
    DIRECT_ANSWER = "direct_answer"
    VERIFY = "verify"
    REFINE = "refine"
    OUTPUT = "output"

    @property
    def open(self) -> str:
        """The opening tag string, e.g. ``<verify>``."""
        return f"<{self.value}>"

    @property
    def close(self) -> str:
        """The closing tag string, e.g. ``</verify>``."""
        return f"</{self.value}>"

    def __str__(self) -> str:  # the plain name, not "FunctionalTag.VERIFY", in messages and f-strings
        return self.value


TAGS: tuple[FunctionalTag, ...] = tuple(FunctionalTag)
OPEN_STRINGS: tuple[str, ...] = tuple(t.open for t in TAGS)
CLOSE_STRINGS: tuple[str, ...] = tuple(t.close for t in TAGS)
# The 16 strings in the order prepare-model adds them (8 opens, then 8 closes), so ids are predictable.
TAG_STRINGS: tuple[str, ...] = OPEN_STRINGS + CLOSE_STRINGS

ROOT = None  # GRAMMAR's key for "no step yet" (the question)
DEFAULT_MAX_DEPTH = 18  # both MCTS training scripts of the reference use 18 steps

_T = FunctionalTag
# design.md section 3. Value order = the reference's fallback order when the policy proposes none.
GRAMMAR: Mapping[FunctionalTag | None, tuple[FunctionalTag, ...]] = MappingProxyType({
    ROOT: (_T.CLARIFY, _T.ANALYZE, _T.SUBQUESTION, _T.NEXT_STEP),
    _T.CLARIFY: (_T.ANALYZE, _T.SUBQUESTION, _T.NEXT_STEP, _T.DIRECT_ANSWER),
    _T.ANALYZE: (_T.SUBQUESTION, _T.NEXT_STEP, _T.DIRECT_ANSWER),
    _T.SUBQUESTION: (_T.NEXT_STEP, _T.DIRECT_ANSWER),
    _T.NEXT_STEP: (_T.NEXT_STEP, _T.DIRECT_ANSWER, _T.SUBQUESTION, _T.VERIFY, _T.OUTPUT),
    _T.DIRECT_ANSWER: (_T.OUTPUT, _T.VERIFY),
    _T.VERIFY: (_T.NEXT_STEP, _T.REFINE, _T.DIRECT_ANSWER, _T.SUBQUESTION, _T.VERIFY, _T.OUTPUT),
    _T.REFINE: (_T.NEXT_STEP, _T.DIRECT_ANSWER, _T.OUTPUT, _T.SUBQUESTION, _T.VERIFY),
    _T.OUTPUT: (),
})
del _T


# --------------------------------------------------------------------------------------------
# Grammar
# --------------------------------------------------------------------------------------------

def allowed_next(prev: FunctionalTag | None, depth: int,
                 max_depth: int = DEFAULT_MAX_DEPTH) -> tuple[FunctionalTag, ...]:
    """Tags that may follow ``prev`` (``ROOT`` before the first step), in fallback order.

    ``depth`` is the number of steps so far (root = 0); nothing may follow once it reaches
    ``max_depth``, so a path has at most ``max_depth`` steps.

    >>> [t.value for t in allowed_next(ROOT, 0)]
    ['clarify', 'analyze', 'subquestion', 'next_step']
    >>> [t.value for t in allowed_next(FunctionalTag.DIRECT_ANSWER, 3)]
    ['output', 'verify']
    >>> allowed_next(FunctionalTag.OUTPUT, 2), allowed_next(FunctionalTag.VERIFY, 18)
    ((), ())
    """
    if prev is not None:
        prev = FunctionalTag(prev)
    if depth >= max_depth:
        return ()
    return GRAMMAR[prev]


def is_terminal(tag: FunctionalTag | None, depth: int, max_depth: int = DEFAULT_MAX_DEPTH) -> bool:
    """True when a node with ``tag`` at ``depth`` can have no child (output, or depth cap).

    >>> is_terminal(FunctionalTag.OUTPUT, 1), is_terminal(FunctionalTag.NEXT_STEP, 17)
    (True, False)
    >>> is_terminal(FunctionalTag.NEXT_STEP, 18)
    True
    """
    return not allowed_next(tag, depth, max_depth)


# --------------------------------------------------------------------------------------------
# Steps and rendering
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One functional step. ``tag`` also accepts the plain name (``Step("verify", ...)``).

    >>> Step("verify", "ok").tag is FunctionalTag.VERIFY
    True
    """

    tag: FunctionalTag
    text: str

    def __post_init__(self) -> None:
        # Coerce so that Step("verify", ...) and Step(FunctionalTag.VERIFY, ...) are the same value.
        object.__setattr__(self, "tag", FunctionalTag(self.tag))


def render_step(step: Step) -> str:
    """Render one step in the reference format: ``<tag>\\n`` + stripped text + ``\\n</tag>\\n``.

    >>> render_step(Step(FunctionalTag.VERIFY, "  7 * 6 = 42 holds.  "))
    '<verify>\\n7 * 6 = 42 holds.\\n</verify>\\n'
    """
    return f"{step.tag.open}\n{step.text.strip()}\n{step.tag.close}\n"


def render(steps: Iterable[Step]) -> str:
    """Concatenate rendered steps (no separator).

    Unlike the reference code, which silently drops steps with empty text, empty steps are kept
    (``<tag>\\n\\n</tag>\\n``): the tag itself was a decision of the policy, and dropping it would
    make the rendered response disagree with the sampled token ids.

    >>> render([Step("clarify", ""), Step("output", "5")])
    '<clarify>\\n\\n</clarify>\\n<output>\\n5\\n</output>\\n'
    >>> render([])
    ''
    """
    return "".join(render_step(s) for s in steps)


# --------------------------------------------------------------------------------------------
# Scanning (shared by parse and validate)
# --------------------------------------------------------------------------------------------

class TagFormatError(ValueError):
    """Malformed tagged text. ``position`` is a character (code point) index into the text.

    >>> try:
    ...     parse("<verify>\\nno end")
    ... except TagFormatError as e:
    ...     print(e.code, e.position)
    unclosed 0
    """

    def __init__(self, message: str, position: int, code: str = "format") -> None:
        super().__init__(f"{message} (at character {position})")
        self.message = message
        self.position = position
        self.code = code


@dataclass
class Problem:
    """One finding of :func:`validate`; ``position`` is a character index into the text."""

    code: str
    message: str
    position: int


# Codes reported by the scanner (the text is not a clean sequence of steps). parse() raises on these;
# the others (grammar, missing_output, too_deep, after_output, empty) are only validate()'s business.
FORMAT_CODES = frozenset({"unclosed", "partial_tag", "nested", "mismatched", "unexpected_close",
                          "text_outside", "unknown_tag"})

# Anything shaped like <name> or </name>. The name run cannot contain "<", so the backtracking on a
# failed match is bounded by the run after one "<": the whole scan stays linear in the text length.
_TAG_RE = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9_]*)>")
_BY_NAME = {t.value: t for t in TAGS}
_MIN_UNKNOWN_NAME = 3
_MAX_TAG_LEN = max(len(s) for s in TAG_STRINGS)


def looks_like_tag(name: str) -> bool:
    """The rule for *unknown* tags: is ``<name>`` / ``</name>`` tag-like rather than math?

    A name is tag-like when it starts with a letter, has only letters, digits and underscores,
    and is at least 3 characters long. So ``<think>`` and ``</answer>`` are flagged, while
    ``a<b>c``, ``x<n>``, ``<br>`` and anything with spaces or operators (``a < b > c``,
    ``<x+1>``) are ordinary text. Known tags are case-sensitive: ``<Verify>`` is unknown.

    >>> looks_like_tag("think"), looks_like_tag("b"), looks_like_tag("x+1")
    (True, False, False)
    """
    return (len(name) >= _MIN_UNKNOWN_NAME and name[0].isascii() and name[0].isalpha()
            and all(c.isascii() and (c.isalnum() or c == "_") for c in name))


@dataclass
class _Scan:
    steps: list[Step] = field(default_factory=list)
    opened: list[tuple[FunctionalTag, int]] = field(default_factory=list)  # every step opened, in order
    problems: list[Problem] = field(default_factory=list)
    partial: Step | None = None
    truncated: bool = False


def _partial_tail(text: str) -> int | None:
    """Start of a cut-off tag at the very end (``...</outp``), or None.

    >>> _partial_tail("abc\\n</outp"), _partial_tail("a < b"), _partial_tail("<output>")
    (4, None, None)
    """
    start = text.rfind("<", max(0, len(text) - _MAX_TAG_LEN))
    if start < 0:
        return None
    tail = text[start:]
    return start if any(len(tail) < len(s) and s.startswith(tail) for s in TAG_STRINGS) else None


def _check_outside(text: str, start: int, end: int, problems: list[Problem]) -> None:
    # Whitespace between steps is fine; anything else outside a step is reported once per gap.
    chunk = text[start:end]
    stripped = chunk.lstrip()
    if stripped:
        pos = start + len(chunk) - len(stripped)
        preview = stripped[:30].rstrip()
        problems.append(Problem("text_outside", f"text outside any step: {preview!r}", pos))


def _scan(text: str) -> _Scan:
    """Split ``text`` into steps, recording format problems and recovering as it goes.

    Recovery: an opening tag inside a step closes that step implicitly; a mismatched closing tag
    closes the current step. Unknown tags are reported and otherwise treated as text.
    """
    out = _Scan()
    tail = _partial_tail(text)
    end = len(text) if tail is None else tail
    current: FunctionalTag | None = None
    open_pos = body_start = outside_from = 0
    for m in _TAG_RE.finditer(text, 0, end):
        closing, name, start = m.group(1) == "/", m.group(2), m.start()
        tag = _BY_NAME.get(name)
        if tag is None:
            if looks_like_tag(name):
                out.problems.append(Problem("unknown_tag", f"unknown tag {m.group(0)!r}", start))
                if current is None:  # consumed here, so it is not also reported as outside text
                    _check_outside(text, outside_from, start, out.problems)
                    outside_from = m.end()
            continue
        if current is None:
            _check_outside(text, outside_from, start, out.problems)
            if closing:
                out.problems.append(Problem("unexpected_close", f"{tag.close} without {tag.open}", start))
                outside_from = m.end()
                continue
            current, open_pos, body_start = tag, start, m.end()
            out.opened.append((tag, start))
            continue
        if not closing:
            out.problems.append(Problem(
                "nested", f"{tag.open} inside {current.open} (opened at {open_pos}); "
                f"close it with {current.close} first", start))
            out.steps.append(Step(current, text[body_start:start].strip()))
            current, open_pos, body_start = tag, start, m.end()
            out.opened.append((tag, start))
            continue
        if tag is not current:
            out.problems.append(Problem(
                "mismatched", f"{tag.close} closes {current.open} opened at {open_pos}", start))
        out.steps.append(Step(current, text[body_start:start].strip()))
        current, outside_from = None, m.end()
    if current is not None:
        out.problems.append(Problem("unclosed", f"{current.open} is never closed (text ends inside it)",
                                    open_pos))
        out.partial = Step(current, text[body_start:end].strip())
        out.truncated = True
    else:
        _check_outside(text, outside_from, end, out.problems)
    if tail is not None:
        out.problems.append(Problem("partial_tag", f"text ends in a cut-off tag {text[tail:]!r}", tail))
        out.truncated = True
    return out


def parse(text: str) -> list[Step]:
    """Inverse of :func:`render`: split a tagged response into steps (texts stripped).

    Strict: raises :class:`TagFormatError` at the first format problem (unclosed, nested or
    mismatched tags, a cut-off tag, text outside steps, unknown tags). Whitespace between
    steps is accepted. For a lenient reading of model output use ``validate(text).steps``.
    ``render`` does not escape, so a step text containing a tag string does not round-trip.

    >>> parse("<next_step>\\n 3 + 4 = 7 \\n</next_step>\\n\\n<output>\\n7\\n</output>")
    [Step(tag=<FunctionalTag.NEXT_STEP: 'next_step'>, text='3 + 4 = 7'), Step(tag=<FunctionalTag.OUTPUT: 'output'>, text='7')]
    >>> parse("")
    []
    >>> try:
    ...     parse("<verify>\\nx\\n<refine>\\ny\\n</refine>")
    ... except TagFormatError as e:
    ...     print(e)
    <refine> inside <verify> (opened at 0); close it with </verify> first (at character 11)
    """
    scan = _scan(text)
    if scan.problems:
        first = min(scan.problems, key=lambda p: p.position)
        raise TagFormatError(first.message, first.position, first.code)
    return scan.steps


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

@dataclass
class ValidationReport:
    """Result of :func:`validate`. ``problems`` are sorted by position; ``steps`` are the
    complete steps recovered (even when not ok); ``truncated`` means the text ends inside a step
    or inside a tag; ``partial`` is the unclosed last step, if any."""

    ok: bool
    problems: list[Problem]
    steps: list[Step]
    truncated: bool
    partial: Step | None = None

    @property
    def first(self) -> Problem | None:
        """The earliest problem, or None when the text is valid."""
        return self.problems[0] if self.problems else None

    @property
    def codes(self) -> list[str]:
        """Problem codes in position order (handy in tests and logs)."""
        return [p.code for p in self.problems]


def _grammar_problems(opened: list[tuple[FunctionalTag, int]], max_depth: int) -> list[Problem]:
    problems: list[Problem] = []
    prev: FunctionalTag | None = ROOT
    for depth, (tag, pos) in enumerate(opened):
        if prev is FunctionalTag.OUTPUT:
            problems.append(Problem("after_output", f"{tag.open} after {prev.open}, which is terminal", pos))
            break
        if depth >= max_depth:
            problems.append(Problem("too_deep", f"step {depth + 1} exceeds the depth cap of {max_depth} steps", pos))
            break
        allowed = GRAMMAR[prev]
        if tag not in allowed:
            problems.append(Problem("grammar", _grammar_message(prev, tag, allowed), pos))
        prev = tag
    return problems


def _grammar_message(prev: FunctionalTag | None, tag: FunctionalTag, allowed: tuple) -> str:
    names = ", ".join(t.value for t in allowed)
    if tag is FunctionalTag.CLARIFY:
        why = "clarify may only be the first step"
    elif tag is FunctionalTag.REFINE:
        why = "refine may only follow verify"
    elif prev is ROOT:
        why = f"a response cannot start with {tag.open}"
    else:
        why = f"{tag.open} may not follow {prev.open}"
    return f"{why} (allowed here: {names})"


def validate(text: str, max_depth: int = DEFAULT_MAX_DEPTH, require_output: bool = True) -> ValidationReport:
    """Check a tagged response against the format and the grammar. Never raises.

    Codes: ``empty``, ``unclosed``, ``partial_tag``, ``nested``, ``mismatched``,
    ``unexpected_close``, ``text_outside``, ``unknown_tag`` (rule: :func:`looks_like_tag`),
    ``grammar`` (GRAMMAR: clarify only first, refine only after verify, ...), ``after_output``,
    ``too_deep`` (more than ``max_depth`` steps) and ``missing_output`` (at ``len(text)``;
    skipped with ``require_output=False``, e.g. for partial paths during search). Positions are
    character indices (code points, so unicode text is indexed as Python strings are).

    >>> validate("<analyze>\\nplan\\n</analyze>\\n<direct_answer>\\n2+2=4\\n</direct_answer>\\n"
    ...          "<output>\\n4\\n</output>\\n").ok
    True
    >>> r = validate("<verify>\\ncheck\\n</verify>\\n<output>\\n4\\n</output>\\n")
    >>> r.ok, r.first.code, r.first.position
    (False, 'grammar', 0)
    >>> validate("<next_step>\\nx\\n</next_step>\\n<ref").codes
    ['partial_tag', 'missing_output']
    >>> validate("The answer: <think>4</think>").codes
    ['text_outside', 'unknown_tag', 'text_outside', 'unknown_tag', 'missing_output']
    >>> validate("Is a<b>c true?", require_output=False).codes
    ['text_outside']
    >>> validate("   ").codes
    ['empty']
    """
    if not text.strip():
        return ValidationReport(False, [Problem("empty", "empty response", 0)], [], False)
    scan = _scan(text)
    problems = scan.problems + _grammar_problems(scan.opened, max_depth)
    if require_output and not any(tag is FunctionalTag.OUTPUT for tag, _ in scan.opened):
        problems.append(Problem("missing_output", "no <output> step", len(text)))
    problems.sort(key=lambda p: p.position)  # stable: scanner order is kept at equal positions
    return ValidationReport(not problems, problems, scan.steps, scan.truncated, scan.partial)


def final_answer_block(text: str) -> str | None:
    """Stripped text of the LAST ``<output>`` block, or None when there is none.

    Tolerates a truncated response: when the last ``<output>`` is never closed, the text up to
    the end is returned (minus a cut-off closing tag such as ``</outp``). The rest of the
    response need not be valid; only the last ``<output>`` counts, as in the reference.

    >>> final_answer_block("<output>\\n1\\n</output>\\n<output>\\n\\\\boxed{2}\\n</output>\\n")
    '\\\\boxed{2}'
    >>> final_answer_block("<next_step>\\nx\\n</next_step>\\n<output>\\nSo 7\\n</out")
    'So 7'
    >>> final_answer_block("<direct_answer>\\n\\\\boxed{3}\\n</direct_answer>") is None
    True
    """
    open_tag, close_tag = FunctionalTag.OUTPUT.open, FunctionalTag.OUTPUT.close
    start = text.rfind(open_tag)
    if start < 0:
        return None
    body_start = start + len(open_tag)
    end = text.find(close_tag, body_start)
    if end < 0:
        end = len(text)
        tail = _partial_tail(text)
        if tail is not None and tail >= body_start:
            end = tail
    return text[body_start:end].strip()
