"""The grader's worker pool under the ways verl and users actually call it.

- many short-lived thread pools (verl's reward loop), each thread gone right after its batch:
  every equivalent pair must still be graded correct (the old pool's workers died with the thread
  that first used it: PR_SET_PDEATHSIG fires on the forking *thread's* exit);
- asyncio from fresh event loops on fresh threads;
- a worker killed while idle and while busy;
- no zombie children at any point (checked from /proc, not from the pool's own bookkeeping);
- load: 200 concurrent calls, 4 of them hang bait, 2 workers: the hang bait times out, every
  quick item gets its verdict; a call that cannot get a worker ends at the queue limit as
  ``overloaded``, told apart from ``timeout``.

The expected verdicts are known by construction: ``\\frac{(k+o)x^2+k}{x}`` is ``(k+o)x+\\frac{k}{x}``
for every k (divide each term by x), and ``\\sqrt{m^2}`` is m for m >= 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rftt_plugin.reward import equivalence as eq
from rftt_plugin.reward.extract import GoldAnswer

HANG = "(x+1)^{100000}"     # sympy expands it for minutes against this gold; only a kill stops it
HANG_GOLD = "x+1"
# Correctness checks (not the bound) get a generous bound: other jobs may load this machine's
# cores many times over, and a slow answer must not read as a lost worker. The bound itself is
# tested by the burst test here and by tests/test_reward_equivalence.py.
ROOMY = 30.0


def gold(text: str) -> GoldAnswer:
    return GoldAnswer((text,), "latex")


def pair(k: int) -> tuple[str, str]:
    """An equivalent pair that needs sympy (the issue's example, one per k so the cache is no help)."""
    return f"\\frac{{({k}+o)x^2+{k}}}{{x}}", f"({k}+o)x+\\frac{{{k}}}{{x}}"


def zombie_children(pid: int) -> list[int]:
    """Children of ``pid`` in state Z, read straight from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z" and int(fields[1]) == pid:
            out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytest.fixture(autouse=True)
def warm_pool():
    """Tests time calls against a running pool; building one (import + fork) is not part of it."""
    assert eq.check_equivalence("\\sqrt{121}", gold("11")).equivalent
    yield


# A fresh interpreter, so that the pool is built by the first short-lived executor thread.
THREAD_CHURN = textwrap.dedent("""
    import json, os, sys, time
    from concurrent.futures import ThreadPoolExecutor
    sys.path.insert(0, {tests!r})
    from test_reward_pool import pair, zombie_children
    from rftt_plugin.reward import equivalence as eq
    from rftt_plugin.reward.extract import GoldAnswer

    def grade(k):
        pred, g = pair(k)
        v = eq.check_equivalence(pred, GoldAnswer((g,), "latex"), timeout_s={roomy})
        return v.equivalent, v.method

    results, zombies = [], []
    for batch in range({batches}):
        with ThreadPoolExecutor(3) as ex:                      # a fresh pool, its threads exit after
            results += list(ex.map(grade, range(batch * {per}, (batch + 1) * {per})))
        time.sleep(0.3)                                        # let a death signal land, if any
        zombies += zombie_children(os.getpid())
    print(json.dumps({{"results": results, "zombies": zombies, "workers": eq._state.pool.worker_pids(),
                      "stats": eq.grader_stats()}}))
""")


@pytest.mark.slow
def test_fresh_thread_pools_grade_every_equivalent_pair_correct_and_leave_no_zombies():
    import json

    code = THREAD_CHURN.format(tests=os.path.dirname(__file__), batches=5, per=12, roomy=ROOMY)
    env = {**os.environ, "RFTT_GRADER_WORKERS": "2"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    wrong = [(i, r) for i, r in enumerate(out["results"]) if not r[0]]
    assert not wrong, (wrong, out["stats"], proc.stderr[-2000:])
    assert all(method == "symbolic" for _, method in out["results"])   # really went through the pool
    assert out["zombies"] == []
    assert out["stats"]["worker_errors"] == 0 and out["stats"]["worker_deaths"] == 0
    time.sleep(0.5)
    assert not [pid for pid in out["workers"] if alive(pid)], "workers outlived their parent"


BUILD_IN_A_THREAD_THEN_WAIT = textwrap.dedent("""
    import sys, threading, time
    from rftt_plugin.reward import equivalence as eq
    from rftt_plugin.reward.extract import GoldAnswer
    t = threading.Thread(target=eq.check_equivalence, args=("\\\\sqrt{{9}}", GoldAnswer(("3",), "latex")))
    t.start(); t.join()                      # the pool was built from a thread that is now gone
    print(" ".join(map(str, eq._state.pool.worker_pids())), flush=True)
    time.sleep(60)
""")


@pytest.mark.slow
def test_workers_outlive_the_building_thread_but_not_a_killed_parent():
    proc = subprocess.Popen([sys.executable, "-c", BUILD_IN_A_THREAD_THEN_WAIT.format()], stdout=subprocess.PIPE,
                            text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert pids
        time.sleep(1.0)
        assert all(alive(pid) for pid in pids), "a worker died with the thread that built the pool"
        proc.kill()                                  # SIGKILL: no atexit, no cleanup of ours
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in pids if alive(pid)], "workers outlived a killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.slow
def test_in_process_fresh_executors_and_zombie_scan():
    eq.reset_grader_stats(clear_cache=True)
    results = []
    for batch in range(4):
        with ThreadPoolExecutor(3) as ex:
            results += list(ex.map(lambda k: eq.check_equivalence(pair(k)[0], gold(pair(k)[1]), timeout_s=ROOMY),
                                   range(1000 + batch * 9, 1000 + (batch + 1) * 9)))
    assert all(v.equivalent and v.method == "symbolic" for v in results), results
    assert zombie_children(os.getpid()) == []
    assert all(alive(pid) for pid in eq._state.pool.worker_pids())


@pytest.mark.slow
def test_asyncio_from_fresh_loops_on_fresh_threads():
    eq.reset_grader_stats(clear_cache=True)
    outcomes: list = []

    def run_loop(base: int) -> None:
        async def main():
            return await asyncio.gather(*(eq.check_equivalence_async(pair(k)[0], gold(pair(k)[1]), timeout_s=ROOMY)
                                          for k in range(base, base + 8)))
        outcomes.extend(asyncio.run(main()))

    for base in (2000, 2100, 2200):
        t = threading.Thread(target=run_loop, args=(base,))
        t.start()
        t.join(timeout=120)
        assert not t.is_alive()
    assert len(outcomes) == 24 and all(v.equivalent for v in outcomes), outcomes
    assert zombie_children(os.getpid()) == []


@pytest.mark.slow
def test_worker_killed_while_busy_and_while_idle():
    check_equivalence_warm = eq.check_equivalence("\\sqrt{81}", gold("9"))
    assert check_equivalence_warm.equivalent
    pool = eq._state.pool
    size = len(pool.worker_pids())
    eq.reset_grader_stats(clear_cache=True)

    # busy: a hang item is running; kill every worker a moment later
    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault("v", eq.check_equivalence(HANG, gold(HANG_GOLD),
                                                                                      timeout_s=3.0)))
    t.start()
    time.sleep(0.5)
    for pid in pool.worker_pids():
        os.kill(pid, signal.SIGKILL)
    t.join(timeout=30)
    assert not result["v"].equivalent               # a hang that died is not "equal"

    # idle: kill one worker with nothing running
    time.sleep(0.3)
    victim = eq._state.pool.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    time.sleep(0.3)
    verdicts = [eq.check_equivalence(pair(k)[0], gold(pair(k)[1]), timeout_s=ROOMY) for k in range(3000, 3006)]
    assert all(v.equivalent for v in verdicts), verdicts
    deadline = time.monotonic() + 10
    while len(eq._state.pool.worker_pids()) < size and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = eq._state.pool.worker_pids()
    assert len(pids) == size and victim not in pids and all(alive(p) for p in pids)
    assert zombie_children(os.getpid()) == []


def _run_concurrently(items, bound):
    latencies = [0.0] * len(items)
    verdicts: list = [None] * len(items)

    def one(i: int) -> None:
        start = time.monotonic()
        verdicts[i] = eq.check_equivalence(items[i][0], gold(items[i][1]), timeout_s=bound)
        latencies[i] = time.monotonic() - start

    with ThreadPoolExecutor(len(items)) as ex:
        list(ex.map(one, range(len(items))))
    return latencies, verdicts


@pytest.mark.slow
def test_burst_with_slow_items_gives_every_quick_item_its_verdict():
    """200 concurrent calls, 4 of them hang bait, 2 workers. The bound is on the work: the hang
    bait is killed as ``timeout``; the quick items wait their turn (queueing is not the item's
    fault) and each gets its verdict, or at worst ``overloaded``, never ``timeout`` and never a
    wrong verdict; the slow items must not stop the quick ones."""
    cfg = eq.get_config()
    assert cfg.workers == 2
    eq.reset_grader_stats(clear_cache=True)
    items = [(f"\\sqrt{{{k * k}}}", str(k), True) for k in range(4000, 4196)]
    for i, slot in enumerate((2, 10, 20, 30)):
        items.insert(slot, (f"(x+{i + 1})^{{100000}}", f"x+{i + 1}", False))
    latencies, verdicts = _run_concurrently(items, cfg.timeout_s)
    hang = [v for it, v in zip(items, verdicts) if not it[2]]
    quick = [v for it, v in zip(items, verdicts) if it[2]]
    assert all(v.status == "timeout" and v.method == "timeout" for v in hang), hang
    assert all(v.status in ("graded", "overloaded") for v in quick), [v for v in quick if v.status != "graded"][:5]
    assert all(v.equivalent for v in quick if v.graded)
    assert sum(v.graded for v in quick) >= len(quick) // 2, eq.grader_stats()
    assert max(latencies) <= cfg.queue_timeout_s + cfg.timeout_s + 2.0, sorted(latencies)[-5:]
    assert zombie_children(os.getpid()) == []


@pytest.mark.slow
def test_waiting_is_not_work_a_trivial_item_behind_a_slow_one_gets_its_verdict():
    """Issue 26: the bound stops runaway work, it does not punish waiting. One worker is held by
    hang bait for 3 s; a trivial comparison with a 1 s bound queues behind it, waits longer than
    its own bound, and still gets its verdict (before: ``queue_timeout`` at 1 s, scored wrong)."""
    before = eq.get_config()
    eq.configure(workers=1, overflow_workers=0)
    try:
        assert eq.check_equivalence("\\sqrt{196}", gold("14"), timeout_s=ROOMY).equivalent   # pool up
        t = threading.Thread(target=eq.check_equivalence, args=("(x+8)^{100000}", gold("x+8")),
                             kwargs={"timeout_s": 3.0})
        t.start()
        time.sleep(0.3)                       # the hang item holds the only worker
        start = time.monotonic()
        verdict = eq.check_equivalence("\\sqrt{225}", gold("15"), timeout_s=1.0)
        waited = time.monotonic() - start
        t.join(timeout=60)
        assert verdict.graded and verdict.equivalent and verdict.method == "symbolic", verdict
        assert waited > 1.0, waited           # it waited past its own bound: the bound is on the work
    finally:
        eq.configure(workers=before.workers, overflow_workers=before.overflow_workers)


@pytest.mark.slow
def test_queue_wait_has_its_own_limit_and_is_reported_as_overload():
    """One worker, no overflow, busy with hang bait for its whole bound: calls behind it cannot
    start, so they end at the queue limit as ``overloaded`` (``queue_timeout``), distinct from the
    hang bait's ``timeout``; once the worker is free again, the same items get their verdicts."""
    before = eq.get_config()
    eq.configure(workers=1, overflow_workers=0, queue_timeout_s=0.5)
    try:
        assert eq.check_equivalence("\\sqrt{169}", gold("13"), timeout_s=ROOMY).equivalent   # pool up
        eq.reset_grader_stats(clear_cache=True)
        result: dict = {}
        t = threading.Thread(target=lambda: result.setdefault(
            "v", eq.check_equivalence("(x+9)^{100000}", gold("x+9"), timeout_s=4.0)))
        t.start()
        time.sleep(0.5)                       # the hang item holds the only worker
        queued = [(f"\\sqrt{{{k * k}}}", str(k), True) for k in range(5000, 5006)]
        latencies, verdicts = _run_concurrently(queued, ROOMY)
        t.join(timeout=60)
        assert result["v"].status == "timeout" and result["v"].timed_out
        assert all(v.status == "overloaded" and v.method == "queue_timeout" and not v.equivalent
                   for v in verdicts), verdicts
        assert all(v.timed_out for v in verdicts)                 # what older callers read
        assert max(latencies) < 0.5 + 2.0, latencies              # the queue limit, not the work bound
        assert eq.grader_stats()["queue_timeouts"] == len(queued)
        # load, not the item: nothing was cached, and the items grade once the worker is free
        eq.configure(queue_timeout_s=60.0)
        again = [eq.check_equivalence(p, gold(g), timeout_s=ROOMY) for p, g, _ in queued]
        assert all(v.graded and v.equivalent and v.method == "symbolic" for v in again), again
    finally:
        eq.configure(workers=before.workers, overflow_workers=before.overflow_workers,
                     queue_timeout_s=before.queue_timeout_s)


def _nice(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])   # field 19 of proc(5): nice


