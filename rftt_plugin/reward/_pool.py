"""The grader's worker processes: a pebble process pool behind a bounded queue with deadlines.

Used by :mod:`rftt_plugin.reward.equivalence` (one :class:`GraderPool` per process). Importing
this module is cheap; pebble and math-verify load when a pool is built.

Design, and why:

- **pebble** ``ProcessPool`` runs the items: per-task kill and worker replacement, children
  joined (no zombies). The pool is built with a ``fork`` context *after* math-verify was imported
  in this process, so workers and replacements start warm in milliseconds, and no script's
  ``__main__`` is re-imported (spawn/forkserver would do that).
- **Forks come only from long-lived threads.** ``PR_SET_PDEATHSIG`` (armed in each worker so it
  dies with us even when stuck in C code) fires when the *thread* that forked the worker exits.
  The first caller may be a short-lived executor thread (verl's reward loop), so a keeper thread
  of ours builds the pool and stays alive as long as it; replacements are forked by pebble's own
  manager thread, which lives as long as the pool. Grading from many fresh thread pools is safe.
- **The bound is on the work, not on waiting.** ``timeout_s`` is pebble's per-task timeout, which
  counts from the moment a worker starts the item, so queueing and worker start-up on a busy
  machine never turn a trivial comparison into a timeout. Waiting has its own limit: a call not
  started by its ``deadline`` (``start + queue_timeout_s``) returns ``queue_timeout``; at most
  ``max_queue`` callers wait, more get ``overloaded`` at once. Both are load, not the item, and
  callers see them apart from ``timeout`` (the work overran).
- **Slow items do not hold the line.** ``workers`` items run at a time; an item that has run for
  ``slow_after_s`` stops counting against that, so up to ``overflow_workers`` more processes serve
  the queue while slow items run out their bound. An item still running after ``renice_after_s``
  has its process reniced, so the quick items get the CPU first.
- **Daemonic callers** (e.g. a ``multiprocessing.Pool`` worker) may not normally have children;
  our workers die with their parent (death signal), which is the reason for that rule, so the
  check is bypassed for our own start only. Our workers are daemonic themselves, so a process
  that exits terminates them rather than joining idle workers forever.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, NamedTuple

logger = logging.getLogger("rftt_plugin.reward")

OVERLOADED = "overloaded"
_GRACE_S = 2.0   # how long past its bound we wait for pebble to report a kill before giving up


class GraderUnavailable(RuntimeError):
    """Grader workers could not be started (e.g. math-verify missing)."""


@dataclass(frozen=True)
class PoolSettings:
    workers: int = 2                   # items running at once (normal load)
    overflow_workers: int = 4          # extra processes for the queue while slow items run
    slow_after_s: float = 0.5          # an item running this long no longer counts against `workers`
    queue_timeout_s: float = 60.0      # default wait limit for a worker (callers pass their deadline)
    renice_after_s: float = 2.0        # an item running this long is almost surely hang bait: renice
    max_queue: int = 4096              # callers waiting for a slot; more are answered "overloaded"
    memory_limit_mb: int | None = 4096  # growth cap per worker (RLIMIT_AS over the forked size)
    startup_timeout_s: float = 60.0


class Outcome(NamedTuple):
    """``status``: ``ok`` (``reply`` is the worker's dict), ``timeout`` (the work overran and the
    worker was killed), ``queue_timeout`` (no worker started the item by the deadline),
    ``overloaded`` (queue full) or ``error`` (the worker died on the item twice / pool broken).
    ``full_budget``: the work had (nearly) the whole bound, so a timeout says something about the
    item and may be cached."""

    reply: dict | None
    status: str
    full_budget: bool = False


# ----------------------------------------------------------------------------------------------
# multiprocessing context: fork, allowed from daemonic processes
# ----------------------------------------------------------------------------------------------

_DAEMON_FLAG_LOCK = threading.Lock()


def _fork_context():
    import multiprocessing
    from multiprocessing import process as mp_process

    base = multiprocessing.get_context("fork")

    class _Process(base.Process):  # type: ignore[name-defined, misc]
        def start(self):
            # daemon: a process that exits (also a multiprocessing child, whose exit joins every
            # non-daemonic child) terminates our idle workers instead of waiting for them forever
            self.daemon = True
            config = mp_process.current_process()._config  # noqa: SLF001
            if not config.get("daemon"):
                return super().start()
            with _DAEMON_FLAG_LOCK:
                config["daemon"] = False
                try:
                    return super().start()
                finally:
                    config["daemon"] = True

    class _Context(type(base)):  # type: ignore[misc]
        Process = _Process

    return _Context()


# ----------------------------------------------------------------------------------------------
# One pebble pool, owned by a keeper thread
# ----------------------------------------------------------------------------------------------

class _PoolHandle:
    """A pebble ``ProcessPool`` built, started and finally stopped by one keeper thread."""

    def __init__(self, size: int, settings: PoolSettings) -> None:
        self.size = size
        self.pool = None
        self._error: str | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, args=(settings,), name="rftt-grader-keeper",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(settings.startup_timeout_s):
            self.stop()
            raise GraderUnavailable(f"grader pool did not start within {settings.startup_timeout_s:g} s")
        if self._error is not None:
            self.stop()
            raise GraderUnavailable(f"grader pool failed to start: {self._error}")

    def _keep(self, settings: PoolSettings) -> None:
        try:
            from pebble import ProcessPool

            from rftt_plugin.reward import _worker

            _worker.preload()  # once here, so every fork (and every replacement) is warm
            self.pool = ProcessPool(max_workers=self.size, initializer=_worker.init_worker,
                                    initargs=(os.getpid(), settings.memory_limit_mb), context=_fork_context())
            # The first schedule forks all workers, from this (long-lived) thread.
            self.pool.schedule(_worker.ping).result(timeout=settings.startup_timeout_s)
        except BaseException as exc:  # noqa: BLE001 - reported to the builder
            self._error = f"{type(exc).__name__}: {exc}"
        finally:
            self._ready.set()
        reniced: set[int] = set()
        while not self._stop.wait(0.2):
            reniced = self._renice_slow(settings.renice_after_s, reniced)
        if self.pool is not None:
            try:
                self.pool.stop()
                self.pool.join(timeout=10)
            except Exception:  # noqa: BLE001 - workers are killed by pebble's stop anyway
                logger.debug("grader pool stop raised", exc_info=True)

    def _renice_slow(self, after_s: float, reniced: set[int]) -> set[int]:
        """Lower the CPU priority of workers whose item has run ``after_s``, so the quick items
        queued behind get the CPU first. pebble records the worker pid and start time on its task
        when the worker acknowledges it (private state: best effort). An unprivileged process
        cannot raise a priority again, so a reniced worker whose item does finish keeps the lower
        priority; hence the long threshold (normal items finish well under a second, hang bait
        runs into the kill, and a killed worker is replaced by a fresh fork at normal priority)."""
        if self.pool is None:
            return reniced
        try:
            tasks = tuple(self.pool._pool_manager.task_manager.tasks.values())  # noqa: SLF001
            live = set(self.worker_pids())
            now = time.time()
            lower = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)   # relative: we may run under nice
            for task in tasks:
                pid, started = task.worker_id, task.timestamp
                if pid and pid in live and pid not in reniced and started and now - started >= after_s:
                    os.setpriority(os.PRIO_PROCESS, pid, lower)
                    reniced.add(pid)
            return reniced & live
        except Exception:  # noqa: BLE001 - an optimisation only
            return reniced

    def worker_pids(self) -> list[int]:
        """Live worker pids (for tests and health checks)."""
        if self.pool is None:
            return []
        return list(self.pool._pool_manager.worker_manager.workers)  # noqa: SLF001

    def stop(self, wait: bool = True) -> None:
        self._stop.set()
        if wait and self._thread is not threading.current_thread():
            self._thread.join(timeout=15)


# ----------------------------------------------------------------------------------------------
# Admission: a FIFO of waiting callers with deadlines
# ----------------------------------------------------------------------------------------------

class _Waiter:
    __slots__ = ("event", "token")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.token: int | None = None


class _Gate:
    """Slots are handed out in arrival order by whoever frees one (or by a 50 ms ticker while
    callers wait, since running items turn "slow" with time, not on an event). Each waiter sleeps
    on its own event until it is granted a slot or its deadline passes: no thundering herd of
    hundreds of threads waking on every release."""

    def __init__(self, settings: PoolSettings) -> None:
        self.s = settings
        self._lock = threading.Lock()
        self._running: dict[int, float] = {}     # token -> start (monotonic)
        self._waiting: deque[_Waiter] = deque()
        self._ids = itertools.count(1)
        self._ticker: threading.Thread | None = None

    def _free(self, now: float) -> bool:
        slow = sum(1 for t in self._running.values() if now - t >= self.s.slow_after_s)
        return (len(self._running) - slow < self.s.workers
                and len(self._running) < self.s.workers + self.s.overflow_workers)

    def _grant_locked(self) -> None:
        now = time.monotonic()
        while self._waiting and self._free(now):
            waiter = self._waiting.popleft()
            waiter.token = next(self._ids)
            self._running[waiter.token] = now
            waiter.event.set()

    def _tick(self) -> None:
        while True:
            time.sleep(0.05)
            with self._lock:
                if not self._waiting:
                    self._ticker = None
                    return
                self._grant_locked()

    def acquire(self, deadline: float):
        """A token, ``None`` when the deadline passed first, or ``OVERLOADED``."""
        waiter = _Waiter()
        with self._lock:
            if len(self._waiting) >= self.s.max_queue:
                return OVERLOADED
            self._waiting.append(waiter)
            self._grant_locked()
            if waiter.token is not None:
                return waiter.token
            if self._ticker is None:
                self._ticker = threading.Thread(target=self._tick, name="rftt-grader-gate", daemon=True)
                self._ticker.start()
        try:
            waiter.event.wait(max(0.0, deadline - time.monotonic()))
        finally:
            with self._lock:
                if waiter.token is None:
                    self._waiting.remove(waiter)
        return waiter.token

    def release(self, token: int) -> None:
        with self._lock:
            self._running.pop(token, None)
            self._grant_locked()

    def snapshot(self) -> dict:
        with self._lock:
            return {"running": len(self._running), "waiting": len(self._waiting)}


# ----------------------------------------------------------------------------------------------
# The pool the grader service uses
# ----------------------------------------------------------------------------------------------

class GraderPool:
    """Bounded, deadline-driven access to a pebble pool of math-verify workers (see module doc)."""

    def __init__(self, settings: PoolSettings, on_event: Callable[[str, int], None] | None = None) -> None:
        if settings.workers < 1 or settings.overflow_workers < 0:
            raise ValueError(f"grader pool needs workers >= 1 and overflow_workers >= 0, got {settings}")
        self.settings = settings
        self.pid = os.getpid()
        self._on_event = on_event or (lambda name, n=1: None)
        self._lock = threading.Lock()
        self._closed = False
        self._gate = _Gate(settings)
        self._handle = self._new_handle()

    def _event(self, name: str, n: int = 1) -> None:
        try:
            self._on_event(name, n)
        except Exception:  # noqa: BLE001 - counters must never break grading
            pass

    def _new_handle(self) -> _PoolHandle:
        size = self.settings.workers + self.settings.overflow_workers
        handle = _PoolHandle(size, self.settings)
        self._event("server_starts", 1)
        self._event("worker_starts", size)
        return handle

    def _rebuild(self, broken: _PoolHandle) -> None:
        """Replace a broken pebble pool (e.g. all workers killed while idle) once."""
        with self._lock:
            if self._closed:
                raise GraderUnavailable("grader pool is shut down")
            if self._handle is not broken:
                return
            logger.warning("grader process pool broke; starting a new one")
            self._handle = self._new_handle()
        broken.stop(wait=False)

    def worker_pids(self) -> list[int]:
        return self._handle.worker_pids()

    def load(self) -> dict:
        return self._gate.snapshot()

    def run(self, pred: str, gold: str, pred_percent: bool, gold_percent: bool,
            timeout_s: float, deadline: float | None = None, raw: bool = False) -> Outcome:
        """Compare in a worker: the item may wait for a worker until ``deadline`` (monotonic;
        default now + ``queue_timeout_s``), and its work then has ``timeout_s`` from the moment a
        worker starts it (pebble's per-task timeout, which kills the worker). A call therefore
        ends by ``deadline + timeout_s`` plus a short grace, however busy the machine is."""
        from concurrent.futures import CancelledError
        from concurrent.futures import TimeoutError as FutureTimeout
        from concurrent.futures.process import BrokenProcessPool

        from pebble import ProcessExpired

        from rftt_plugin.reward import _worker

        if deadline is None:
            deadline = time.monotonic() + self.settings.queue_timeout_s
        token = self._gate.acquire(deadline)
        if token == OVERLOADED:
            self._event("overloaded", 1)
            return Outcome(None, OVERLOADED)
        if token is None:
            self._event("queue_timeouts", 1)
            return Outcome(None, "queue_timeout")
        end = max(deadline, time.monotonic()) + timeout_s   # the latest the work may end
        try:
            for _ in range(3):  # a retry after a worker death or a broken pool
                budget = min(timeout_s, end - time.monotonic())
                if budget <= 0.05:
                    break
                full = budget >= 0.9 * timeout_s
                handle = self._handle
                if self._closed:
                    raise GraderUnavailable("grader pool is shut down")
                try:
                    future = handle.pool.schedule(_worker.compare_task, timeout=budget,
                                                  args=(pred, gold, pred_percent, gold_percent, raw))
                except RuntimeError:  # "pool is not active" / "unexpected error": broken
                    self._rebuild(handle)
                    continue
                try:
                    # pebble enforces `budget` once the work starts; this wait only backs it up
                    wait = max(0.0, deadline - time.monotonic()) + budget + _GRACE_S
                    return Outcome(future.result(timeout=wait), "ok", full)
                except FutureTimeout:
                    if not future.done():      # never started (or pebble's timer is stuck)
                        started = future.running()
                        future.cancel()
                        self._event("worker_restarts" if started else "queue_timeouts", 1)
                        return Outcome(None, "timeout" if started else "queue_timeout", full and started)
                    # done with pebble's TimeoutError: the work overran, the worker was killed
                    self._event("worker_restarts", 1)
                    return Outcome(None, "timeout", full)
                except ProcessExpired:  # the worker died on this item (killed, OOM, segfault)
                    self._event("worker_restarts", 1)
                    self._event("worker_deaths", 1)
                    continue  # once more on a fresh worker, within what is left of the bound
                except (BrokenProcessPool, CancelledError, RuntimeError):
                    self._rebuild(handle)
                    continue
            return Outcome(None, "error")
        finally:
            self._gate.release(token)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            handle = self._handle
        handle.stop(wait=True)
