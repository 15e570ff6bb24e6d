"""Body of a grader worker process: math-verify ``parse`` + ``verify`` on one (pred, gold) pair.

Runs in the pebble worker processes of :mod:`rftt_plugin.reward._pool`. Importing this module is
cheap; :func:`preload` imports math-verify (sympy, ANTLR), which the pool does once in the parent
just before it forks, so every worker and every replacement starts warm.

Timeouts are *not* handled here: math-verify's own ``signal.alarm`` timeouts are disabled and the
pool kills the whole process when an item overruns. That is the only bound that also stops work
stuck inside C code (big-integer arithmetic ignores Python signals until it returns).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys

# Numbers are compared exactly. math-verify compares after rounding to 6 decimals, so 1/2004!
# "equals" 1/2006! and 0.142857 "equals" 1/7 (Math-Verify#14). When both sides are plain numbers
# we take a second look: decimals become the exact rationals they spell, and the two values must
# agree to 1e-30 relative at 50 digits, i.e. be equal.
_EXACT_REL_TOL = 1e-30


def _set_parent_death_signal(parent_pid: int | None) -> None:
    """Linux: SIGKILL this worker when its parent goes, even if it is stuck in C code.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked us exits, not only the process. The
    pool therefore forks only from threads that live as long as the pool (see ``_pool``).
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except Exception:  # noqa: BLE001 - a missing libc only loses this safety net
            pass
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(0)  # the parent died before the death signal was armed


def init_worker(parent_pid: int, memory_limit_mb: int | None) -> None:
    """pebble initializer: die with the parent, cap memory, die at once on SIGTERM.

    pebble installs a Python SIGTERM handler, which cannot run while sympy is inside a long C
    call; the default action ends the process immediately, so a kill never waits on the work.
    """
    import signal

    _set_parent_death_signal(parent_pid)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _set_memory_limit(memory_limit_mb)
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # our timeouts are the process kill
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)


def _address_space_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _set_memory_limit(memory_limit_mb: int | None) -> None:
    """Cap the worker's *growth* (RLIMIT_AS = what the fork inherited + ``memory_limit_mb``): a
    worker forked from a large parent (torch, verl) already maps gigabytes it never touches."""
    if not memory_limit_mb:
        return
    try:
        import resource

        limit = _address_space_bytes() + int(memory_limit_mb) * 1024 * 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass


def _exact(expr):
    """Decimals (sympy Floats) replaced by the exact rationals they spell: 0.142857 -> 142857/10^6."""
    from sympy import Float, Rational

    floats = expr.atoms(Float)
    if not floats:
        return expr
    return expr.xreplace({f: Rational(str(f)) for f in floats})


def _numbers_really_equal(g, p) -> bool:
    """Second opinion on a math-verify "equal": two plain numbers (or tuples of them) must be
    exactly equal, decimals read as exact rationals."""
    from sympy import Basic, Tuple

    if isinstance(g, Tuple) and isinstance(p, Tuple):
        return len(g) == len(p) and all(_numbers_really_equal(a, b) for a, b in zip(g.args, p.args))
    if not (isinstance(g, Basic) and isinstance(p, Basic)):
        return True
    try:
        if not (g.is_number and p.is_number) or g.free_symbols or p.free_symbols:
            return True
        g, p = _exact(g), _exact(p)
        # mpmath floats have an unbounded exponent, so 1/2006! does not underflow to 0 here.
        diff = abs((g - p).evalf(50))
        scale = max(abs(g.evalf(50)), abs(p.evalf(50)))
        if not (diff.is_number and scale.is_number) or not (diff.is_finite and scale.is_finite):
            return True
        if scale == 0:
            return True
        return bool(diff <= _EXACT_REL_TOL * scale)
    except Exception:  # noqa: BLE001 - relations, sets, ... : keep math-verify's verdict
        return True


# Answers whose exact value needs more digits than this are not handed to sympy: evaluating them
# takes far longer than any time bound (9^{9^{9^{9}}}, (10^{10})!). No competition answer is that
# large unless the gold is too, and then the check runs normally (under the process kill).
MAX_EXACT_DIGITS = 1e6


def _log10_abs(expr) -> float | None:
    """log10 |value| of a numeric sympy tree without evaluating it; None if unknown or symbolic."""
    from sympy import Add, Float, Integer, Mul, Pow, Rational, factorial

    try:
        if isinstance(expr, Integer):
            n = abs(int(expr))
            return None if n == 0 else (n.bit_length() - 1) * 0.30103 if n.bit_length() > 900 else math.log10(n)
        if isinstance(expr, Rational):
            a, b = _log10_abs(Integer(expr.p)), _log10_abs(Integer(expr.q))
            return None if a is None or b is None else a - b
        if isinstance(expr, Float):
            return None if expr == 0 else math.log10(abs(float(expr)))
        if isinstance(expr, Pow):
            base, exponent = _log10_abs(expr.base), _value(expr.exp)
            return None if base is None or exponent is None else exponent * base
        if isinstance(expr, factorial):
            n = _value(expr.args[0])
            return None if n is None or n < 0 else math.lgamma(n + 1) / math.log(10) if n < 1e300 else math.inf
        if isinstance(expr, Mul):
            parts = [_log10_abs(a) for a in expr.args]
            return None if any(p is None for p in parts) else sum(parts)
        if isinstance(expr, Add):
            parts = [_log10_abs(a) for a in expr.args]
            known = [p for p in parts if p is not None]
            return max(known) if known else None  # an upper bound (cancellation only shrinks it)
    except (OverflowError, ValueError, TypeError):
        return math.inf
    return None


