"""The grader's worker processes: a fork server of ours, warm workers, a hard per-item bound.

Used only through :mod:`rftt_plugin.reward.equivalence`, which owns one :class:`_Pool` per process.
Importing this module is cheap (standard library only).
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from rftt_plugin.reward.equivalence import GraderConfig, _Stats

logger = logging.getLogger("rftt_plugin.reward")


class GraderUnavailable(RuntimeError):
    """Grader workers could not be started (e.g. from a daemonic process, or math-verify missing)."""


class _Worker:
    """One worker process and its duplex socket connection."""

    def __init__(self, pid: int, conn, process: subprocess.Popen | None = None) -> None:
        self.pid = pid
        self.conn = conn                  # multiprocessing.connection.Connection over a socket
        self.process = process            # set for directly started workers (no fork server)
        self.ready = False
        # A fork-server child is not our child: we cannot wait() for it and its pid is recycled
        # once the server reaps it. A pidfd (Linux) names this very process, so a late kill can
        # never hit an unrelated process that inherited the number.
        self.pidfd: int | None = None
        if process is None and hasattr(os, "pidfd_open"):
            try:
                self.pidfd = os.pidfd_open(pid)
            except OSError:
                self.pidfd = None

    def kill(self, known_alive: bool = True) -> None:
        """SIGKILL the worker. Without a pidfd, a worker seen dead is not signalled (pid reuse)."""
        try:
            if self.process is not None:
                if self.process.poll() is None:
                    self.process.kill()
                self.process.wait(timeout=2.0)
            elif self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            elif known_alive:
                os.kill(self.pid, signal.SIGKILL)   # the fork server reaps it
        except (OSError, subprocess.TimeoutExpired):
            pass
        for close in (self.conn.close, lambda: self.pidfd is not None and os.close(self.pidfd)):
            try:
                close()
            except OSError:
                pass
        self.pidfd = None


def _worker_env() -> dict[str, str]:
    # The worker must import this very package, also from a source checkout that is not installed.
    import rftt_plugin

    root = os.path.dirname(os.path.dirname(os.path.abspath(rftt_plugin.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def _can_fork_server() -> bool:
    import socket

    return hasattr(os, "fork") and hasattr(socket, "send_fds") and hasattr(socket, "AF_UNIX")


class _Pool:
    """A fixed set of worker processes; each caller borrows one worker for one item.

    Workers are forked by a small fork server of our own (``_worker.zygote``, a fresh interpreter
    started with ``subprocess`` that imports math-verify once), so a replacement for a killed
    worker is warm in milliseconds instead of re-importing sympy for half a second. We do not use
    ``multiprocessing``'s spawn/forkserver contexts: they re-import the caller's ``__main__``
    script in every child, which breaks (or re-runs) any unguarded script that calls the reward
    function, and they refuse to start from daemonic processes. Without ``os.fork`` (Windows) each
    worker is its own interpreter.
    """

    def __init__(self, config: GraderConfig, stats: _Stats) -> None:
        self.config = config
        self.stats = stats
        self.pid = os.getpid()
        self._env = _worker_env()
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._closed = False
        self._pending = 0                 # workers being started outside the lock
        self._task_ids = itertools.count()
        self._zygote: subprocess.Popen | None = None
        self._ctl = None                  # socket to the fork server
        self._ctl_lock = threading.Lock()
        self._use_zygote = _can_fork_server()
        for _ in range(max(1, config.workers)):
            self._idle.append(self._start_worker())

    def _command(self) -> list[str]:
        cmd = [self.config.python or sys.executable, "-m", "rftt_plugin.reward._worker",
               "--parent-pid", str(os.getpid())]
        if self.config.memory_limit_mb:
            cmd += ["--memory-limit-mb", str(int(self.config.memory_limit_mb))]
        return cmd

    def _start_zygote(self) -> None:
        import socket

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._zygote = subprocess.Popen(self._command() + ["--zygote", str(theirs.fileno())],
                                            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, env=self._env, close_fds=True)
        except OSError as exc:
            ours.close()
            raise GraderUnavailable(f"cannot start the grader fork server: {exc}") from exc
        finally:
            theirs.close()
        ours.settimeout(self.config.startup_timeout_s)
        try:
            status = ours.recv(512)
        except OSError:
            status = b""
        if status[:1] != b"R":
            ours.close()
            self._zygote.kill()
            raise GraderUnavailable("grader fork server failed to start: "
                                    + (status[1:].decode(errors="replace") or "no answer (is math-verify installed?)"))
        ours.settimeout(None)
        self._ctl = ours
        self.stats.add("server_starts")

    def _fork_worker(self) -> tuple[int, object]:
        import socket

        with self._ctl_lock:
            for attempt in range(2):
                if self._ctl is None or (self._zygote is not None and self._zygote.poll() is not None):
                    self._start_zygote()
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    socket.send_fds(self._ctl, [b"F"], [theirs.fileno()])
                    raw = b""
                    while len(raw) < 8:
                        chunk = self._ctl.recv(8 - len(raw))
                        if not chunk:
                            raise OSError("fork server closed its socket")
                        raw += chunk
                    return int.from_bytes(raw, "little"), ours
                except OSError:
                    ours.close()
                    self._stop_zygote()
                    if attempt:
                        raise GraderUnavailable("grader fork server is not responding") from None
                finally:
                    theirs.close()
        raise AssertionError("unreachable")

    def _stop_zygote(self) -> None:
        if self._ctl is not None:
            try:
                self._ctl.close()
            except OSError:
                pass
            self._ctl = None
        if self._zygote is not None:
            try:
                self._zygote.kill()
                self._zygote.wait(timeout=2.0)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self._zygote = None

    def _start_worker(self) -> _Worker:
        import socket
        from multiprocessing.connection import Connection

        if self._use_zygote:
            pid, sock = self._fork_worker()
            worker = _Worker(pid, Connection(sock.detach()))
        else:
            ours, theirs = socket.socketpair()
            try:
                process = subprocess.Popen(self._command() + ["--fd", str(theirs.fileno())],
                                           pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, env=self._env, close_fds=True)
            except OSError as exc:
                ours.close()
                raise GraderUnavailable(f"cannot start a grader worker: {exc}") from exc
            finally:
                theirs.close()
            worker = _Worker(process.pid, Connection(ours.detach()), process)
        with self._cond:
            self._all.add(worker)
        self.stats.add("worker_starts")
        return worker

    def _replace(self, worker: _Worker, known_alive: bool = True) -> _Worker:
        worker.kill(known_alive)
        with self._cond:
            self._all.discard(worker)
        self.stats.add("worker_restarts")
        return self._start_worker()

    def _retire(self, worker: _Worker, known_alive: bool = True) -> None:
        """Kill a worker and refill its slot in the background, so the caller returns at once."""
        worker.kill(known_alive)
        with self._cond:
            self._all.discard(worker)
            if self._closed:
                return
            self._pending += 1
        self.stats.add("worker_restarts")
        threading.Thread(target=self._refill, name="rftt-grader-refill", daemon=True).start()

    def _refill(self) -> None:
        try:
            worker = self._start_worker()
        except Exception:  # noqa: BLE001 - _acquire starts one lazily if this failed
            logger.exception("could not start a replacement grader worker")
            worker = None
        with self._cond:
            self._pending -= 1
            if worker is not None:
                if self._closed:
                    self._all.discard(worker)
                    worker.kill()
                else:
                    self._idle.append(worker)
            self._cond.notify()

    def _acquire(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise GraderUnavailable("grader pool is shut down")
                if self._idle:
                    # Prefer a warm worker: a replacement may still be starting.
                    for i in range(len(self._idle) - 1, -1, -1):
                        if self._idle[i].ready:
                            return self._idle.pop(i)
                    return self._idle.pop(0)
                if len(self._all) + self._pending < max(1, self.config.workers):
                    self._pending += 1  # a slot was lost when a replacement failed to start
                    break
                self._cond.wait()
        try:
            return self._start_worker()
        finally:
            with self._cond:
                self._pending -= 1
                self._cond.notify()

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            if self._closed or worker not in self._all:
                worker.kill()
                return
            self._idle.append(worker)
            self._cond.notify()

    def _wait_ready(self, worker: _Worker) -> bool:
        if worker.ready:
            return True
        try:
            if worker.conn.poll(self.config.startup_timeout_s):
                message = worker.conn.recv()
                if isinstance(message, tuple) and message and message[0] == "ready":
                    worker.ready = True
                    return True
                logger.error("grader worker failed to start: %s", message)
        except (EOFError, OSError):
            pass
        return False

    @staticmethod
    def _looks_dead(worker: _Worker) -> bool:
        # An idle worker has nothing to say: anything readable is the EOF of a dead process.
        try:
            return bool(worker.conn.poll(0))
        except (OSError, ValueError):
            return True

    def run(self, pred: str, gold: str, pred_percent: bool, gold_percent: bool,
            timeout_s: float) -> tuple[dict | None, bool]:
        """Compare in a worker. Returns (reply or None on a worker failure, timed_out)."""
        worker: _Worker | None = self._acquire()
        # The bound runs from here: a wait for a replacement that is still starting counts too,
        # unless the start alone ate the whole budget (then the item still gets a full bound).
        deadline = time.monotonic() + timeout_s
        try:
            for _ in range(3):
                if worker.ready and self._looks_dead(worker):
                    worker = self._replace(worker, known_alive=False)
                    continue
                if not self._wait_ready(worker):
                    worker = self._replace(worker, known_alive=False)
                    continue
                task_id = next(self._task_ids)
                try:
                    worker.conn.send((task_id, pred, gold, pred_percent, gold_percent))
                except OSError:  # died before it saw this item (killed, crashed earlier): retry once
                    worker = self._replace(worker, known_alive=False)
                    continue
                remaining = deadline - time.monotonic()
                try:
                    if worker.conn.poll(remaining if remaining > 0.05 * timeout_s else timeout_s):
                        got_id, reply = worker.conn.recv()
                        if got_id == task_id:
                            return reply, False
                        logger.error("grader worker answered task %s, expected %s", got_id, task_id)
                        self._retire(worker)
                        worker = None
                        return None, False
                except (EOFError, OSError):  # died on this item (memory limit, segfault)
                    self._retire(worker, known_alive=False)
                    worker = None
                    return None, False
                # Overran its bound: kill it (also stops work stuck in C); the replacement is forked
                # in the background so this caller returns right at the bound.
                self._retire(worker)
                worker = None
                return None, True
            raise GraderUnavailable("grader workers die before they receive work")
        finally:
            if worker is not None:
                self._release(worker)

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
            self._idle.clear()
            self._cond.notify_all()
        # Busy workers may be deep in sympy: no polite goodbye, just kill everything.
        for worker in workers:
            worker.kill()
        with self._ctl_lock:
            self._stop_zygote()
