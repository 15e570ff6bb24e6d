"""Is an extracted answer equivalent to the gold? Fast string path, LRU cache, killable math-verify pool.

Order of checks for one (pred, gold) pair:

1. no answer / unusable gold / absurdly long answer -> not equivalent, no symbolic work;
2. the per-process LRU cache keyed by (pred, gold);
3. a fast path on normalised strings. It only says "equal" when the normalised texts are
   identical or both are the same plain rational number (integer, decimal, ``\\frac{a}{b}``,
   ``a/b``), and only says "not equal" where that is safe: two plain integers or fractions that
   differ, or a plain-number gold against a literal power tower / factorial whose size rules
   equality out (the classic sympy hang bait such as ``9^{9^{9^{9}}}``);
4. math-verify ``parse`` + ``verify`` (gold as guide) in a persistent pool of worker processes,
   with a hard wall-clock bound per item. A worker that overruns is killed and replaced; the item
   counts as not equivalent with ``timed_out=True``. Inside the worker, two guards run around
   math-verify: an answer holding a power or factorial of more than a million digits (while the
   gold does not) is refused before sympy sees it, and a math-verify "equal" between two plain
   numbers is re-checked at 50 digits (math-verify rounds to 6 decimals, so 1/2004! "equals"
   1/2006!); a ``%`` on one side is tried both as is and as a factor 1/100.

Why processes and not threads or ``signal.alarm``: verl calls reward functions from executor
threads, where ``signal.alarm`` cannot be used (the silent-zero bug of Math-Verify#50/#55 and
verl#3407), and an alarm does not interrupt big-integer work inside C anyway. Workers are forked
from a fork server of ours that imported math-verify once (see ``_pool._Pool`` for why not
``multiprocessing``), so a replacement for a killed worker is warm within milliseconds.

The time bound runs from the moment a caller gets a worker (it covers a replacement that is still
starting, and the work); waiting for a free worker when more callers than workers are active is
queueing, not work, and is not bounded by it.

Each process owns its pool, created lazily on first symbolic use; after ``fork`` the child notices
the PID change and builds its own. Pools shut down at interpreter exit without waiting on a busy
worker (it is killed). Counters for logging: :func:`grader_stats`.

>>> fast_verdict("1,000", "1000")
True
>>> fast_verdict("12", "13")
False
>>> fast_verdict("\\\\sqrt{4}", "2") is None   # needs the symbolic path
True
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from fractions import Fraction

from rftt_plugin.reward._pool import GraderUnavailable, _Pool
from rftt_plugin.reward.extract import GoldAnswer, normalize_gold

__all__ = [
    "GraderConfig",
    "GraderUnavailable",
    "Verdict",
    "check_equivalence",
    "check_equivalence_async",
    "configure",
    "fast_verdict",
    "get_config",
    "grader_health",
    "grader_stats",
    "is_equivalent",
    "record_event",
    "reset_grader_stats",
    "shutdown",
]

logger = logging.getLogger("rftt_plugin.reward")

# antlr4-python3-runtime versions that latex2sympy2_extended ships generated parsers for.
SUPPORTED_ANTLR = ("4.9.3", "4.11", "4.13.2")


@dataclass(frozen=True)
class GraderConfig:
    """Settings of this process's grader (see :func:`configure`; env vars give the defaults)."""

    workers: int = 2
    timeout_s: float = 5.0            # hard wall-clock bound per item, from getting a worker
    python: str | None = None         # interpreter for workers; default sys.executable
    memory_limit_mb: int | None = 4096  # RLIMIT_AS per worker: hang bait must not eat the machine
    startup_timeout_s: float = 60.0   # the fork server must import math-verify within this
    cache_size: int = 65536
    max_answer_chars: int = 2000      # longer answers are not parsed (no real answer is this long)


@dataclass(frozen=True)
class Verdict:
    """Outcome of one equivalence check.

    ``method`` says what decided it: ``"no_answer"``, ``"no_gold"``, ``"too_long"`` (answer text over
    ``max_answer_chars``), ``"cache"``, ``"fast_path"``, ``"symbolic"``, ``"too_large"`` (the answer
    holds a power/factorial of over a million digits and the gold does not), ``"timeout"`` or
    ``"error"`` (worker crashed / unavailable). A cached verdict keeps its ``timed_out`` flag.
    """

    equivalent: bool
    timed_out: bool = False
    method: str = "symbolic"
    parse_failed: bool = False


