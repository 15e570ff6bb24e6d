"""Answer extraction from responses and normalisation of gold answers. Pure, no sympy.

The RFTT protocol grades only the final ``<output>`` step: the answer is the last ``\\boxed{...}``
(or ``\\fbox{...}`` / ``\\boxed 5``) inside the last ``<output>`` block; a response without any
``<output>`` block falls back to the last box in the whole text. No box, an empty box or a box
whose braces never close means *no answer*, which is never equivalent to anything.

Everything here is linear in the input length: braces are matched with a single stack pass, so a
response made of 100,000 unclosed ``\\boxed{`` costs the same as a normal one.

>>> extract_answer("<next_step>\\n2+2\\n</next_step>\\n<output>\\nSo \\\\boxed{4}.\\n</output>").answer
'4'
>>> extract_answer("first \\\\boxed{1} then \\\\boxed{\\\\frac{1}{2}}").answer
'\\\\frac{1}{2}'
>>> extract_answer("no box here").answer is None
True
>>> normalize_gold("She pays 2 * 600 = 1,200.\\n#### 1,200", "openai/gsm8k").text
'1200'
>>> normalize_gold(27.0, "amc23").text
'27'
>>> normalize_gold(["$69$,$84$"], "olympiadbench").items
('69', '84')
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass

__all__ = [
    "Extraction",
    "GoldAnswer",
    "boxed_contents",
    "extract_answer",
    "last_boxed",
    "match_braces",
    "normalize_gold",
]

# \boxed or \fbox not followed by a letter (so \boxedx is not a box).
_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# After "\boxed " without a brace: the answer runs to the next whitespace or "$" (Hendrycks style).
_BARE_BOX_RE = re.compile(r"\s+([^\s$]+)")
_OUTPUT_OPEN = "<output>"
_OUTPUT_CLOSE = "</output>"


@dataclass(frozen=True)
class Extraction:
    """What a response answered.

    ``answer`` is the last complete box of the answer region (stripped), ``None`` when there is none
    (or it is empty). ``boxes`` are all complete boxes of that region in order (used when the gold has
    several items and the response boxed them separately). ``region`` is ``"output"`` when an
    ``<output>`` block was found (closed or a truncated trailing one), else ``"whole"``.
    """

    answer: str | None
    boxes: tuple[str, ...]
    region: str

    @property
    def has_answer(self) -> bool:
        return self.answer is not None


@dataclass(frozen=True)
class GoldAnswer:
    """A normalised reference answer: one or more LaTeX items that must all be matched.

    ``items`` is empty when the ground truth could not be read (then nothing is ever equivalent).
    ``currency``: the ground truth wrote a ``\\$`` sign, which ``items`` leave out (``"\\$20"`` ->
    ``("20",)``); the grader reads it as the unit dollar, so ``20 \\text{ cents}`` is not equal.
    """

    items: tuple[str, ...]
    kind: str  # "latex" | "number" | "gsm8k" | "list" | "unusable"
    currency: bool = False

    @property
    def text(self) -> str:
        """The items as one LaTeX string (a comma-separated list reads as a set to math-verify)."""
        return ", ".join(self.items)

    @property
    def usable(self) -> bool:
        return bool(self.items) and all(item for item in self.items)


def match_braces(text: str) -> dict[int, int]:
    """Map the index of every closed ``{`` to the index of its ``}`` in one pass.

    Escaped braces (``\\{``, ``\\}``) are literal characters in LaTeX and are skipped; unmatched
    braces on either side are ignored.

    >>> match_braces("a{b{c}}{")
    {3: 5, 1: 6}
    >>> match_braces("\\\\{x\\\\}")
    {}
    """
    pairs: dict[int, int] = {}
    stack: list[int] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2  # the escaped character, whatever it is, is not structure
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def boxed_contents(text: str) -> list[str]:
    """Contents of every complete ``\\boxed{}`` / ``\\fbox{}`` / ``\\boxed x`` in order of appearance.

    A box whose brace never closes (a truncated response) is skipped, not guessed.

    >>> boxed_contents("\\\\boxed{a{b}} \\\\fbox{c} \\\\boxed 5. \\\\boxed{unclosed")
    ['a{b}', 'c', '5']
    """
    if "\\boxed" not in text and "\\fbox" not in text:
        return []
    pairs = match_braces(text)
    out: list[str] = []
    for m in _BOX_RE.finditer(text):
        j = m.end()
        # Skip spaces between the keyword and the brace ("\boxed {5}" is valid LaTeX).
        k = j
        while k < len(text) and text[k] in " \t\r\n":
            k += 1
        if k < len(text) and text[k] == "{":
            close = pairs.get(k)
            if close is not None:
                out.append(text[k + 1 : close])
            continue
        bare = _BARE_BOX_RE.match(text, j)
        if bare is not None and bare.start(1) == k:
            out.append(bare.group(1).rstrip(".,;"))
    return out


def last_boxed(text: str) -> str | None:
    """The last complete box of ``text``, stripped; ``None`` if there is none or it is empty.

    >>> last_boxed("\\\\boxed{1} and \\\\boxed{ 2 }")
    '2'
    >>> last_boxed("\\\\boxed{}") is None
    True
    """
    boxes = boxed_contents(text)
    if not boxes:
        return None
    answer = boxes[-1].strip()
    return answer or None


def _output_region(text: str) -> str | None:
    """Text of the last ``<output>`` block, also an unclosed trailing one (via ``rftt_plugin.tokens``)."""
    if _OUTPUT_OPEN not in text:
        return None  # cheap early exit; also keeps plain responses independent of the tag grammar
    from rftt_plugin.tokens import final_answer_block

    return final_answer_block(text)


def extract_answer(response: str | None) -> Extraction:
    """Extract the answer a response gives under the RFTT protocol (see module docstring).

    Null bytes are dropped first: they carry no meaning and break some downstream parsers.

    >>> extract_answer("<direct_answer>\\\\boxed{3}</direct_answer><output>It is 3.</output>").answer is None
    True
    >>> extract_answer("<output>truncated \\\\boxed{7}").region
    'output'
    """
    if not isinstance(response, str) or not response:
        return Extraction(None, (), "whole")
    text = response.replace("\x00", "")
    region_text = _output_region(text)
    region = "output"
    if region_text is None:
        region_text, region = text, "whole"
    boxes = tuple(b.strip() for b in boxed_contents(region_text))
    answer = boxes[-1] if boxes and boxes[-1] else None
    return Extraction(answer, boxes, region)


# ----------------------------------------------------------------------------------------------
# Gold answers
# ----------------------------------------------------------------------------------------------

_GSM8K_MARK = "####"
_PLAIN_NUMBER_RE = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?$")
_INT_FLOAT_RE = re.compile(r"^([+-]?\d+)\.0+$")
_DOLLAR_SEGMENT_RE = re.compile(r"\$([^$]*)\$")


def _strip_math_delimiters(s: str) -> str:
    s = s.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            inner = s[len(left) : len(s) - len(right)]
            if left == "$" and "$" in inner:
                continue  # "$a$,$b$" is two segments, not one wrapped item
            return inner.strip()
    return s


def _normalise_number_text(s: str) -> str:
    """``"1,234"`` -> ``"1234"``, ``"27.0"`` -> ``"27"``, ``"025"`` -> ``"25"``; other text unchanged."""
    if _PLAIN_NUMBER_RE.match(s):
        s = s.replace(",", "").lstrip("+")
        m = _INT_FLOAT_RE.match(s)
        if m:
            s = m.group(1)
        if "." not in s:
            sign = "-" if s.startswith("-") else ""
            s = sign + (s.lstrip("-").lstrip("0") or "0")
    return s


def _split_items(s: str) -> list[str]:
    """Split an OlympiadBench-style ``"$a$,$b$"`` into items; anything else stays one item.

    Only splits when the text between ``$...$`` segments is nothing but commas and spaces, so
    ``"$f(x)=ax+b$, where $b$ is ..."`` stays a single (prose) item.
    """
    s = s.strip()
    if s.count("$") >= 4 and s.count("$") % 2 == 0:
        segments = _DOLLAR_SEGMENT_RE.findall(s)
        glue = _DOLLAR_SEGMENT_RE.sub("", s)
        if len(segments) >= 2 and not glue.replace(",", "").strip():
            return [seg.strip() for seg in segments]
    if s.count("$") % 2 == 1:
        s = s.replace("$", "")  # malformed delimiters in the source data ("$221,$8$"): drop them all
    return [_strip_math_delimiters(s)]


def _maybe_string_list(s: str) -> list | None:
    """A stringified list of strings (JSON or Python repr), else None.

    Lists of numbers are *not* accepted: ``"[-2,7]"`` is a closed interval in MATH, not two items.
    """
    if not (s.startswith("[") and s.endswith("]")):
        return None
    for loader in (json.loads, ast.literal_eval):
        try:
            value = loader(s)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return value
    return None


def _gold_from_number(x: float | int) -> GoldAnswer:
    if isinstance(x, bool) or (isinstance(x, float) and not math.isfinite(x)):
        return GoldAnswer((), "unusable")
    if isinstance(x, float) and x.is_integer():
        return GoldAnswer((str(int(x)),), "number")
    return GoldAnswer((repr(x) if isinstance(x, float) else str(x),), "number")


def normalize_gold(ground_truth: object, data_source: str | None = None) -> GoldAnswer:
    """Normalise a ground truth of any shipped benchmark into a :class:`GoldAnswer`.

    Accepted: MATH LaTeX strings (``$...$`` stripped; a full solution uses its last ``\\boxed{}``),
    GSM8K answers (text after the last ``####``, thousands separators removed; also a bare number),
    AIME/AMC numbers (``27.0`` or the float ``27.0`` -> ``"27"``; ``"025"`` -> ``"25"``), and
    OlympiadBench lists (a list/tuple/array, or a JSON/Python list string, of LaTeX strings; each
    ``"$a$,$b$"`` entry is split into items). Unreadable input gives ``kind="unusable"``.

    >>> normalize_gold("\\\\boxed{\\\\frac{1}{2}}").items
    ('\\\\frac{1}{2}',)
    >>> normalize_gold('["$(2,4)$"]').items
    ('(2,4)',)
    >>> normalize_gold("[-2,7]").items
    ('[-2,7]',)
    >>> normalize_gold(None).usable
    False
    >>> normalize_gold("\\\\$1,250").items
    ('1250',)
    """
    if ground_truth is None:
        return GoldAnswer((), "unusable")
    if hasattr(ground_truth, "tolist") and not isinstance(ground_truth, (str, bytes)):
        ground_truth = ground_truth.tolist()  # numpy arrays / scalars from verl's non_tensor_batch
    if isinstance(ground_truth, bytes):
        ground_truth = ground_truth.decode("utf-8", errors="replace")
    if isinstance(ground_truth, (int, float)):
        return _gold_from_number(ground_truth)
    if isinstance(ground_truth, (list, tuple)):
        items: list[str] = []
        for element in ground_truth:
            sub = normalize_gold(element, data_source)
            if not sub.usable:
                return GoldAnswer((), "unusable")
            items.extend(sub.items)
        return GoldAnswer(tuple(items), "list") if items else GoldAnswer((), "unusable")
    if not isinstance(ground_truth, str):
        return GoldAnswer((), "unusable")

    # "\$" is a currency sign, never a math delimiter: drop it before "$" pairs are counted
    # (and remember it: the sign is the answer's unit)
    currency = "\\$" in ground_truth
    s = ground_truth.replace("\x00", "").replace("\\$", "").strip()
    if not s:
        return GoldAnswer((), "unusable")
    listed = _maybe_string_list(s)
    if listed is not None:
        return normalize_gold(listed, data_source)
    if _GSM8K_MARK in s:
        tail = s.rsplit(_GSM8K_MARK, 1)[1].strip().replace("$", "").strip()
        tail = _normalise_number_text(tail)
        return GoldAnswer((tail,), "gsm8k") if tail else GoldAnswer((), "unusable")
    if "\\boxed" in s or "\\fbox" in s:
        boxed = last_boxed(s)
        if boxed is None:
            return GoldAnswer((), "unusable")
        s = boxed
    items = [_normalise_number_text(item) for item in _split_items(s)]
    items = [item for item in items if item]
    if not items:
        return GoldAnswer((), "unusable")
    is_number = len(items) == 1 and _PLAIN_NUMBER_RE.match(items[0]) is not None
    return GoldAnswer(tuple(items), "number" if is_number else "latex", currency=currency and len(items) == 1)