@pytest.mark.slow
def test_a_slow_items_worker_is_reniced_and_others_are_not():
    eq.shutdown()                                       # a fresh pool: every worker at our priority
    assert eq.check_equivalence("\\sqrt{144}", gold("12")).equivalent
    after = eq._state.pool.settings.renice_after_s
    t = threading.Thread(target=eq.check_equivalence, args=("(x+7)^{100000}", gold("x+7")),
                         kwargs={"timeout_s": after + 2.0})
    t.start()
    time.sleep(after + 0.8)
    nices = {pid: _nice(pid) for pid in eq._state.pool.worker_pids()}
    t.join(timeout=30)
    base = os.getpriority(os.PRIO_PROCESS, 0)          # this test may itself run under `nice`
    assert sorted(nices.values()) == [base] * (len(nices) - 1) + [min(19, base + 10)], nices


def test_exact_power_tower_through_the_service():
    assert eq.check_equivalence("2^{2^{2^{2^{2}}}}", gold("2^{65536}")).equivalent
    assert not eq.check_equivalence("2^{2^{2^{2^{2}}}}", gold("2^{65537}")).equivalent
    assert eq.check_equivalence("2^{2^{2^{2^{2}}}}", gold("2^{65536}")).method in ("fast_path", "cache")


@pytest.mark.slow
def test_daemonic_caller_can_grade():
    """A multiprocessing.Pool worker is daemonic; multiprocessing forbids it children by default."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as mp_pool:
        assert mp_pool.apply(_daemonic_check, ((pair(5000)[0], pair(5000)[1]),)) is True


def _daemonic_check(p) -> bool:
    from rftt_plugin.reward.equivalence import check_equivalence

    v = check_equivalence(p[0], GoldAnswer((p[1],), "latex"), timeout_s=ROOMY)
    return v.equivalent and v.method == "symbolic"