def _env_config() -> GraderConfig:
    cfg = GraderConfig()
    try:
        if os.environ.get("RFTT_GRADER_WORKERS"):
            cfg = replace(cfg, workers=max(1, int(os.environ["RFTT_GRADER_WORKERS"])))
        if os.environ.get("RFTT_GRADER_TIMEOUT_S"):
            cfg = replace(cfg, timeout_s=float(os.environ["RFTT_GRADER_TIMEOUT_S"]))
    except ValueError:
        logger.warning("ignoring malformed RFTT_GRADER_WORKERS / RFTT_GRADER_TIMEOUT_S")
    return cfg


# ----------------------------------------------------------------------------------------------
# Fast path (pure string work; no sympy)
# ----------------------------------------------------------------------------------------------

_SPACING_RE = re.compile(r"\\[,;:! ]|\\quad|\\qquad|\\displaystyle|\s+")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right)(?![A-Za-z])")
_FRAC_RE = re.compile(r"\\[dt]frac(?![A-Za-z])")
_DEGREE_RE = re.compile(r"\^\{?\\circ\}?$")
_WRAPPER_RE = re.compile(r"^\\(?:text|textbf|mathrm|mathbf|textup)\{([^{}]*)\}$")
_UNIT_RE = re.compile(r"\\(?:text|mbox|mathrm)\{[^{}]*\}$")
_EQUATION_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,2}=([^=<>]+)$")
_PERCENT_RE = re.compile(r"(?:\\%|%)$")
_MATH_THOUSANDS_RE = re.compile(r",\\!\s*(?=\d{3})")      # MATH writes 10,\!080
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")  # no space after the comma
_INT_RE = re.compile(r"^[+-]?\d+$")
_DECIMAL_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")
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


def _split_percent(s: str) -> tuple[str, bool]:
    s = s.strip()
    m = _PERCENT_RE.search(s)
    if m:
        return s[: m.start()].rstrip(), True
    return s, False


# Magnitude of a literal tower like 9^{9^{9^{9}}} or (10^{10})! without evaluating it.
_TOWER_TOKEN_RE = re.compile(r"\d+|[{}()^!]")
_TOWER_CHARS_RE = re.compile(r"^[\d{}()^!\s]+$")


def _tower_log10(s: str) -> float | None:
    """log10 of a literal built from positive integers, ``^``, ``!`` and brackets; None otherwise.

    Returns ``math.inf`` for values too large for a float log. Bases below 2 give None (1^huge = 1).

    >>> round(_tower_log10("10^{10}"))
    10
    >>> _tower_log10("9^{9^{9^{9}}}") == math.inf
    True
    >>> _tower_log10("x^2") is None
    True
    """
    if len(s) > 200 or not _TOWER_CHARS_RE.match(s) or ("^" not in s and "!" not in s):
        return None
    tokens = _TOWER_TOKEN_RE.findall(s)
    pos = 0

    def value_of(log10v: float) -> float:
        return math.inf if log10v > 300 else 10.0 ** log10v

    def atom() -> float | None:
        nonlocal pos
        if pos >= len(tokens):
            return None
        tok = tokens[pos]
        if tok.isdigit():
            pos += 1
            n = int(tok[:300]) if len(tok) <= 300 else None
            if n is None:
                return float(len(tok))
            return math.log10(n) if n > 0 else None
        if tok in "{(":
            closing = "}" if tok == "{" else ")"
            pos += 1
            inner = power()
            if inner is None or pos >= len(tokens) or tokens[pos] != closing:
                return None
            pos += 1
            return inner
        return None

    def postfix() -> float | None:
        nonlocal pos
        base = atom()
        while base is not None and pos < len(tokens) and tokens[pos] == "!":
            pos += 1
            n = value_of(base)
            if n == math.inf:
                return math.inf
            base = math.lgamma(n + 1) / math.log(10) if n >= 1 else 0.0
        return base

    def power() -> float | None:
        nonlocal pos
        base = postfix()
        if base is None or pos >= len(tokens) or tokens[pos] != "^":
            return base
        pos += 1
        exponent = power()
        if exponent is None or base < math.log10(2):
            return None
        return math.inf if exponent == math.inf else value_of(exponent) * base

    result = power()
    return result if pos == len(tokens) else None


