"""Run main_ppo as a child process: output tee, hard timeout, peak memory, and cleanup of *our* Ray.

Ray's local cluster (GCS, raylet, workers, actors) is started by the driver and lives in its
process tree, but outlives a killed driver as orphans. So while the run is alive we keep sampling
its whole process tree (from ``/proc``, Linux), remember every ``(pid, start time)`` we saw, and
afterwards terminate the survivors among them, plus any process whose command line mentions the
run's private ``RAY_TMPDIR``. Nothing else on the machine is touched (no ``ray stop``, which would
also stop other people's clusters).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, TextIO

PAGE = os.sysconf("SC_PAGE_SIZE")

# A traceback printed by one of the run's Ray actors or vLLM processes: Ray prefixes their output
# with "(Name pid=N...)". A dead vLLM worker makes main_ppo hang instead of exit, so a watchdog
# that stops the run at the first such line turns a silent timeout into a fast, readable failure.
_WORKER_TRACEBACK = re.compile(r"^\(.*pid=\d+.*\).*Traceback \(most recent call last\)")


def worker_traceback(line: str) -> Optional[str]:
    """``run_logged``'s ``watch``: the reason to stop the run, or None."""
    if _WORKER_TRACEBACK.search(line):
        return f"a worker process printed a traceback: {line.strip()[:200]}"
    return None


def _stat(pid: int) -> Optional[tuple[int, int]]:
    """(ppid, start time in clock ticks) of ``pid``, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()
    return int(fields[1]), int(fields[19])


def _rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def process_tree(root: int) -> dict[int, int]:
    """{pid: start time} of ``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for pid in _all_pids():
        st = _stat(pid)
        if st:
            children.setdefault(st[0], []).append(pid)
            starts[pid] = st[1]
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in starts and pid not in tree:
            tree[pid] = starts[pid]
            todo.extend(children.get(pid, []))
    return tree


@dataclass
class RunResult:
    returncode: Optional[int]
    timed_out: bool
    wall_s: float
    peak_tree_rss_mb: float
    log_path: Path
    leftovers_killed: int = 0
    lines: list[str] = field(default_factory=list)
    seen: dict[int, int] = field(default_factory=dict)  # every (pid: start time) of the run's tree
    aborted: Optional[str] = None  # why ``watch`` stopped the run early


class _TreeWatcher(threading.Thread):
    """Samples the run's process tree: remembers every process and the peak total RSS."""

    def __init__(self, root: int, interval: float = 0.5):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.seen: dict[int, int] = {}
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def sample(self) -> None:
        tree = process_tree(self.root)
        self.seen.update(tree)
        self.peak = max(self.peak, sum(_rss_bytes(pid) for pid in tree))

    def stop(self) -> None:
        self._stop_event.set()


def ours_alive(seen: dict[int, int], marker: Optional[str]) -> list[int]:
    """Live processes that we saw in the run's tree (same pid *and* start time), or that name ``marker``."""
    pids = []
    for pid in _all_pids():
        st = _stat(pid)
        if st is None or pid == os.getpid():
            continue
        if seen.get(pid) == st[1] or (marker and marker in _cmdline(pid)):
            pids.append(pid)
    return pids


def cleanup(seen: dict[int, int], marker: Optional[str], grace_s: float = 5.0) -> int:
    """Terminate the run's surviving processes (SIGTERM, then SIGKILL); return how many were found."""
    victims = ours_alive(seen, marker)
    found = len(victims)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in victims:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace_s
        while time.time() < deadline and ours_alive(seen, marker):
            time.sleep(0.2)
        victims = ours_alive(seen, marker)
        if not victims:
            break
    return found


def run_logged(cmd: list[str], env: dict, log_path: Path, timeout_s: float, marker: str,
               echo: Optional[Callable[[str], Optional[str]]] = None, out: TextIO = sys.stdout,
               cwd: Optional[str] = None, watch: Optional[Callable[[str], Optional[str]]] = None) -> RunResult:
    """Run ``cmd`` in its own session; tee output to ``log_path`` (and ``echo(line)`` to ``out`` when it
    returns text); interrupt it after ``timeout_s``, or as soon as ``watch(line)`` returns a reason
    (e.g. :func:`worker_traceback`); always clean up its processes.

    The output is pumped by a thread, so a leftover Ray process that still holds the pipe cannot
    block us after the driver exited: cleanup kills it, which closes the pipe.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    lines: list[str] = []
    timed_out = threading.Event()
    aborted: list[str] = []
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, start_new_session=True)
        watcher = _TreeWatcher(proc.pid)
        watcher.start()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                lines.append(line)
                if watch is not None and not aborted:
                    reason = watch(line)
                    if reason:
                        aborted.append(reason)
                        threading.Thread(target=_interrupt, args=(proc,), daemon=True).start()
                shown = echo(line) if echo is not None else None
                if shown:
                    out.write(shown)
                    out.flush()

        def on_timeout() -> None:
            timed_out.set()
            _interrupt(proc)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timer = threading.Timer(timeout_s, on_timeout)
        timer.start()
        try:
            proc.wait()
            reader.join(timeout=15)  # Ray flushes the last actor output shortly after the driver exits
        except KeyboardInterrupt:
            _interrupt(proc)
            raise
        finally:
            timer.cancel()
            watcher.sample()
            watcher.stop()
            killed = cleanup(watcher.seen, marker)
            reader.join(timeout=5)
    return RunResult(proc.returncode, timed_out.is_set(), time.time() - start, watcher.peak / 2**20, log_path,
                     killed, list(lines), dict(watcher.seen), aborted[0] if aborted else None)


def _interrupt(proc: subprocess.Popen) -> None:
    """SIGINT first (verl/Ray shut down cleanly), SIGKILL to the process group if that is not enough."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
