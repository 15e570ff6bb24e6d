"""Body of a grader worker process: math-verify ``parse`` + ``verify`` on one (pred, gold) pair.

Runs only in processes started by :mod:`rftt_plugin.reward.equivalence`: a fork server
(``python -m rftt_plugin.reward._worker --zygote FD``) that imports math-verify once and forks warm
workers on request, or, where fork is unavailable, one ``--fd FD`` interpreter per worker.
Importing this module is cheap; math-verify (sympy, ANTLR) is imported when a process starts.

Timeouts are *not* handled here: math-verify's own ``signal.alarm`` timeouts are disabled and the
parent kills the whole process when an item overruns. That is the only bound that also stops work
stuck inside C code (big-integer arithmetic ignores Python signals until it returns).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys

# Message protocol (parent -> worker): ``(task_id, pred, gold, pred_percent, gold_percent)``, or
# ``None`` to exit. Worker -> parent: ``("ready", pid)`` once, then ``(task_id, reply_dict)``.
READY = "ready"

# math-verify compares numbers after rounding to 6 decimals, so 1/2004! "equals" 1/2006! and
# 0.0000672 "equals" 0.0000673 (Math-Verify#14). When both sides are plain numbers we take a second
# look at 50 significant digits: two exact numbers (no decimal in either) must agree to 1e-30
# relative, i.e. be equal; when a decimal is involved, within 1e-4 relative (0.333333 = 1/3 stays).
_EXACT_REL_TOL = 1e-30
_DECIMAL_REL_TOL = 1e-4


def _set_parent_death_signal(parent_pid: int | None) -> None:
    """Linux: die with SIGKILL when the parent dies, even if stuck in C code (best effort)."""
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


def _set_memory_limit(memory_limit_mb: int | None) -> None:
    if not memory_limit_mb:
        return
    try:
        import resource

        limit = int(memory_limit_mb) * 1024 * 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass


def _numbers_really_equal(g, p) -> bool:
    """Second opinion on a math-verify "equal" between two plain numbers (see the tolerances)."""
    from sympy import Basic, Float

    if not (isinstance(g, Basic) and isinstance(p, Basic)):
        return True
    try:
        if not (g.is_number and p.is_number) or g.free_symbols or p.free_symbols:
            return True
        # mpmath floats have an unbounded exponent, so 1/2006! does not underflow to 0 here.
        diff = abs((g - p).evalf(50))
        scale = max(abs(g.evalf(50)), abs(p.evalf(50)))
        if not (diff.is_number and scale.is_number) or not (diff.is_finite and scale.is_finite):
            return True
        if scale == 0:
            return True
        tol = _DECIMAL_REL_TOL if (g.has(Float) or p.has(Float)) else _EXACT_REL_TOL
        return bool(diff <= tol * scale)
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
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    targets = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
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


def _warm() -> None:
    """Import math-verify and run one comparison, so the first real item is not charged for it."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # our timeouts are the process kill
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    compare("\\frac{1}{2}", "0.5")


def serve(conn, memory_limit_mb: int | None = None, parent_pid: int | None = None, warm: bool = True) -> None:
    """Worker main loop: answer tasks from the duplex ``conn`` until ``None`` or EOF."""
    _set_parent_death_signal(parent_pid)
    _set_memory_limit(memory_limit_mb)
    try:
        if warm:
            _warm()
        conn.send((READY, os.getpid()))
    except BaseException as exc:  # noqa: BLE001 - report why the worker cannot serve, then exit
        try:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
        return
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        task_id, pred, gold, pred_percent, gold_percent = message
        try:
            reply = compare(pred, gold, pred_percent, gold_percent)
        except MemoryError:
            reply = {"equal": False, "gold_parsed": False, "pred_parsed": False, "error": "MemoryError"}
        except Exception as exc:  # noqa: BLE001 - one bad item must not kill the worker
            reply = {"equal": False, "gold_parsed": False, "pred_parsed": False,
                     "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        try:
            conn.send((task_id, reply))
        except (EOFError, OSError):
            return


def zygote(ctl_fd: int, memory_limit_mb: int | None, parent_pid: int | None) -> None:
    """Fork server: import math-verify once, then fork a warm worker per request.

    Protocol on the Unix socket ``ctl_fd``: the parent sends one byte with a socket fd attached
    (SCM_RIGHTS); we fork a worker serving that socket and answer with its pid (8 bytes). Children
    are reaped automatically (SIGCHLD ignored); the parent kills them by pid. EOF on ``ctl_fd``
    (the parent is gone or shut the pool down) ends the zygote.
    """
    import signal
    import socket
    from multiprocessing.connection import Connection

    _set_parent_death_signal(parent_pid)
    ctl = socket.socket(fileno=ctl_fd)
    try:
        _warm()
    except BaseException as exc:  # noqa: BLE001 - tell the parent instead of dying silently
        ctl.sendall(b"E" + f"{type(exc).__name__}: {exc}".encode()[:500])
        return
    ctl.sendall(b"R")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps our children
    zygote_pid = os.getpid()
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(ctl, 1, 1)
        except OSError:
            return
        if not fds:
            return  # EOF
        pid = os.fork()
        if pid == 0:  # the worker
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                ctl.close()
                serve(Connection(fds[0]), memory_limit_mb, zygote_pid, warm=False)
            finally:
                os._exit(0)
        os.close(fds[0])
        ctl.sendall(pid.to_bytes(8, "little"))


def main(argv: list[str] | None = None) -> None:
    import argparse
    from multiprocessing.connection import Connection

    parser = argparse.ArgumentParser(description="rftt grader worker (started by the grader pool)")
    parser.add_argument("--fd", type=int, help="serve items on this socket (one worker)")
    parser.add_argument("--zygote", type=int, metavar="CTL_FD", help="run the fork server on this socket")
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--memory-limit-mb", type=int, default=None)
    args = parser.parse_args(argv)
    if args.zygote is not None:
        zygote(args.zygote, args.memory_limit_mb, args.parent_pid)
    elif args.fd is not None:
        serve(Connection(args.fd), args.memory_limit_mb, args.parent_pid)
    else:
        parser.error("need --fd or --zygote")


if __name__ == "__main__":
    main()