def _value(expr) -> float | None:
    """Approximate value of a small numeric tree (for exponents); +-inf when astronomically large."""
    from sympy import Integer, Rational

    if isinstance(expr, (Integer, Rational)) and abs(expr.p) < 10**300 and expr.q < 10**300:
        return float(expr)
    log = _log10_abs(expr)
    if log is None:
        return None
    sign = -1.0 if getattr(expr, "is_negative", False) else 1.0
    return sign * (10.0 ** log if log < 300 else math.inf)


def _exact_digits(expr) -> float:
    """Largest number of digits any power or factorial inside ``expr`` would need when evaluated."""
    from sympy import Basic, Pow, factorial, preorder_traversal

    if not isinstance(expr, Basic):
        return 0.0
    worst = 0.0
    for node in preorder_traversal(expr):
        if isinstance(node, (Pow, factorial)) and not node.free_symbols:
            log = _log10_abs(node)
            if log is not None:
                worst = max(worst, abs(log))
    return worst


@functools.lru_cache(maxsize=4096)
def _parse(answer: str) -> tuple:
    """math-verify's parse of one boxed answer, cached: in RL the same gold (and often the same
    answer) comes back for every sample of a prompt. Sympy objects are immutable, so sharing is safe."""
    from latex2sympy2_extended.latex2sympy2 import NormalizationConfig
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    # units=False: math-verify's unit removal deletes trailing letters from a list of "unit" words
    # on both sides without comparing them ("2ab" parses as 2, "5 m" equals "5 cm"). Units were
    # read for their meaning before the worker (rftt_plugin.reward.quantity) and removed.
    normalization = NormalizationConfig(basic_latex=True, units=False, malformed_operators=True, nits=True,
                                        boxed="all", equations=False)
    targets = (LatexExtractionConfig(boxed_match_priority=0, normalization_config=normalization),
               ExprExtractionConfig())
    return tuple(parse("\\boxed{" + answer + "}", targets, parsing_timeout=None))


def compare(pred: str, gold: str, pred_percent: bool = False, gold_percent: bool = False) -> dict:
    """Decide whether ``pred`` is equivalent to ``gold`` (both LaTeX answer strings, unboxed).

    Gold guides the comparison: ``verify(gold, pred)`` is asymmetric in math-verify (an equation in
    the gold such as ``k=n+1`` accepts ``n+1``). A ``%`` removed from one side by the caller is
    re-applied as a factor of 1/100, so ``10\\%`` matches both ``10`` and ``0.1``.
    """
    from math_verify import verify
    from sympy import Basic

    gold_parsed = _parse(gold)
    pred_parsed = _parse(pred)
    reply = {
        "equal": False,
        "gold_parsed": any(isinstance(x, Basic) for x in gold_parsed),
        "pred_parsed": any(isinstance(x, Basic) for x in pred_parsed),
    }
    if not gold_parsed or not pred_parsed:
        return reply
    pred_size = max(_exact_digits(x) for x in pred_parsed)
    if pred_size > MAX_EXACT_DIGITS and max(_exact_digits(x) for x in gold_parsed) <= MAX_EXACT_DIGITS:
        reply["too_large"] = True  # cannot equal a gold of ordinary size; sympy would hang on it
        return reply

    def scaled(items):
        return [x / 100 for x in items if isinstance(x, Basic) and getattr(x, "is_number", False)]

    golds, preds = list(gold_parsed), list(pred_parsed)
    if gold_percent and not pred_percent:
        golds += scaled(gold_parsed)  # gold "10%": the answer 0.1 is also right
    if pred_percent and not gold_percent:
        preds += scaled(pred_parsed)  # answer "10%" for the gold 0.1
    for g in golds:
        for p in preds:
            if verify(g, p, timeout_seconds=None) and _numbers_really_equal(g, p):
                reply["equal"] = True
                return reply
    return reply


def preload() -> None:
    """Import math-verify and run one comparison (ANTLR parser, sympy caches), so a process forked
    afterwards serves its first item warm."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    compare("\\frac{1}{2}", "0.5")


def compare_task(pred: str, gold: str, pred_percent: bool, gold_percent: bool, raw: bool = False) -> dict:
    """What the pool runs: :func:`compare` with errors turned into an ``error`` reply (one bad item
    must not look like a dead worker). ``raw``: the pair was too long to prepare in the caller's
    thread, so the pure steps run here, under the pool's time bound (``fast`` in the reply when
    they decided it)."""
    try:
        if raw:
            from rftt_plugin.reward.answer_match import prepare

            prepared = prepare(pred, gold)
            if prepared.verdict is not None:
                return {"equal": prepared.verdict, "gold_parsed": True, "pred_parsed": True, "fast": True}
            pred, gold = prepared.pred, prepared.gold
            pred_percent, gold_percent = prepared.pred_percent, prepared.gold_percent
        return compare(pred, gold, pred_percent, gold_percent)
    except MemoryError:
        return {"equal": False, "gold_parsed": False, "pred_parsed": False, "error": "MemoryError"}
    except Exception as exc:  # noqa: BLE001
        return {"equal": False, "gold_parsed": False, "pred_parsed": False,
                "error": f"{type(exc).__name__}: {str(exc)[:200]}"}


def ping() -> int:
    """Round trip used to start a pool and check it: the worker's pid."""
    return os.getpid()
