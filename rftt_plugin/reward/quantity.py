"""Words in an answer, read for their meaning: units, scale words, hedges. Pure, standard library.

An answer is split into its mathematical *core* and what the words around it say
(:func:`split_quantity`):

- a **unit** after the core (``5\\text{ cm}``, ``12 square feet``, ``90^\\circ``, ``\\$20``) is kept
  as a canonical name (``centimeter``, ``foot^2``, ``degree``, ``dollar``): two answers with units
  are equal only when the units are the same unit; a unit on one side only is accepted (the
  question fixes the unit);
- a **scale word** (``thousand``, ``million``, ...) multiplies the core: ``3\\text{ thousand}`` is
  3000, never 3;
- any other word (``or``, ``not``, ``approximately``, ``correct``, ...) makes the answer
  **prose**: a hedge or injected text, which never equals a gold that does not say the same.

Letters glued to a number (``2x``, ``3ab``) are symbols, not units, unless they spell a known unit
abbreviation of two or more letters (``5cm``); a single letter after a space (``2 m``) is a
symbol too. Everything here is linear in the input: words are found by plain scans and regular
expressions without nested repetition.

>>> split_quantity("3 \\\\text{ thousand}")
Quantity(core='3000', unit=None, prose=False)
>>> split_quantity("5\\\\,\\\\text{cm}").unit, split_quantity("5 \\\\text{ centimeters}").unit
('centimeter', 'centimeter')
>>> split_quantity("5 \\\\text{ or } 6").prose, split_quantity("2x").core
(True, '2x')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["HEDGE_WORDS", "Quantity", "canonical_unit", "prose_words", "split_quantity", "strip_phantoms"]

SCALE_WORDS = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "trillion": 10**12,
               "dozen": 12}

# Words that make an answer a hedge, a negation, a guess or a claim about itself. An answer holding
# one is not an answer unless the gold says the same words.
HEDGE_WORDS = frozenset("""
or nor not no either neither maybe perhaps possibly probably likely approximately approx about around
roughly nearly almost circa than least most is isn't are was be wrong incorrect correct right true false
answer answers and unless except but if between none all any some could might should would this that
the verified verify check checked guess also only else otherwise final solution
""".split())

# unit aliases -> canonical unit (singular). Plural forms are found by stripping -s/-es.
_ALIASES = {
    "mm": "millimeter", "millimetre": "millimeter", "cm": "centimeter", "centimetre": "centimeter",
    "m": "meter", "metre": "meter", "km": "kilometer", "kilometre": "kilometer",
    "in": "inch", "inches": "inch", "ft": "foot", "feet": "foot", "yd": "yard", "mi": "mile",
    "s": "second", "sec": "second", "secs": "second", "min": "minute", "mins": "minute",
    "h": "hour", "hr": "hour", "hrs": "hour", "d": "day", "wk": "week", "yr": "year",
    "mg": "milligram", "g": "gram", "gm": "gram", "kg": "kilogram", "lb": "pound", "lbs": "pound",
    "oz": "ounce", "l": "liter", "litre": "liter", "ml": "milliliter", "millilitre": "milliliter",
    "deg": "degree", "degrees": "degree", "rad": "radian", "usd": "dollar", "cents": "cent",
    "mph": "mile per hour", "kph": "kilometer per hour", "sq": "square", "pennies": "penny",
}
# Unit abbreviations that may be written glued to a number ("5cm"); single letters never are.
_GLUED_UNITS = frozenset({"mm", "cm", "km", "ft", "yd", "mi", "kg", "mg", "lb", "lbs", "oz", "ml", "sec",
                          "min", "hr", "hrs", "mph", "kph"})

_TEXT_MACRO_RE = re.compile(
    r"\\(?:text|textbf|textit|textrm|textsf|textup|texttt|textnormal|mathrm|mbox|emph|hbox|operatorname)"
    r"\s*\{([^{}]*)\}")
_SPACING_RE = re.compile(r"\\[,;:! ]|\\quad|\\qquad|~")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_POWER_RE = re.compile(r"\^\s*\{?\s*([23])\s*\}?\s*\.?\s*$")
_CORE_RE = re.compile(
    r"^\s*([+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|[+-]?\.\d+|[+-]?\\[dt]?frac\{\d+\}\{\d+\})")
_WORD_RE = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")
_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_PHANTOM_RE = re.compile(r"\\[hv]?phantom\s*\{")
# a unit in a text macro at the end of any expression: "5\sqrt{2}\text{ cm}", "x \mbox{ m}^2"
# (no leading spacing in the pattern: a search would rescan a long run of it from every position)
_TRAILING_TEXT_RE = re.compile(
    r"\\(?:text|textrm|textnormal|mathrm|mbox)\s*\{([^{}]*)\}\s*(?:\^\s*\{?\s*([23])\s*\}?)?\s*\.?\s*$")
_SPACING_TAILS = ("\\quad", "\\,", "\\;", "\\:", "\\!", "\\ ")


@dataclass(frozen=True)
class Quantity:
    """``core``: the mathematical part (scale words already applied); ``unit``: canonical unit or
    None; ``prose``: the answer holds words that are neither a unit nor a scale."""

    core: str
    unit: str | None = None
    prose: bool = False


def strip_phantoms(s: str) -> str:
    """Drop ``\\phantom{..}`` / ``\\hphantom`` / ``\\vphantom``: they typeset nothing, so what they
    hold is not part of the answer (a box holding only a phantom is empty).

    >>> strip_phantoms("\\\\phantom{5}"), strip_phantoms("\\\\hphantom{x}7")
    ('', '7')
    """
    if "phantom" not in s:
        return s
    out, pos = [], 0
    for m in _PHANTOM_RE.finditer(s):
        if m.start() < pos:
            continue
        depth, i = 1, m.end()
        while i < len(s) and depth:
            depth += (s[i] == "{") - (s[i] == "}")
            i += 1
        out.append(s[pos:m.start()])
        pos = i
    out.append(s[pos:])
    return "".join(out).strip()


def prose_words(s: str) -> set[str]:
    """Lower-case hedge words written in ``s`` (in text macros or bare), LaTeX commands excluded.

    >>> sorted(prose_words("x = 5 \\\\text{ or } x = 6")), sorted(prose_words("\\\\sqrt{2} + xy"))
    (['or'], [])
    """
    words = {w.lower() for w in _WORD_RE.findall(_COMMAND_RE.sub(" ", s))}
    return words & HEDGE_WORDS


def canonical_unit(words: list[str], power: str | None = None) -> str | None:
    """``["square", "feet"]`` -> ``"foot^2"``; ``["cm"]`` with power 3 -> ``"centimeter^3"``.
    None when a word is not unit-like (a hedge, a scale word)."""
    exponent = power
    names: list[str] = []
    for raw in words:
        w = raw.lower().rstrip(".")
        if not w or w in HEDGE_WORDS or w in SCALE_WORDS:
            return None
        w = _ALIASES.get(w, w)
        if w in ("square", "cubic"):
            exponent = "2" if w == "square" else "3"
            continue
        if w not in _ALIASES.values() and len(w) > 3:
            if w.endswith("ies"):
                w = w[:-3] + "y"
            elif w.endswith(("ches", "shes", "sses", "xes")):
                w = w[:-2]
            elif w.endswith("s") and not w.endswith("ss"):
                w = w[:-1]
        names.append(w)
    if not names:
        return None
    unit = " ".join(names)
    return f"{unit}^{exponent}" if exponent else unit


def _scaled(core: str, factor: int) -> str:
    value = _rational(core)
    if value is None:
        return f"{factor}\\cdot({core})"
    value *= factor
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def _rational(core: str) -> Fraction | None:
    core = core.replace(",", "").strip()
    m = re.fullmatch(r"([+-]?)\\[dt]?frac\{(\d+)\}\{(\d+)\}", core)
    try:
        if m:
            sign, num, den = m.groups()
            value = Fraction(int(num), int(den))
            return -value if sign == "-" else value
        return Fraction(core)
    except (ValueError, ZeroDivisionError):
        return None


def _words_after_number(rest: str) -> tuple[list[str], str | None, bool] | None:
    """The words of a trailing phrase (text macros opened), its power, and whether any was in a
    text macro. None when the phrase is not just words (then the answer is not a quantity)."""
    in_text = False

    def opened(m):
        nonlocal in_text
        in_text = True
        return " " + m.group(1) + " "

    phrase = _TEXT_MACRO_RE.sub(opened, rest)
    phrase = _SPACING_RE.sub(" ", phrase)
    power = None
    m = _POWER_RE.search(phrase)
    if m:
        power, phrase = m.group(1), phrase[: m.start()]
    phrase = phrase.strip().rstrip(".").strip()
    words = phrase.replace("-", " ").split()
    if not words or not all(_WORD_RE.fullmatch(w.rstrip(".")) for w in words):
        return None
    return words, power, in_text


def split_quantity(s: str) -> Quantity:
    """Split ``s`` into its core and the meaning of the words after it (see the module doc).

    ``s`` is an answer after :func:`~rftt_plugin.reward.answer_match.clean_answer` (currency signs
    already turned into a trailing ``\\text{ dollars}``). Answers that are not "number + words"
    come back whole as the core, with ``prose`` set when they hold a hedge word.

    >>> split_quantity("12 square feet"), split_quantity("3 thousand dollars")
    (Quantity(core='12', unit='foot^2', prose=False), Quantity(core='3000', unit='dollar', prose=False))
    >>> split_quantity("2 m"), split_quantity("90^\\\\circ")
    (Quantity(core='2 m', unit=None, prose=False), Quantity(core='90', unit='degree', prose=False))
    >>> split_quantity("x^2 + 1")
    Quantity(core='x^2 + 1', unit=None, prose=False)
    """
    text = s.strip()
    whole = _TEXT_MACRO_RE.fullmatch(text)
    if whole and _CORE_RE.match(whole.group(1)):
        text = whole.group(1).strip()            # "\text{2 million}"
    degree = False
    if _DEGREE_RE.search(text):
        stripped = _DEGREE_RE.sub(" ", text).strip()
        if _CORE_RE.fullmatch(stripped) or _CORE_RE.match(stripped):
            text, degree = stripped, True
    m = _CORE_RE.match(text)
    if not m:
        return _trailing_unit(s.strip())
    core, rest = m.group(1).strip(), text[m.end():]
    if not rest.strip() or not _SPACING_RE.sub("", rest).strip():
        return Quantity(core, "degree" if degree else None, False)
    parsed = _words_after_number(rest)
    if parsed is None:
        return _trailing_unit(s.strip())
    words, power, in_text = parsed
    glued = not rest[:1].isspace() and not rest.startswith("\\")
    scale = 1
    while words and words[0].lower() in SCALE_WORDS:
        scale *= SCALE_WORDS[words.pop(0).lower()]
    if scale != 1:
        core = _scaled(core, scale)
        if not words:
            return Quantity(core, "degree" if degree else None, False)
    if any(w.lower().rstrip(".") in HEDGE_WORDS for w in words):
        return Quantity(s.strip(), None, True)
    if not in_text:
        # bare letters: "2x", "3ab", "2 m" are symbols; "5cm", "12 apples" are units
        first = words[0].lower()
        if glued and (len(words) > 1 or first not in _GLUED_UNITS):
            return Quantity(s.strip(), None, False)
        if not glued and len(words) == 1 and len(first) == 1:
            return Quantity(s.strip(), None, False)
    unit = canonical_unit(words, power)
    if unit is None:
        return Quantity(s.strip(), None, True)
    if degree:
        return Quantity(s.strip(), None, False)   # "90^\circ cm": leave it to the symbolic path
    return Quantity(core, unit, False)


def _trailing_unit(s: str) -> Quantity:
    """An expression followed by a unit in a text macro (``5\\sqrt{2}\\text{ cm}``): the unit is
    split off like a number's; anything else comes back whole."""
    prose = bool(prose_words(s))
    m = _TRAILING_TEXT_RE.search(s)
    if prose or not m or not m.start():
        return Quantity(s, None, prose)
    core = _rstrip_spacing(s[: m.start()])
    words = m.group(1).replace("-", " ").split()
    if not core or core.endswith(("=", "+", "-", "\\cdot", "\\times", "(", ",")) or not words \
            or not all(_WORD_RE.fullmatch(w.rstrip(".")) for w in words):
        return Quantity(s, None, prose)
    unit = canonical_unit(words, m.group(2))
    return Quantity(core, unit, False) if unit is not None else Quantity(s, None, prose)


def _rstrip_spacing(s: str) -> str:
    """``s`` without trailing blanks and spacing macros (``\\,``, ``\\quad``); one backward pass."""
    end = len(s)
    while end:
        if s[end - 1].isspace():
            end -= 1
            continue
        tail = next((t for t in _SPACING_TAILS if s.endswith(t, 0, end)), None)
        if tail is None:
            break
        end -= len(tail)
    return s[:end]
