"""Pure answer matching: notation clean-up, exact numbers and a sympy-free verdict.

No state, no processes, standard library only. :mod:`rftt_plugin.reward.equivalence` (the grader
service) calls :func:`clean_answer` on both sides and then :func:`fast_verdict`; only what this
module cannot decide goes to math-verify in a worker process.

What a careful human grader forgives, and this module therefore rewrites before comparing:

- currency signs: ``\\$18.50``, ``\\text{\\$}18.5``, ``USD 18.5`` are 18.5 *dollars* (the sign becomes
  the unit, so ``\\$20`` is not ``20 \\text{ cents}``; a dropped trailing zero is the same number);
- units, scale words and hedges are read for their meaning by :mod:`rftt_plugin.reward.quantity`:
  a unit on one side only is forgiven, two different units are not equal, ``3\\text{ thousand}``
  is 3000, and "5 or 6", "5 is not the answer" are never 5; letters glued to a number are symbols
  (``2x`` is not 2);
- a based numeral is equal only to the same digits in the same base (``101_2`` is not ``101``),
  and a tuple ``(1,2)`` is not the set ``\\{1,2\\}``;
- ``\\phantom{..}`` typesets nothing, so what it holds is not part of the answer;
- nested text macros around the whole answer: ``\\text{\\textbf{(C)}}`` is ``(C)``;
- repeating decimals: ``0.\\overline{3}``, ``0.1\\overline{6}``, ``0.\\dot{3}``, ``0.333\\ldots``
  are exact fractions (1/3, 1/6, ...);
- a scalar factored out of a tuple: ``2(1,2,3)`` is ``(2,4,6)`` (matrices:
  math-verify already multiplies ``c\\begin{pmatrix}..\\end{pmatrix}`` out);
- small power towers are evaluated exactly: ``2^{2^{2^{2^{2}}}}`` equals ``2^{65536}``.

And what it refuses: numbers are compared exactly. ``0.142857`` is not ``\\frac{1}{7}`` and
``0.33`` is not ``\\frac{1}{3}``; a decimal equals a fraction only when it is exactly that value
(``0.25`` and ``\\frac{1}{4}``).

>>> fast_verdict(clean_answer("\\\\$18.5"), clean_answer("18.50"))
True
>>> fast_verdict(clean_answer("0.\\\\overline{3}"), clean_answer("\\\\frac{1}{3}"))
True
>>> fast_verdict("0.142857", "\\\\frac{1}{7}")
False
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

from rftt_plugin.reward.quantity import prose_words, split_quantity, strip_phantoms

__all__ = ["Prepared", "clean_answer", "exact_int", "fast_verdict", "hedges", "prepare", "split_percent", "tower_log10"]

# ----------------------------------------------------------------------------------------------
# Notation clean-up (applied to both sides before any comparison)
# ----------------------------------------------------------------------------------------------

_TEXT_MACROS = r"(?:text|textbf|textit|textrm|textsf|textup|texttt|textnormal|mathrm|mathbf|mathit|mathsf|mbox|emph|hbox)"
_WHOLE_WRAP_RE = re.compile(r"^\\" + _TEXT_MACROS + r"\s*\{(.*)\}$", re.S)
_CURRENCY_RE = re.compile(r"\\text\{\s*\\\$\s*\}|\\textdollar(?![A-Za-z])|\\\$|\$|\\mathdollar(?![A-Za-z])|US\$|\bUSD\b")
_NUMBER = r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|[+-]?\.\d+"
_SIMPLE_NUMBER = r"(?:" + _NUMBER + r"|[+-]?\\[dt]?frac\{\d+\}\{\d+\})"
_OVERLINE_RE = re.compile(r"^([+-]?)(\d*)\.(\d*)\\(?:overline|bar)\{?(\d+)\}?$")
_DOT_RE = re.compile(r"^([+-]?)(\d*)\.(\d*)\\dot\{?(\d)\}?(?:(\d*)\\dot\{?(\d)\}?)?$")
_ELLIPSIS_RE = re.compile(r"^([+-]?)(\d*)\.(\d+)\s*(?:\\ldots|\\dots|\\cdots|\.\.\.|…)$")

_BRACED = r"\{(?:[^{}]|\{[^{}]*\})*\}"   # one level of nesting: \frac{1}{\sqrt{2}}
# (?![\d.]) keeps a run of digits one token: without it "(\d+)+" splits 24 digits 2^23 ways
# before failing (2.6 s, doubling per digit; issue 27)
_SCALAR = (r"[+-]?(?:\d+(?:\.\d+)?(?![\d.])|\\[dt]?frac" + _BRACED + _BRACED + r"|\\sqrt(?:\[\d+\])?" + _BRACED
           + r"|\\sqrt\d|\\pi|\s|\\cdot)+")
_MAX_TUPLE_CHARS = 400
_SCALED_TUPLE_RE = re.compile(r"^(" + _SCALAR + r")\s*(?:\\cdot|\\times)?\s*(?:\\left)?\(([^()]*)(?:\\right)?\)$")


def _strip_wrappers(s: str) -> str:
    """Nested text macros around the *whole* answer collapse to one: ``\\text{\\textbf{Evelyn}}``
    -> ``\\text{Evelyn}`` (kept as text, so math-verify does not read it as a product of letters);
    around a plain number they go entirely (``\\textbf{5}`` -> ``5``)."""
    inner, levels = s, 0
    for _ in range(8):
        m = _WHOLE_WRAP_RE.match(inner)
        if not m or not _balanced(m.group(1)):
            break
        inner, levels = m.group(1).strip(), levels + 1
    if levels == 0:
        return s
    if re.fullmatch(_SIMPLE_NUMBER, inner):
        return inner
    return s if levels == 1 else "\\text{" + inner + "}"


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += (ch == "{") - (ch == "}")
        if depth < 0:
            return False
    return depth == 0


def _repeating(sign: str, whole: str, fixed: str, period: str) -> str:
    """``whole.fixed(period)(period)...`` as a reduced ``\\frac{p}{q}`` (or an integer)."""
    whole_v = int(whole or "0")
    fixed_v = Fraction(int(fixed), 10 ** len(fixed)) if fixed else Fraction(0)
    rep = Fraction(int(period), (10 ** len(period) - 1) * 10 ** len(fixed))
    value = whole_v + fixed_v + rep
    if sign == "-":
        value = -value
    return _fraction_text(value)


def _fraction_text(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def _repeating_decimal(s: str) -> str | None:
    """``0.\\overline{3}`` / ``0.\\dot{3}`` / ``0.333\\ldots`` -> ``\\frac{1}{3}``; None if not one."""
    compact = re.sub(r"\s+", "", s)
    m = _OVERLINE_RE.match(compact)
    if m:
        return _repeating(*m.groups())
    m = _DOT_RE.match(compact)
    if m:
        sign, whole, fixed, first, middle, last = m.groups()
        period = first + (middle or "") + (last or "") if last else first
        return _repeating(sign, whole, fixed, period)
    m = _ELLIPSIS_RE.match(s.strip())
    if m:
        sign, whole, digits = m.groups()
        # the shortest period that repeats at least twice at the end (a single digit at least 2x)
        for p in range(1, 7):
            if len(digits) >= 2 * p and digits[-p:] * 2 == digits[-2 * p:]:
                period = digits[-p:]
                fixed = digits[: len(digits) - 2 * p]
                while fixed and fixed[-p:] == period:
                    fixed = fixed[:-p]
                return _repeating(sign, whole, fixed, period)
    return None


def _split_top_level(s: str) -> list[str] | None:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts if len(parts) >= 2 and all(p.strip() for p in parts) else None


def _scaled_tuple(s: str) -> str | None:
    """``2(1,2,3)`` -> ``(2,4,6)``; ``\\frac{1}{\\sqrt{2}}(1,1)`` -> ``(\\frac{1}{\\sqrt{2}}\\cdot(1),...)``."""
    if len(s) > _MAX_TUPLE_CHARS:
        return None   # the pattern's blank runs backtrack quadratically; no scaled tuple is this long
    m = _SCALED_TUPLE_RE.match(s.strip())
    if not m:
        return None
    scalar, body = m.group(1).strip(), m.group(2)
    scalar = re.sub(r"\\cdot\s*$", "", scalar).strip()
    if not scalar or scalar in "+-":
        return None
    parts = _split_top_level(body)
    if parts is None:
        return None
    c = _as_rational(_canon(scalar))
    values = [_as_rational(_canon(p)) for p in parts]
    if c is not None and all(v is not None for v in values):
        return "(" + ",".join(_fraction_text(c[0] * v[0]) for v in values) + ")"
    return "(" + ",".join(f"{scalar}\\cdot\\left({p.strip()}\\right)" for p in parts) + ")"


def clean_answer(s: str) -> str:
    """Rewrite notation a human grader ignores (see the module docstring); other text unchanged.

    >>> clean_answer("\\\\text{\\\\textbf{Evelyn}}"), clean_answer("18 dollars"), clean_answer("\\\\$1,000")
    ('\\\\text{Evelyn}', '18 dollars', '1,000\\\\text{ dollars}')
    >>> clean_answer("0.1\\\\overline{6}"), clean_answer("2(1, -2, 3)"), clean_answer("3 or 4")
    ('\\\\frac{1}{6}', '(2,-4,6)', '3 or 4')
    """
    s = s.strip()
    s = _strip_wrappers(s)
    if _CURRENCY_RE.search(s):
        s = _strip_wrappers(_CURRENCY_RE.sub("", s).strip())
        if re.fullmatch(_SIMPLE_NUMBER, s):
            s += "\\text{ dollars}"   # the sign is the unit: \$20 is 20 dollars, not 20 cents
    rep = _repeating_decimal(s)
    if rep is not None:
        return rep
    scaled = _scaled_tuple(s)
    if scaled is not None:
        return scaled
    return s


# ----------------------------------------------------------------------------------------------
# Canonical strings and plain numbers
# ----------------------------------------------------------------------------------------------

_SPACING_RE = re.compile(r"\\[,;:! ]|\\quad|\\qquad|\\displaystyle|\s+")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right)(?![A-Za-z])")
_FRAC_RE = re.compile(r"\\[dt]frac(?![A-Za-z])")
_DEGREE_RE = re.compile(r"\^\{?\\circ\}?$")
_WRAPPER_RE = re.compile(r"^\\(?:text|textbf|mathrm|mathbf|textup)\{([^{}]*)\}$")
_EQUATION_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,2}=([^=<>]+)$")
_PERCENT_RE = re.compile(r"(?:\\%|%)$")
_MATH_THOUSANDS_RE = re.compile(r",\\!\s*(?=\d{3})")      # MATH writes 10,\!080
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")  # no space after the comma
_INT_RE = re.compile(r"^[+-]?\d+$")
_DECIMAL_RE = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")   # no "\d+\.?\d*": quadratic on long digit runs
_MAX_FAST_DIGITS = 4000  # int() refuses longer strings (CPython's int_max_str_digits)


def _canon(s: str) -> str:
    """Formatting-only normalisation: ``$``, thousands separators (``1,000``, ``10,\\!080``; but
    ``1, 500`` stays a list), spacing, ``\\left``/``\\right``, dfrac, a trailing period, a whole-string
    ``\\text{}`` wrapper, a trailing degree sign and a leading ``+``."""
    s = s.replace("$", "").strip()
    s = _MATH_THOUSANDS_RE.sub(",", s)
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    s = _SPACING_RE.sub("", s)
    s = _LEFT_RIGHT_RE.sub("", s)
    s = _FRAC_RE.sub(r"\\frac", s)
    s = s.rstrip(".")
    m = _WRAPPER_RE.match(s)
    if m:
        s = m.group(1)
    s = _DEGREE_RE.sub("", s)
    if s.startswith("+") and _DECIMAL_RE.match(s):
        s = s[1:]
    return s


def _as_int(s: str) -> int | None:
    if _INT_RE.match(s) and len(s) <= _MAX_FAST_DIGITS:
        return int(s)
    return None


_FRAC_BRACED_RE = re.compile(r"^([+-]?)\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}$")
_FRAC_SHORT_RE = re.compile(r"^([+-]?)\\frac(\d)(\d)$")          # \frac12
_SLASH_RE = re.compile(r"^([+-]?\d+)/([+-]?\d+)$")


def _as_rational(s: str) -> tuple[Fraction, bool] | None:
    """A canonical string that is a plain rational literal -> (value, written with a decimal point).

    >>> _as_rational("-\\\\frac{3}{6}")
    (Fraction(-1, 2), False)
    >>> _as_rational("0.25")
    (Fraction(1, 4), True)
    >>> _as_rational("\\\\frac{x}{2}") is None
    True
    """
    if len(s) > 64:
        return None
    if _INT_RE.match(s):
        return Fraction(int(s)), False
    if _DECIMAL_RE.match(s):
        return Fraction(s), True
    m = _FRAC_BRACED_RE.match(s) or _FRAC_SHORT_RE.match(s)
    if m:
        sign, num, den = m.groups()
    else:
        m = _SLASH_RE.match(s)
        if not m:
            return None
        sign, (num, den) = "", m.groups()
    if int(den) == 0:
        return None
    value = Fraction(int(num), int(den))
    return (-value if sign == "-" else value), False


def split_percent(s: str) -> tuple[str, bool]:
    """``"10\\%"`` -> ``("10", True)``; other text -> ``(text, False)``."""
    s = s.strip()
    m = _PERCENT_RE.search(s)
    if m:
        return s[: m.start()].rstrip(), True
    return s, False


# ----------------------------------------------------------------------------------------------
# Literal towers: size without evaluating, exact value when small
# ----------------------------------------------------------------------------------------------

_TOWER_TOKEN_RE = re.compile(r"\d+|[{}()^!]")
_TOWER_CHARS_RE = re.compile(r"^[\d{}()^!\s]+$")
MAX_EXACT_TOWER_DIGITS = 100_000   # 2^{65536} has 19,729 digits; evaluating it takes microseconds


def _tower_tokens(s: str) -> list[str] | None:
    if len(s) > 200 or not _TOWER_CHARS_RE.match(s) or ("^" not in s and "!" not in s):
        return None
    return _TOWER_TOKEN_RE.findall(s)


class _TowerParser:
    """Right-associative ``^``, postfix ``!``, brackets, positive integers. ``mode`` "log" gives
    log10 of the value (``math.inf`` when too large for a float log); "exact" gives the int."""

    def __init__(self, tokens: list[str], exact: bool) -> None:
        self.tokens, self.pos, self.exact = tokens, 0, exact

    def parse(self):
        value = self.power()
        return value if self.pos == len(self.tokens) else None

    def atom(self):
        if self.pos >= len(self.tokens):
            return None
        tok = self.tokens[self.pos]
        if tok.isdigit():
            self.pos += 1
            if self.exact:
                return int(tok) if len(tok) <= 300 else None
            n = int(tok[:300]) if len(tok) <= 300 else None
            if n is None:
                return float(len(tok))
            return math.log10(n) if n > 0 else None
        if tok in "{(":
            closing = "}" if tok == "{" else ")"
            self.pos += 1
            inner = self.power()
            if inner is None or self.pos >= len(self.tokens) or self.tokens[self.pos] != closing:
                return None
            self.pos += 1
            return inner
        return None

    def postfix(self):
        base = self.atom()
        while base is not None and self.pos < len(self.tokens) and self.tokens[self.pos] == "!":
            self.pos += 1
            if self.exact:
                if base > 20_000:
                    return None
                base = math.factorial(base)
                continue
            n = math.inf if base > 300 else 10.0 ** base
            if n == math.inf:
                return math.inf
            base = math.lgamma(n + 1) / math.log(10) if n >= 1 else 0.0
        return base

    def power(self):
        base = self.postfix()
        if base is None or self.pos >= len(self.tokens) or self.tokens[self.pos] != "^":
            return base
        self.pos += 1
        exponent = self.power()
        if exponent is None:
            return None
        if self.exact:
            if base in (0, 1):
                return base if exponent else 1
            if exponent * math.log10(base) > MAX_EXACT_TOWER_DIGITS:
                return None
            return base ** exponent
        if base < math.log10(2):
            return None
        if exponent == math.inf:
            return math.inf
        return math.inf if exponent > 300 else 10.0 ** exponent * base


def tower_log10(s: str) -> float | None:
    """log10 of a literal built from positive integers, ``^``, ``!`` and brackets; None otherwise.

    Returns ``math.inf`` for values too large for a float log. Bases below 2 give None (1^huge = 1).

    >>> round(tower_log10("10^{10}"))
    10
    >>> tower_log10("9^{9^{9^{9}}}") == math.inf
    True
    >>> tower_log10("x^2") is None
    True
    """
    tokens = _tower_tokens(s)
    return None if tokens is None else _TowerParser(tokens, exact=False).parse()


def exact_int(s: str) -> int | None:
    """A canonical integer literal or a literal tower with at most 100,000 digits, as an int.

    >>> exact_int("2^{2^{2^{2^{2}}}}") == exact_int("2^{65536}") == 2 ** 65536
    True
    >>> exact_int("5!"), exact_int("9^{9^{9^{9}}}"), exact_int("x")
    (120, None, None)
    """
    value = _as_int(s)
    if value is not None:
        return value
    tokens = _tower_tokens(s)
    if tokens is None:
        return None
    size = _TowerParser(tokens, exact=False).parse()
    if size is not None and size > MAX_EXACT_TOWER_DIGITS:
        return None
    try:
        return _TowerParser(tokens, exact=True).parse()
    except (OverflowError, ValueError, MemoryError):
        return None


# ----------------------------------------------------------------------------------------------
# The verdict
# ----------------------------------------------------------------------------------------------

def _scalar_verdict(p: str, g: str) -> bool | None | str:
    """Both canonical strings exact integers (towers included) or plain rationals: equal or not,
    by exact arithmetic. ``"n/a"`` when either is something else."""
    ip, ig = exact_int(p), exact_int(g)
    if ip is not None and ig is not None:
        return ip == ig
    rp, rg = _as_rational(p), _as_rational(g)
    if rp is None or rg is None:
        return "n/a"
    return rp[0] == rg[0]


def _elements(s: str) -> tuple[str, list] | None:
    """``"a,b"`` / ``"\\{a,b\\}"`` -> ("set", rationals); ``"(a,b)"`` -> ("tuple", rationals); else None."""
    kind = "set"
    if s.startswith("\\{") and s.endswith("\\}"):
        s = s[2:-2]
    elif s.startswith("(") and s.endswith(")"):
        kind, s = "tuple", s[1:-1]
    if "," not in s or any(c in s for c in "()[]{}") and "\\frac" not in s:
        return None
    values = [_as_rational(part) for part in s.split(",")]
    if any(v is None for v in values):
        return None
    return kind, values


def _collection_verdict(p: str, g: str) -> bool | None | str:
    """Sets (order-free) or tuples (ordered) of plain rationals; ``"n/a"`` when not both such."""
    ep, eg = _elements(p), _elements(g)
    if ep is None or eg is None or ep[0] != eg[0]:
        return "n/a"
    (kind, vp), (_, vg) = ep, eg
    if kind == "set":
        return {v for v, _ in vp} == {v for v, _ in vg}
    return len(vp) == len(vg) and all(a[0] == b[0] for a, b in zip(vp, vg))


# A numeral with a base subscript: 101_2, 101_{2}, (101)_2. The digits hold at least one decimal
# digit, so a subscripted letter (a_{12}, x_2) is never read as a numeral.
_BASED_RE = re.compile(r"^\(?([0-9A-Za-z]{1,64})\)?_\{?(\d{1,2})\}?$")
# LaTeX that hedges or qualifies an answer: "5 \lor 6", "\approx 5", "x \neq 5"
_HEDGE_COMMAND_RE = re.compile(r"\\(?:lor|vee|approx|simeq|sim|neq|ne|lessgtr|gtrless)(?![A-Za-z])")


def _numeral(s: str) -> tuple[str, int] | None:
    """(digits, base) of a based numeral or a plain non-negative integer (base 10); else None."""
    m = _BASED_RE.match(s)
    if m:
        digits, base = m.group(1).upper(), int(m.group(2))
        if not 2 <= base <= 36 or not any(c.isdigit() for c in digits):
            return None
        if any(int(c, 36) >= base for c in digits):
            return None
        return digits.lstrip("0") or "0", base
    if _INT_RE.match(s) and not s.startswith("-"):
        return s.lstrip("+").lstrip("0") or "0", 10
    return None


def _base_verdict(p: str, g: str) -> bool | str:
    """Either side written with a base subscript: equal only as the same digits in the same base
    (base 10 may be explicit). ``"n/a"`` when neither side is a based numeral."""
    if not (_BASED_RE.match(p) or _BASED_RE.match(g)):
        return "n/a"
    np_, ng = _numeral(p), _numeral(g)
    if np_ is None or ng is None:
        return "n/a"
    return np_ == ng


def _outer_bracket(s: str) -> str | None:
    """``"set"`` for ``\\{...\\}``, ``"tuple"`` for one ``(...)`` group holding a comma; else None."""
    if s.startswith("\\{") and s.endswith("\\}"):
        return "set"
    if s.startswith("(") and s.endswith(")") and "," in s:
        depth = 0
        for i, ch in enumerate(s):
            depth += (ch == "(") - (ch == ")")
            if depth == 0 and i < len(s) - 1:
                return None      # "(0,1)\cup(2,3)": the first bracket closes early
        return "tuple"
    return None


def _decimal_key(s: str) -> tuple[bool, str, str] | None:
    """A plain decimal of any length as (negative, integer digits, fraction digits), without
    converting it to a number: equal keys are equal values. None when ``s`` is not one."""
    if not _DECIMAL_RE.match(s):
        return None
    negative = s.startswith("-")
    whole, _, frac = s.lstrip("+-").partition(".")
    whole, frac = whole.lstrip("0"), frac.rstrip("0")
    return (negative and bool(whole or frac)), whole, frac


def hedges(s: str) -> set[str]:
    """Hedge words and hedging LaTeX commands in ``s`` (see :mod:`rftt_plugin.reward.quantity`)."""
    return prose_words(s) | set(_HEDGE_COMMAND_RE.findall(s))


def fast_verdict(pred: str, gold: str) -> bool | None:
    """Cheap decision without sympy, or None when only the symbolic path can tell.

    Expects texts already passed through :func:`clean_answer`. Refuses an answer that hedges
    where the gold does not, two different units, and a based numeral or a tuple/set that does
    not match the gold's kind. Decides by exact arithmetic when both sides are plain rational
    numbers (after units and scale words; decimals of any length by their digits) or integer
    towers (also after an ``x =`` in the answer), sets of rationals in any order, or tuples of
    rationals; "not equal" for a plain-number gold against a literal tower/factorial with vastly
    more digits. Everything else (radicals, expressions, intervals) goes to math-verify.

    >>> fast_verdict("\\\\dfrac{1}{2}", "\\\\frac{1}{2}")
    True
    >>> fast_verdict("9^{9^{9^{9}}}", "5")
    False
    >>> fast_verdict("0.5", "0.50")
    True
    >>> fast_verdict("\\\\frac{3}{2}", "1.5"), fast_verdict("3/2", "\\\\frac{2}{3}"), fast_verdict("0.33", "\\\\frac13")
    (True, False, False)
    >>> fast_verdict("x = 5", "5"), fast_verdict("18\\\\text{ dollars}", "18"), fast_verdict("84, 69", "69,84")
    (True, True, True)
    >>> fast_verdict("(2,1)", "(1,2)"), fast_verdict("1, 500", "1500"), fast_verdict("\\\\{1,2\\\\}", "1,2,3")
    (False, None, False)
    >>> fast_verdict("5 \\\\text{ m}", "5 \\\\text{ cm}"), fast_verdict("3\\\\text{ thousand}", "3000"), fast_verdict("5 or 6", "5")
    (False, True, False)
    >>> fast_verdict("101_2", "101"), fast_verdict("(1,2)", "\\\\{1,2\\\\}")
    (False, False)
    """
    if hedges(pred) - hedges(gold):
        return False              # "5 or 6", "5 is not the answer", "\approx 5": not an answer
    qp, qg = split_quantity(pred), split_quantity(gold)
    if qp.unit and qg.unit and qp.unit != qg.unit:
        return False              # 5 m is not 5 cm (a unit on one side only is forgiven)
    p, g = _canon(qp.core), _canon(qg.core)
    if not p or not g:
        return None
    if p == g:
        return True
    based = _base_verdict(p, g)
    if based != "n/a":
        return based
    kinds = {_outer_bracket(p), _outer_bracket(g)}
    if kinds == {"set", "tuple"}:
        return False              # (1,2) is ordered, {1,2} is not
    kp, kg = _decimal_key(p), _decimal_key(g)
    if kp is not None and kg is not None:
        return kp == kg           # exact at any length, no int() of 10,000 digits
    candidates = [(p, g)]
    if "=" not in g:
        m = _EQUATION_RE.match(p)
        if m:
            candidates.append((m.group(1), g))  # "x=5" answers "5" (math-verify agrees)
    for a, b in candidates:
        if a == b:
            return True
        for decide in (_scalar_verdict, _collection_verdict):
            verdict = decide(a, b)
            if verdict != "n/a":
                return verdict
    if _DECIMAL_RE.match(g) and len(g) <= 64:
        size = tower_log10(p)
        if size is not None and size > 1e4:
            return False  # >10,000 digits cannot equal a number written with <= 64 characters
    return None


@dataclass(frozen=True)
class Prepared:
    """One (pred, gold) pair after the pure steps: ``verdict`` when they decided it, else the two
    texts for math-verify (units and hedge-free scale words already read) and the percent flags."""

    verdict: bool | None
    pred: str
    gold: str
    pred_percent: bool = False
    gold_percent: bool = False


def prepare(pred: str, gold: str) -> Prepared:
    """Every pure step for one pair: phantoms, :func:`clean_answer`, a trailing percent sign,
    :func:`fast_verdict`; what is left for math-verify has its units removed (they were compared
    here, and math-verify would drop them on both sides without comparing).

    >>> prepare("\\\\phantom{5}", "5").verdict, prepare("5\\\\text{ cm}", "5").verdict
    (False, True)
    >>> p = prepare("\\\\sqrt{4}\\\\text{ cm}", "2\\\\text{ cm}"); (p.verdict, p.pred, p.gold)
    (None, '\\\\sqrt{4}', '2')
    """
    pred, gold = strip_phantoms(pred), strip_phantoms(gold)
    if not pred.strip():
        return Prepared(False, "", gold)
    pred_text, pred_percent = split_percent(clean_answer(pred))
    gold_text, gold_percent = split_percent(clean_answer(gold))
    fast = fast_verdict(pred_text, gold_text)
    if fast is False and pred_percent != gold_percent and not (hedges(pred_text) - hedges(gold_text)):
        fast = None  # "100%" vs "1": only the symbolic path applies the 1/100 factor
    if fast is not None:
        return Prepared(fast, pred_text, gold_text, pred_percent, gold_percent)
    return Prepared(None, split_quantity(pred_text).core, split_quantity(gold_text).core, pred_percent, gold_percent)