def _scalar_verdict(p: str, g: str) -> bool | None | str:
    """Both canonical strings plain rationals: True/False/None (None: decimals differ). ``"n/a"`` else."""
    ip, ig = _as_int(p), _as_int(g)
    if ip is not None and ig is not None:
        return ip == ig
    rp, rg = _as_rational(p), _as_rational(g)
    if rp is None or rg is None:
        return "n/a"
    if rp[0] == rg[0]:
        return True
    if not (rp[1] or rg[1]):
        return False  # two exact rationals (integers, fractions) that differ
    return None  # a decimal that differs: math-verify applies its rounding rules (1/3 ~ 0.333333)


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
    exact = not any(dec for _, dec in vp + vg)
    if kind == "set":
        same = {v for v, _ in vp} == {v for v, _ in vg}
    else:
        same = len(vp) == len(vg) and all(a[0] == b[0] for a, b in zip(vp, vg))
    if same:
        return True
    return False if exact else None


def fast_verdict(pred: str, gold: str) -> bool | None:
    """Cheap decision without sympy, or None when only the symbolic path can tell.

    "Equal" when the canonical strings match or both are the same plain rational number (also
    after dropping a trailing ``\\text{unit}`` or an ``x =`` in the answer), the same set of
    rationals in any order, or the same tuple. "Not equal" only when it is certain: plain integers
    or fractions (no decimal point: math-verify would round decimals) that differ, such sets or
    tuples that differ, or a plain number gold against a literal tower/factorial with vastly more
    digits.

    >>> fast_verdict("\\\\dfrac{1}{2}", "\\\\frac{1}{2}")
    True
    >>> fast_verdict("9^{9^{9^{9}}}", "5")
    False
    >>> fast_verdict("0.5", "0.50")
    True
    >>> fast_verdict("\\\\frac{3}{2}", "1.5"), fast_verdict("3/2", "\\\\frac{2}{3}"), fast_verdict("0.33", "\\\\frac13")
    (True, False, None)
    >>> fast_verdict("x = 5", "5"), fast_verdict("18\\\\text{ dollars}", "18"), fast_verdict("84, 69", "69,84")
    (True, True, True)
    >>> fast_verdict("(2,1)", "(1,2)"), fast_verdict("1, 500", "1500"), fast_verdict("\\\\{1,2\\\\}", "1,2,3")
    (False, None, False)
    """
    p, g = _canon(pred), _canon(gold)
    if not p or not g:
        return None
    if p == g:
        return True
    candidates = [(p, g)]
    if "=" not in g:
        m = _EQUATION_RE.match(p)
        if m:
            candidates.append((m.group(1), g))  # "x=5" answers "5" (math-verify agrees)
    p_unitless, g_unitless = _UNIT_RE.sub("", p), _UNIT_RE.sub("", g)
    if (p_unitless, g_unitless) != (p, g) and p_unitless and g_unitless:
        candidates.append((p_unitless, g_unitless))  # "5\\text{ cm}" answers "5"
    for a, b in candidates:
        if a == b:
            return True
        for decide in (_scalar_verdict, _collection_verdict):
            verdict = decide(a, b)
            if verdict != "n/a":
                return verdict
    if _DECIMAL_RE.match(g) and len(g) <= 64:
        size = _tower_log10(p)
        if size is not None and size > 1e4:
            return False  # >10,000 digits cannot equal a number written with <= 64 characters
    return None


# ----------------------------------------------------------------------------------------------
# Counters and cache
# ----------------------------------------------------------------------------------------------

_STAT_KEYS = (
    "calls", "no_answer", "no_gold", "too_long", "too_large", "cache_hits", "fast_path_hits", "symbolic_calls",
    "timeouts", "parse_failures", "worker_errors", "worker_restarts", "worker_starts", "server_starts",
    "prm_missing",
)


class _Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_STAT_KEYS, 0)

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(_STAT_KEYS, 0)


