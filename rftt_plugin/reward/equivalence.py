"""The grader service: is an extracted answer equivalent to the gold? Cache, counters, worker pool.

The pure matching (notation clean-up, exact numbers, the sympy-free verdict) lives in
:mod:`rftt_plugin.reward.answer_match`; the worker processes in :mod:`rftt_plugin.reward._pool`
(pebble) running :mod:`rftt_plugin.reward._worker`. This module holds the per-process state that
ties them together and the public API (:func:`check_equivalence` and friends).

Order of checks for one (pred, gold) pair:

1. no answer / unusable gold / absurdly long answer -> not equivalent, no symbolic work;
2. the per-process LRU cache keyed by (pred, gold);
3. :func:`~rftt_plugin.reward.answer_match.prepare`: phantoms, notation clean-up (currency as a
   unit, nested ``\\text``, repeating decimals, a scalar factored out of a tuple), units, scale
   words and hedges read for their meaning, then exact arithmetic on plain numbers, small power
   towers, sets and tuples of rationals, based numerals; huge towers against a plain number.
   A pair longer than ``inline_max_chars`` is prepared in the worker instead, under the time
   bound (no step outside the bound may take long on any input);
4. math-verify ``parse`` + ``verify`` (gold as guide) in a worker process, with a bound on the
   *work* (``timeout_s``, 5 s by default, counted from the moment a worker starts the item) and
   a hard kill of a worker that overruns; the item then counts as not equivalent with
   ``timed_out=True``. Waiting for a worker has its own, longer limit (``queue_timeout_s``, 60 s):
   on a busy machine a trivial comparison waits and then gets its verdict; a call still waiting
   at that limit returns ``method="queue_timeout"`` (``Verdict.status == "overloaded"``), which
   callers tell apart from work that overran (``status == "timeout"``). Inside the
   worker, an answer holding a power or factorial of more than a million digits (while the gold
   does not) is refused before sympy sees it, and a math-verify "equal" between two numbers is
   re-checked exactly (math-verify rounds to 6 decimals, so 0.142857 "equals" 1/7); a ``%`` on one
   side is tried both as is and as a factor 1/100.

Why processes and not threads or ``signal.alarm``: verl calls reward functions from executor
threads, where ``signal.alarm`` cannot be used (the silent-zero bug of Math-Verify#50/#55 and
verl#3407), and an alarm does not interrupt big-integer work inside C anyway.

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
import os
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace

from rftt_plugin.reward._pool import GraderPool, GraderUnavailable, PoolSettings
from rftt_plugin.reward.answer_match import fast_verdict, prepare
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

    workers: int = 2                  # items graded at once under normal load
    timeout_s: float = 5.0            # hard bound on one item's work, from when a worker starts it
    queue_timeout_s: float = 60.0     # how long a call may wait for a worker (load, not the item)
    overflow_workers: int = 4         # extra processes that serve the queue while slow items run
    slow_after_s: float = 0.5         # an item running this long stops holding one of `workers`
    max_queue: int = 4096             # callers waiting for a worker; more are refused at once
    memory_limit_mb: int | None = 4096  # growth cap per worker: hang bait must not eat the machine
    startup_timeout_s: float = 60.0   # the pool must import math-verify and fork within this
    cache_size: int = 65536
    max_answer_chars: int = 2000      # longer answers are refused, unless the gold is as long
    inline_max_chars: int = 512       # longer pairs are cleaned and compared in a worker (bounded)

    def pool_settings(self) -> PoolSettings:
        return PoolSettings(workers=self.workers, overflow_workers=self.overflow_workers,
                            slow_after_s=self.slow_after_s, max_queue=self.max_queue,
                            memory_limit_mb=self.memory_limit_mb, startup_timeout_s=self.startup_timeout_s)


@dataclass(frozen=True)
class Verdict:
    """Outcome of one equivalence check.

    ``method`` says what decided it: ``"no_answer"``, ``"no_gold"``, ``"too_long"`` (answer text over
    ``max_answer_chars`` and twice the gold's length), ``"cache"``, ``"fast_path"``, ``"symbolic"``,
    ``"too_large"`` (the answer holds a power/factorial of over a million digits and the gold does
    not), ``"timeout"`` (the work overran ``timeout_s``), ``"queue_timeout"`` (no worker started the
    item within ``queue_timeout_s``: load, not the item; not cached), ``"overloaded"`` (too many
    callers waiting; not cached) or ``"error"`` (worker crashed / unavailable; not cached). A
    cached verdict keeps its ``timed_out`` flag, which is True for ``timeout``, ``queue_timeout``
    and ``overloaded`` (as before); :attr:`status` tells them apart.

    >>> Verdict(False, timed_out=True, method="queue_timeout").status
    'overloaded'
    >>> Verdict(True, method="fast_path").graded, Verdict(False, timed_out=True, method="timeout").status
    (True, 'timeout')
    """

    equivalent: bool
    timed_out: bool = False
    method: str = "symbolic"
    parse_failed: bool = False

    @property
    def status(self) -> str:
        """``"graded"`` (``equivalent`` is the grader's verdict), ``"timeout"`` (the item's work
        overran the bound: hang bait or a huge expression), ``"overloaded"`` (no worker was free
        in time, or the queue was full: the machine, not the item) or ``"error"`` (a worker
        crashed or the pool is unavailable). Only ``"graded"`` says anything about the answer."""
        if self.method in ("queue_timeout", "overloaded"):
            return "overloaded"
        if self.method == "error":
            return "error"
        return "timeout" if self.timed_out else "graded"

    @property
    def graded(self) -> bool:
        """True when ``equivalent`` is a verdict on the answer (see :attr:`status`)."""
        return self.status == "graded"


def _env_config() -> GraderConfig:
    cfg = GraderConfig()
    try:
        if os.environ.get("RFTT_GRADER_WORKERS"):
            cfg = replace(cfg, workers=max(1, int(os.environ["RFTT_GRADER_WORKERS"])))
        if os.environ.get("RFTT_GRADER_TIMEOUT_S"):
            cfg = replace(cfg, timeout_s=float(os.environ["RFTT_GRADER_TIMEOUT_S"]))
        if os.environ.get("RFTT_GRADER_OVERFLOW"):
            cfg = replace(cfg, overflow_workers=max(0, int(os.environ["RFTT_GRADER_OVERFLOW"])))
        if os.environ.get("RFTT_GRADER_QUEUE_TIMEOUT_S"):
            cfg = replace(cfg, queue_timeout_s=float(os.environ["RFTT_GRADER_QUEUE_TIMEOUT_S"]))
    except ValueError:
        logger.warning("ignoring malformed RFTT_GRADER_WORKERS / RFTT_GRADER_TIMEOUT_S / RFTT_GRADER_OVERFLOW / "
                       "RFTT_GRADER_QUEUE_TIMEOUT_S")
    return cfg


# ----------------------------------------------------------------------------------------------
# Counters and cache
# ----------------------------------------------------------------------------------------------

_STAT_KEYS = (
    "calls", "no_answer", "no_gold", "too_long", "too_large", "cache_hits", "fast_path_hits", "symbolic_calls",
    "timeouts", "queue_timeouts", "overloaded", "parse_failures", "worker_errors", "worker_restarts",
    "worker_deaths", "worker_starts", "server_starts", "prm_missing",
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
        self.pool: GraderPool | None = None
        self.executor = None  # ThreadPoolExecutor for the async API, made on first use


_state = _State()


def _reset_after_fork() -> None:
    # The child inherits the parent's pool object but not its worker processes (they are the
    # parent's children) nor its threads or a usable lock; start from scratch, keeping the
    # configuration. multiprocessing's list of children is the parent's too: left in place, a
    # child that exits would signal and try to join the parent's workers.
    global _state
    mp_process = sys.modules.get("multiprocessing.process")
    if mp_process is not None and _state.pool is not None:
        children = getattr(mp_process, "_children", None)
        if isinstance(children, set):
            children.difference_update({p for p in children if getattr(p, "_parent_pid", None) != os.getpid()})
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


def _get_pool() -> GraderPool:
    state = _current_state()
    pool = state.pool
    if pool is not None and pool.pid == os.getpid():
        return pool
    with state.lock:
        if state.pool is None or state.pool.pid != os.getpid():
            state.pool = GraderPool(state.config.pool_settings(), state.stats.add)
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
        if (new.workers < 1 or new.timeout_s <= 0 or new.overflow_workers < 0 or new.max_queue < 1
                or new.queue_timeout_s <= 0):
            raise ValueError(f"grader needs workers >= 1, timeout_s > 0, queue_timeout_s > 0, overflow_workers "
                             f">= 0 and max_queue >= 1; got workers={new.workers}, timeout_s={new.timeout_s}, "
                             f"queue_timeout_s={new.queue_timeout_s}, overflow_workers={new.overflow_workers}, "
                             f"max_queue={new.max_queue}")
        if new == state.config:
            return new
        pool = None
        if new.pool_settings() != state.config.pool_settings():
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


@dataclass(frozen=True)
class _Job:
    """What the worker is asked: ``raw`` pairs (too long to prepare inline) are prepared there."""

    key: tuple
    pred: str
    gold: str
    pred_percent: bool = False
    gold_percent: bool = False
    raw: bool = False


def _gold_text(gold: GoldAnswer) -> str:
    # the gold's "\$" was taken out of its items; put it back as the unit it is
    return "\\$" + gold.text if gold.currency and len(gold.items) == 1 else gold.text


def _precheck(pred: str | None, gold: GoldAnswer, state: _State) -> tuple[Verdict | None, _Job | None]:
    """Everything before the pool: a verdict, or the job for a worker.

    Runs in the caller's thread, so only on bounded input: a pair longer than
    ``inline_max_chars`` is handed to a worker raw (prepared there, under the time bound)."""
    state.stats.add("calls")
    if pred is None or not pred.replace("\x00", "").strip():
        state.stats.add("no_answer")
        return Verdict(False, method="no_answer"), None
    if not gold.usable:
        state.stats.add("no_gold")
        return Verdict(False, method="no_gold"), None
    pred = pred.replace("\x00", "").strip()
    gold_text = _gold_text(gold)
    cfg = state.config
    if len(pred) > max(cfg.max_answer_chars, 2 * len(gold_text) + 64):
        state.stats.add("too_long")
        return Verdict(False, method="too_long"), None
    key = (pred, gold_text)
    cached = state.cache.get(key)
    if cached is not None:
        state.stats.add("cache_hits")
        return replace(cached, method="cache"), None
    if max(len(pred), len(gold_text)) > cfg.inline_max_chars:
        return None, _Job(key, pred, gold_text, raw=True)
    prepared = prepare(pred, gold_text)
    if prepared.verdict is not None:
        state.stats.add("fast_path_hits")
        verdict = Verdict(prepared.verdict, method="fast_path")
        state.cache.put(key, verdict)
        return verdict, None
    return None, _Job(key, prepared.pred, prepared.gold, prepared.pred_percent, prepared.gold_percent)


def _symbolic(job: _Job, timeout_s: float | None, state: _State, start: float) -> Verdict:
    """The worker path. ``start`` (monotonic) is when the call began: the call may wait for a
    worker until ``start + queue_timeout_s`` (plus the time it took to build the pool, if this
    call had to), and the work then has ``timeout_s`` from the moment a worker starts it."""
    state.stats.add("symbolic_calls")
    bound = float(timeout_s) if timeout_s else state.config.timeout_s
    try:
        before = time.monotonic()
        pool = _get_pool()
        built = time.monotonic() - before
        outcome = pool.run(job.pred, job.gold, job.pred_percent, job.gold_percent, bound,
                           deadline=start + state.config.queue_timeout_s + built, raw=job.raw)
    except GraderUnavailable:
        state.stats.add("worker_errors")
        logger.error("math grader unavailable; scoring as not equivalent", exc_info=True)
        return Verdict(False, method="error")
    reply, status = outcome.reply, outcome.status
    if status in ("queue_timeout", "overloaded"):
        # load, not the item: not cached, and counted by the pool
        logger.warning("grader %s: no worker started the item within %.1f s; not graded",
                       "overloaded" if status == "overloaded" else "queue too long", state.config.queue_timeout_s)
        return Verdict(False, timed_out=True, method=status)
    if status == "timeout":
        state.stats.add("timeouts")
        verdict = Verdict(False, timed_out=True, method="timeout")
        if not outcome.full_budget:
            return verdict  # a retry after a worker death had only part of the bound
    elif status != "ok" or reply is None or reply.get("error"):
        state.stats.add("worker_errors")
        logger.warning("grader worker failed on an item (%s); scoring it as not equivalent",
                       "worker died" if reply is None else reply["error"])
        return Verdict(False, method="error")  # not cached: a crash may be transient
    elif reply.get("too_large"):
        state.stats.add("too_large")
        verdict = Verdict(False, method="too_large")
    elif reply.get("fast"):
        state.stats.add("fast_path_hits")
        verdict = Verdict(bool(reply["equal"]), method="fast_path")
    else:
        parse_failed = not (reply.get("gold_parsed") and reply.get("pred_parsed"))
        if parse_failed:
            state.stats.add("parse_failures")
        verdict = Verdict(bool(reply["equal"]), method="symbolic", parse_failed=parse_failed)
    # Timeouts with the full bound are cached too: a policy that found a hang-inducing answer
    # would otherwise stall every reward worker for the full bound on each repeat.
    state.cache.put(job.key, verdict)
    return verdict


def check_equivalence(pred: str | None, gold: GoldAnswer | str, *, timeout_s: float | None = None) -> Verdict:
    """Is the extracted answer ``pred`` equivalent to ``gold``? Blocking, thread-safe.

    ``gold`` is a :class:`GoldAnswer` or a raw ground truth (normalised with ``normalize_gold``).
    ``timeout_s`` (default: the configured 5 s) bounds the item's work; waiting for a free worker
    is bounded separately by ``queue_timeout_s``, so a call returns within about
    ``queue_timeout_s + timeout_s`` however many callers compete (see :attr:`Verdict.status`).
    """
    start = time.monotonic()
    state = _current_state()
    gold = _as_gold(gold)
    verdict, job = _precheck(pred, gold, state)
    if verdict is not None:
        return verdict
    return _symbolic(job, timeout_s, state, start)


def _get_executor(state: _State):
    from concurrent.futures import ThreadPoolExecutor

    with state.lock:
        if state.executor is None:
            # Threads only wait (in the pool's queue or on a worker); enough of them that every
            # process of the pool can be fed while others wait.
            cfg = state.config
            state.executor = ThreadPoolExecutor(max_workers=max(8, 2 * (cfg.workers + cfg.overflow_workers)),
                                                thread_name_prefix="rftt-grader")
        return state.executor


async def check_equivalence_async(pred: str | None, gold: GoldAnswer | str, *,
                                  timeout_s: float | None = None) -> Verdict:
    """Async :func:`check_equivalence`: cheap checks inline, the symbolic wait in a thread. The
    queue limit starts here, so a wait for a free executor thread counts as queueing too."""
    start = time.monotonic()
    state = _current_state()
    gold = _as_gold(gold)
    verdict, job = _precheck(pred, gold, state)
    if verdict is not None:
        return verdict
    import asyncio

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_get_executor(state), _symbolic, job, timeout_s, state, start)


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
        "queue_timeout_s": get_config().queue_timeout_s,
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