class _LRU:
    """Thread-safe bounded LRU of verdicts."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        if self._size <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


# ----------------------------------------------------------------------------------------------
# Per-process state (fork-safe)
# ----------------------------------------------------------------------------------------------

class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.config = _env_config()
        self.stats = _Stats()
        self.cache = _LRU(self.config.cache_size)
        self.pool: _Pool | None = None
        self.executor = None  # ThreadPoolExecutor for the async API, made on first use


_state = _State()


def _reset_after_fork() -> None:
    # The child inherits the parent's pool object but not its worker processes (they are the
    # parent's children) nor a usable lock; start from scratch, keeping the configuration.
    global _state
    config = _state.config
    _state = _State()
    _state.config = config
    _state.cache = _LRU(config.cache_size)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _current_state() -> _State:
    if _state.pid != os.getpid():  # forked without register_at_fork (or from a C extension)
        _reset_after_fork()
    return _state


def _get_pool() -> _Pool:
    state = _current_state()
    pool = state.pool
    if pool is not None and pool.pid == os.getpid():
        return pool
    with state.lock:
        if state.pool is None or state.pool.pid != os.getpid():
            state.pool = _Pool(state.config, state.stats)
        return state.pool


def configure(**changes) -> GraderConfig:
    """Change this process's grader settings (fields of :class:`GraderConfig`).

    When a setting changes, the running pool (if any) is shut down (items in flight score as
    errors) and rebuilt lazily: call this at start-up, not while grading.

    >>> configure(timeout_s=5.0).timeout_s
    5.0
    """
    state = _current_state()
    with state.lock:
        new = replace(state.config, **changes)
        if new.workers < 1 or new.timeout_s <= 0:
            raise ValueError("grader needs workers >= 1 and timeout_s > 0")
        if new == state.config:
            return new
        pool, state.pool = state.pool, None
        state.config = new
        if new.cache_size != state.cache._size:  # noqa: SLF001
            state.cache = _LRU(new.cache_size)
    if pool is not None:
        pool.shutdown()
    return new


def get_config() -> GraderConfig:
    return _current_state().config


def shutdown() -> None:
    """Stop this process's workers now (they are restarted lazily if the grader is used again)."""
    state = _current_state()
    with state.lock:
        pool, state.pool = state.pool, None
        executor, state.executor = state.executor, None
    if pool is not None:
        pool.shutdown()
    if executor is not None:
        executor.shutdown(wait=False)


def _shutdown_at_exit() -> None:
    if _state.pid == os.getpid():
        shutdown()


atexit.register(_shutdown_at_exit)


def grader_stats() -> dict:
    """Counters of this process since start (or the last reset), plus cache size, for logging."""
    state = _current_state()
    out = state.stats.snapshot()
    out["cache_size"] = len(state.cache)
    return out


def record_event(name: str, n: int = 1) -> None:
    """Add to a counter of :func:`grader_stats` (used by the reward rules, e.g. ``prm_missing``)."""
    _current_state().stats.add(name, n)


def reset_grader_stats(clear_cache: bool = False) -> None:
    state = _current_state()
    state.stats.reset()
    if clear_cache:
        state.cache.clear()


# ----------------------------------------------------------------------------------------------
# Public checks
# ----------------------------------------------------------------------------------------------

def _as_gold(gold: GoldAnswer | str) -> GoldAnswer:
    return gold if isinstance(gold, GoldAnswer) else normalize_gold(gold)


def _precheck(pred: str | None, gold: GoldAnswer, state: _State):
    """Everything before the pool. Returns (verdict or None, key, pred, gold_text, flags)."""
    state.stats.add("calls")
    if pred is None or not pred.replace("\x00", "").strip():
        state.stats.add("no_answer")
        return Verdict(False, method="no_answer"), None, "", "", (False, False)
    if not gold.usable:
        state.stats.add("no_gold")
        return Verdict(False, method="no_gold"), None, "", "", (False, False)
    pred = pred.replace("\x00", "").strip()
    if len(pred) > state.config.max_answer_chars:
        state.stats.add("too_long")
        return Verdict(False, method="too_long"), None, "", "", (False, False)
    pred_text, pred_percent = _split_percent(pred)
    gold_text, gold_percent = _split_percent(gold.text)
    key = (pred, gold.text)
    cached = state.cache.get(key)
    if cached is not None:
        state.stats.add("cache_hits")
        return replace(cached, method="cache"), key, pred_text, gold_text, (pred_percent, gold_percent)
    fast = fast_verdict(pred_text, gold_text)
    if fast is False and pred_percent != gold_percent:
        fast = None  # "100%" vs "1": only the symbolic path applies the 1/100 factor
    if fast is not None:
        state.stats.add("fast_path_hits")
        verdict = Verdict(fast, method="fast_path")
        state.cache.put(key, verdict)
        return verdict, key, pred_text, gold_text, (pred_percent, gold_percent)
    return None, key, pred_text, gold_text, (pred_percent, gold_percent)


def _symbolic(key, pred_text: str, gold_text: str, flags: tuple[bool, bool], timeout_s: float | None,
              state: _State) -> Verdict:
    state.stats.add("symbolic_calls")
    bound = float(timeout_s) if timeout_s else state.config.timeout_s
    try:
        reply, timed_out = _get_pool().run(pred_text, gold_text, flags[0], flags[1], bound)
    except GraderUnavailable:
        state.stats.add("worker_errors")
        logger.error("math grader unavailable; scoring as not equivalent", exc_info=True)
        return Verdict(False, method="error")
    if timed_out:
        state.stats.add("timeouts")
        verdict = Verdict(False, timed_out=True, method="timeout")
    elif reply is None or reply.get("error"):
        state.stats.add("worker_errors")
        logger.warning("grader worker failed on an item (%s); scoring it as not equivalent",
                       "worker died" if reply is None else reply["error"])
        return Verdict(False, method="error")  # not cached: a crash may be transient
    elif reply.get("too_large"):
        state.stats.add("too_large")
        verdict = Verdict(False, method="too_large")
    else:
        parse_failed = not (reply.get("gold_parsed") and reply.get("pred_parsed"))
        if parse_failed:
            state.stats.add("parse_failures")
        verdict = Verdict(bool(reply["equal"]), method="symbolic", parse_failed=parse_failed)
    # Timeouts are cached too: a policy that found a hang-inducing answer would otherwise stall
    # every reward worker for the full bound on each repeat.
    state.cache.put(key, verdict)
    return verdict


def check_equivalence(pred: str | None, gold: GoldAnswer | str, *, timeout_s: float | None = None) -> Verdict:
    """Is the extracted answer ``pred`` equivalent to ``gold``? Blocking, thread-safe.

    ``gold`` is a :class:`GoldAnswer` or a raw ground truth (normalised with ``normalize_gold``).
    """
    state = _current_state()
    gold = _as_gold(gold)
    verdict, key, pred_text, gold_text, flags = _precheck(pred, gold, state)
    if verdict is not None:
        return verdict
    return _symbolic(key, pred_text, gold_text, flags, timeout_s, state)


def _get_executor(state: _State):
    from concurrent.futures import ThreadPoolExecutor

    with state.lock:
        if state.executor is None:
            # Threads only wait on worker pipes; a few more than workers keeps the queue fed.
            state.executor = ThreadPoolExecutor(max_workers=max(4, 2 * state.config.workers),
                                                thread_name_prefix="rftt-grader")
        return state.executor


async def check_equivalence_async(pred: str | None, gold: GoldAnswer | str, *,
                                  timeout_s: float | None = None) -> Verdict:
    """Async :func:`check_equivalence`: cheap checks inline, the symbolic wait in a thread."""
    state = _current_state()
    gold = _as_gold(gold)
    verdict, key, pred_text, gold_text, flags = _precheck(pred, gold, state)
    if verdict is not None:
        return verdict
    import asyncio

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_get_executor(state), _symbolic, key, pred_text, gold_text, flags,
                                      timeout_s, state)


def is_equivalent(pred: str | None, gold: GoldAnswer | str) -> bool:
    """Boolean shortcut of :func:`check_equivalence`.

    >>> is_equivalent(None, "5")
    False
    """
    return check_equivalence(pred, gold).equivalent


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def grader_health(selftest: bool = True) -> dict:
    """Versions and a live round trip through the worker pool, for ``rftt doctor``.

    ``ok`` is True when math-verify and latex2sympy2_extended are installed, the ANTLR runtime is
    one latex2sympy2_extended has a parser for (hydra-core pins 4.9.3, which works), and (with
    ``selftest``) a worker decided ``\\sqrt{2}/2 == 1/\\sqrt{2}`` true and ``\\sqrt{2} == 1.41`` false.
    """
    antlr = _dist_version("antlr4-python3-runtime")
    info: dict = {
        "math_verify": _dist_version("math-verify"),
        "latex2sympy2_extended": _dist_version("latex2sympy2_extended"),
        "antlr4_runtime": antlr,
        "antlr4_supported": bool(antlr) and any(antlr.startswith(v) for v in SUPPORTED_ANTLR),
        "sympy": _dist_version("sympy"),
        "workers": get_config().workers,
        "timeout_s": get_config().timeout_s,
    }
    ok = bool(info["math_verify"] and info["latex2sympy2_extended"] and info["antlr4_supported"])
    if selftest and ok:
        start = time.monotonic()
        try:
            yes = check_equivalence("\\frac{\\sqrt{2}}{2}", GoldAnswer(("\\frac{1}{\\sqrt{2}}",), "latex"))
            no = check_equivalence("\\sqrt{2}", GoldAnswer(("1.41",), "number"))
            passed = yes.equivalent and not no.equivalent and yes.method in ("symbolic", "cache")
            info["selftest"] = "ok" if passed else f"wrong verdicts: {yes}, {no}"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            passed = False
            info["selftest"] = f"{type(exc).__name__}: {exc}"
        info["selftest_s"] = round(time.monotonic() - start, 3)
        ok = ok and passed
    info["ok"] = ok
    return info
