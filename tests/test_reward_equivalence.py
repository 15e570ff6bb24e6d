"""Equivalence: fast path, cache, killable worker pool, concurrency, fork safety, clean exit.

Pool behaviour under thread churn, load and killed workers: tests/test_reward_pool.py. The answer
families a careful human grader handles (currency, repeating decimals, ...) are at the end."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from rftt_plugin.reward import equivalence as eq
from rftt_plugin.reward.equivalence import check_equivalence, check_equivalence_async, fast_verdict
from rftt_plugin.reward.extract import GoldAnswer

HANG = "(x+1)^{100000}"  # sympy expands it during verify (minutes); only a kill stops it
SHORT_BOUND = 1.5        # per-call bound used by the hang tests (the default is 5 s)
MARGIN = 1.5             # allowed overshoot: kill + reap + queueing noise on a 2-core machine


def gold(text: str) -> GoldAnswer:
    return GoldAnswer((text,), "latex")


@pytest.fixture(scope="module", autouse=True)
def warm_pool():
    """Start the grader pool once (a warm worker imports math-verify once) and check health."""
    health = eq.grader_health()
    assert health["ok"], health
    yield


# ---------------------------------------------------------------------------------------------
# fast path
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pred, gold_text, expected", [
    ("1,000", "1000", True),
    ("025", "25", True),
    ("+7", "7", True),
    ("12", "13", False),                     # two plain integers: safe to say "not equal"
    ("\\dfrac{1}{2}", "\\frac{1}{2}", True),
    ("\\left( 1, 2 \\right)", "(1,2)", True),
    ("90^\\circ", "90", True),
    ("\\text{Evelyn}", "Evelyn", True),
    ("0.50", "0.5", True),
    ("0.5", "0.25", False),                  # exact arithmetic: decimals that differ are different
    ("\\frac{1}{2}", "0.5", True),           # plain rationals: exact arithmetic
    ("\\frac{3}{2}", "\\frac{2}{3}", False),
    ("-\\frac{6}{4}", "-1.5", True),
    ("0.33", "\\frac{1}{3}", False),         # a rounding of an exact fraction is not the fraction
    ("\\sqrt{4}", "2", None),
    ("10,\\!080", "10080", True),            # MATH's thousands separator
    ("1, 500", "1500", None),                  # a comma and a space: a list, not 1,500
    ("x = 5", "5", True),
    ("x = 6", "5", False),
    ("n+1", "k=n+1", None),                    # an equation gold is math-verify's business
    ("18\\text{ dollars}", "18", True),
    ("19\\text{ dollars}", "18", False),
    ("5.4", "5.4 \\text{ cents}", True),
    ("84, 69", "69,84", True),                 # sets of rationals: order-free
    ("\\{1,3,5\\}", "1,3,5", True),
    ("1, 3", "1,3,5", False),
    ("0.45, 1.68", "1.68,0.45", True),
    ("(6, 31, -1)", "(6,31,-1)", True),        # tuples: ordered
    ("(31, 6, -1)", "(6,31,-1)", False),
    ("(1,2),(3,4)", "(3,4),(1,2)", None),      # sets of tuples go to sympy
    ("x", "y", None),                        # never "not equal" on strings alone
    ("9^{9^{9^{9}}}", "5", False),           # astronomically larger than any plain number
    ("(10^{10})!", "123", False),
    ("2^{10}", "1024", True),                # small towers are evaluated exactly
    ("2^{2^{2^{2^{2}}}}", "2^{65536}", True),
    ("2^{2^{2^{2^{2}}}}", "2^{65535}", False),
    ("1^{9^{9^{9}}}", "1", None),            # base 1: no magnitude claim
])
def test_fast_verdict(pred, gold_text, expected):
    assert fast_verdict(pred, gold_text) is expected


def test_fast_path_never_calls_workers():
    eq.reset_grader_stats(clear_cache=True)
    assert check_equivalence("1,234", gold("1234")).method == "fast_path"
    assert check_equivalence("17", gold("18")).equivalent is False
    stats = eq.grader_stats()
    assert stats["fast_path_hits"] == 2 and stats["symbolic_calls"] == 0


# ---------------------------------------------------------------------------------------------
# symbolic path (in the workers)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pred, gold_text, expected", [
    ("0.5", "\\frac{1}{2}", True),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
    ("2+\\sqrt{3}", "\\sqrt{3}+2", True),
    ("\\{2, 1\\}", "1, 2", True),
    ("(0,9)\\cup(9,36)", "(0,9) \\cup (9,36)", True),
    ("[0,9)\\cup(9,36)", "(0,9) \\cup (9,36)", False),
    ("(6, 31, -1)", "(6,31,-1)", True),
    ("(31, 6, -1)", "(6,31,-1)", False),      # tuples are ordered
    ("x=5", "5", True),
    ("n+1", "k=n+1", True),                    # gold guides: an equation gold accepts its rhs
    ("5\\text{ cm}", "5", True),
    ("10", "10\\%", True),
    ("0.1", "10\\%", True),
    ("1", "100\\%", True),
    ("\\frac{1}{2004!}", "\\frac{1}{2006!}", False),   # math-verify alone says equal (rounding)
    ("0.0000673", ".0000672", False),                 # math-verify alone says equal (rounding)
    ("\\frac{100000001}{100000000}", "1", False),
    ("0.333333", "\\frac{1}{3}", False),             # a 6-digit rounding is not the exact value
    ("0.707107", "\\frac{\\sqrt{2}}{2}", False),      # nor of an irrational one (symbolic path)
    ("0.5", "\\frac{\\sqrt{4}}{4}", True),            # a decimal that *is* the exact value
    ("\\pm 2021", "2021", False),
    ("3\\sqrt{2}", "\\sqrt{18}", True),
    ("\\frac{3}{2}", "\\frac{2}{3}", False),
])
def test_symbolic(pred, gold_text, expected):
    verdict = check_equivalence(pred, gold(gold_text))
    assert verdict.equivalent is expected, verdict
    assert not verdict.timed_out


@pytest.mark.parametrize("pred, gold_text", [
    ("9^{9^{9^{9}}}", "x+1"), ("(10^{10})!", "\\frac{1}{2}"), ("100000000!", "p-q"),
    ("(10^{10})! - (10^{10})! + 5", "n"), ("10^{-10^{10}}", "0.5"),
])
def test_astronomical_answers_are_refused_without_sympy(pred, gold_text):
    start = time.perf_counter()
    verdict = check_equivalence(pred, gold(gold_text))
    assert verdict.method == "too_large" and not verdict.equivalent and not verdict.timed_out
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("pred, gold_text", [("2^{100000}", "4^{50000}"), ("1^{10^{10}}", "1"),
                                             ("100000!", "100000!")])
def test_large_but_tractable_answers_still_compare(pred, gold_text):
    assert check_equivalence(pred, gold(gold_text)).equivalent


def test_cache_hits_are_counted():
    eq.reset_grader_stats(clear_cache=True)
    first = check_equivalence("\\sqrt{\\frac{1}{4}}", gold("0.5"))
    second = check_equivalence("\\sqrt{\\frac{1}{4}}", gold("0.5"))
    assert first.method == "symbolic" and second.method == "cache"
    assert first.equivalent and second.equivalent
    stats = eq.grader_stats()
    assert stats["cache_hits"] == 1 and stats["symbolic_calls"] == 1 and stats["cache_size"] == 1


def test_parse_failures_are_counted():
    eq.reset_grader_stats(clear_cache=True)
    verdict = check_equivalence("\\frac{", gold("\\frac{1}{2}"))
    assert not verdict.equivalent and verdict.parse_failed
    assert eq.grader_stats()["parse_failures"] == 1


def test_no_answer_and_too_long():
    assert check_equivalence(None, gold("1")).method == "no_answer"
    assert check_equivalence("  \x00 ", gold("1")).method == "no_answer"
    assert check_equivalence("1" * 5000, gold("1")).method == "too_long"
    assert check_equivalence("1", GoldAnswer((), "unusable")).method == "no_gold"


# ---------------------------------------------------------------------------------------------
# hard time bound
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_hang_is_killed_within_bound_and_pool_recovers():
    eq.reset_grader_stats(clear_cache=True)
    start = time.perf_counter()
    verdict = check_equivalence(HANG, gold("x+1"), timeout_s=SHORT_BOUND)
    elapsed = time.perf_counter() - start
    assert verdict.timed_out and not verdict.equivalent and verdict.method == "timeout"
    assert verdict.status == "timeout" and not verdict.graded    # the work overran, not the queue
    assert elapsed < SHORT_BOUND + MARGIN, elapsed
    stats = eq.grader_stats()
    assert stats["timeouts"] == 1 and stats["worker_restarts"] == 1
    # the replacement serves the next item; the timeout is cached (no second 1.5 s stall)
    assert check_equivalence("\\sqrt{0.25}", gold("0.5")).equivalent
    again = check_equivalence(HANG, gold("x+1"), timeout_s=SHORT_BOUND)
    assert again.timed_out and again.method == "cache"


@pytest.mark.slow
def test_hang_with_default_bound_through_compute_score():
    from rftt_plugin.reward import compute_score

    eq.reset_grader_stats(clear_cache=True)
    bound = eq.get_config().timeout_s
    start = time.perf_counter()
    result = compute_score("math", "<output>\n\\boxed{(x+y+z)^{300}}\n</output>", "x^2")
    elapsed = time.perf_counter() - start
    assert result["timed_out"] and not result["acc"] and result["score"] == pytest.approx(0.1)
    assert elapsed < bound + MARGIN, elapsed


@pytest.mark.slow
def test_pool_recovers_from_dead_workers():
    import signal

    check_equivalence("\\sqrt{12.25}", gold("3.5"))
    pool = eq._state.pool
    size = len(pool.worker_pids())
    for pid in pool.worker_pids():
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    eq.reset_grader_stats(clear_cache=True)
    verdicts = [check_equivalence(f"\\sqrt{{{k * k}}}", gold(f"{k}")) for k in range(1, 6)]
    # every worker killed while idle: the pool is rebuilt or refilled, nothing is lost ...
    assert all(v.equivalent for v in verdicts), verdicts
    # ... and the pool is whole again, with live (not zombie) workers
    deadline = time.monotonic() + 10
    while len(eq._state.pool.worker_pids()) < size and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = eq._state.pool.worker_pids()
    # at least the old size (pebble may still hold a replacement that is being retired, or an
    # overflow worker for an item that ran long on a loaded machine), and every one alive
    assert len(pids) >= size and all(_alive(pid) for pid in pids), (size, pids)


# ---------------------------------------------------------------------------------------------
# concurrency
# ---------------------------------------------------------------------------------------------

CASES = [("0.5", "\\frac{1}{2}", True), ("\\frac{3}{2}", "1.5", True), ("\\sqrt{4}", "2", True),
         ("2x+2", "2(x+1)", True), ("\\frac{1}{3}", "0.3", False), ("x^2", "2x", False),
         ("\\pi", "3.14", False), ("(1,2)", "(2,1)", False)]


@pytest.mark.slow
def test_threads():
    eq.reset_grader_stats(clear_cache=True)
    errors: list = []

    def work(offset: int) -> None:
        for i in range(len(CASES)):
            pred, g, expected = CASES[(i + offset) % len(CASES)]
            verdict = check_equivalence(pred, gold(g))
            if verdict.equivalent is not expected:
                errors.append((pred, g, verdict))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors


@pytest.mark.slow
async def test_asyncio_does_not_block_the_loop():
    eq.reset_grader_stats(clear_cache=True)
    ticks = 0
    stop = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    # this machine's tick rate right now, with no grading (other jobs may share the cores)
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.5)
    idle_rate = ticks / 0.5
    ticks = 0
    start = time.monotonic()
    hang = asyncio.create_task(check_equivalence_async(HANG, gold("x-1"), timeout_s=SHORT_BOUND))
    verdicts = await asyncio.gather(*(check_equivalence_async(p, gold(g)) for p, g, _ in CASES))
    assert [v.equivalent for v in verdicts] == [e for _, _, e in CASES], verdicts
    assert (await hang).timed_out
    elapsed = time.monotonic() - start
    stop.set()
    await task
    # the loop kept running during the hang (a blocked loop would tick about once)
    assert elapsed >= SHORT_BOUND and ticks >= 0.5 * idle_rate * elapsed, (ticks, idle_rate, elapsed)


def _child_check(queue) -> None:
    from rftt_plugin.reward.equivalence import check_equivalence as check, configure, grader_stats

    configure(workers=1)  # keep the test within two busy grader processes on a shared machine
    verdict = check("\\sqrt{2.25}", GoldAnswer(("1.5",), "number"))
    queue.put((verdict.equivalent, verdict.method, grader_stats()["worker_starts"], os.getpid()))


@pytest.mark.slow
def test_fork_child_builds_its_own_pool():
    check_equivalence("\\sqrt{0.25}", gold("0.5"))      # the parent's pool exists
    parent_pool = eq._state.pool
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_check, args=(queue,))
    child.start()
    equivalent, method, starts, pid = queue.get(timeout=60)
    child.join(timeout=30)
    assert child.exitcode == 0
    assert equivalent and method == "symbolic" and starts >= 1 and pid != os.getpid()
    assert eq._state.pool is parent_pool                  # the parent's pool is untouched
    assert check_equivalence("\\sqrt{1/4}", gold("0.5")).equivalent


@pytest.mark.slow
def test_many_processes_at_once(monkeypatch):
    monkeypatch.setenv("RFTT_GRADER_WORKERS", "1")   # each spawned process owns a one-worker pool
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.map(_spawned_check, [("\\sqrt{0.25}", "0.5"), ("\\sqrt{9}", "3"), ("\\sqrt{5}", "3")])
    assert results == [True, True, False]


def _spawned_check(pair) -> bool:
    from rftt_plugin.reward.equivalence import is_equivalent

    return is_equivalent(pair[0], GoldAnswer((pair[1],), "latex"))


@pytest.mark.slow
def test_interpreter_exit_does_not_hang_and_kills_workers():
    code = textwrap.dedent(f"""
        import threading, time
        from rftt_plugin.reward import equivalence as eq
        from rftt_plugin.reward.extract import GoldAnswer
        assert eq.is_equivalent("\\\\sqrt{{4}}", GoldAnswer(("2",), "number"))
        print(" ".join(str(pid) for pid in eq._state.pool.worker_pids()), flush=True)
        t = threading.Thread(target=eq.check_equivalence, args=({HANG!r}, GoldAnswer(("x",), "latex")),
                             kwargs={{"timeout_s": 60}}, daemon=True)
        t.start()
        time.sleep(0.5)   # exit while a worker is stuck in sympy
    """)
    start = time.perf_counter()
    env = {**os.environ, "RFTT_GRADER_WORKERS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 15, elapsed
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 1 + eq.get_config().overflow_workers    # the worker and the overflow ones
    time.sleep(0.5)
    for pid in pids:
        assert not _alive(pid), f"grader process {pid} outlived its parent"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_health_reports_versions():
    health = eq.grader_health(selftest=False)
    assert health["antlr4_runtime"] and health["antlr4_supported"]
    assert health["math_verify"] and health["latex2sympy2_extended"]


def test_configure_validates():
    with pytest.raises(ValueError):
        eq.configure(workers=0)
    with pytest.raises(ValueError):
        eq.configure(timeout_s=-1)
    with pytest.raises(ValueError):
        eq.configure(queue_timeout_s=0)
    assert eq.get_config().workers == 2


# ---------------------------------------------------------------------------------------------
# answer families (issue 15): expectations worked by hand / with plain Fraction arithmetic
# ---------------------------------------------------------------------------------------------

from fractions import Fraction  # noqa: E402

from rftt_plugin.reward.answer_match import clean_answer, exact_int  # noqa: E402


@pytest.mark.parametrize("text, value", [
    ("0.\\overline{3}", Fraction(1, 3)),              # x = 0.333..., 10x - x = 3
    ("0.1\\overline{6}", Fraction(1, 6)),             # 0.1666... = 1/10 + 6/90
    ("0.\\overline{142857}", Fraction(1, 7)),
    ("1.\\overline{27}", Fraction(14, 11)),           # 1 + 27/99 = 1 + 3/11
    ("-0.\\overline{09}", Fraction(-1, 11)),
    ("0.\\dot{6}", Fraction(2, 3)),
    ("0.333\\ldots", Fraction(1, 3)),
    ("0.1666...", Fraction(1, 6)),
    ("0.\\overline{9}", Fraction(1)),
])
def test_repeating_decimals_become_exact_fractions(text, value):
    cleaned = clean_answer(text)
    expected = str(value.numerator) if value.denominator == 1 else (
        f"{'-' if value < 0 else ''}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}")
    assert cleaned == expected


@pytest.mark.parametrize("text, cleaned", [
    # a currency sign becomes the unit it is; units stay (they are compared, not deleted)
    ("\\$18.50", "18.50\\text{ dollars}"), ("\\text{\\$}18.5", "18.5\\text{ dollars}"),
    ("\\$5\\text{ dollars}", "5\\text{ dollars}"), ("USD 40", "40\\text{ dollars}"), ("18.5 dollars", "18.5 dollars"),
    ("12 square feet", "12 square feet"), ("5\\,\\mbox{cm}^2", "5\\,\\mbox{cm}^2"),
    ("\\text{\\textbf{Evelyn}}", "\\text{Evelyn}"), ("\\textbf{\\text{7}}", "7"), ("\\text{Evelyn}", "\\text{Evelyn}"),
    ("2(1,2,3)", "(2,4,6)"), ("-3\\left(1,0,2\\right)", "(-3,0,-6)"), ("\\frac{1}{2}(1, -1)", "(\\frac{1}{2},-\\frac{1}{2})"),
    # left alone: not a unit, not a scalar, not a repeating decimal
    ("3 or 4", "3 or 4"), ("3 \\text{ or } 4", "3 \\text{ or } 4"), ("2 x", "2 x"), ("f(1,2)", "f(1,2)"),
    ("(0,9)\\cup(9,36)", "(0,9)\\cup(9,36)"), ("0.3", "0.3"), ("x \\text{ cm}", "x \\text{ cm}"),
])
def test_clean_answer(text, cleaned):
    assert clean_answer(text) == cleaned


def test_exact_towers_match_plain_python():
    assert exact_int("2^{2^{2^{2^{2}}}}") == 2 ** 65536
    assert exact_int("3^{3^{3}}") == 7625597484987
    assert exact_int("(2^{3})^{2}") == 64 and exact_int("4!") == 24 and exact_int("2^{3!}") == 64
    assert exact_int("9^{9^{9^{9}}}") is None and exact_int("10^{200000}") is None   # too many digits


@pytest.mark.parametrize("pred, gold_text, expected", [
    ("\\$18.5", "18.50", True), ("18.5 dollars", "\\$18.50", True), ("\\$18.05", "18.50", False),
    ("\\$1,250", "1250", True), ("\\$1,250.50", "1250", False),
    ("12 apples", "12", True), ("13 apples", "12", False),
    ("0.\\overline{3}", "\\frac{1}{3}", True), ("0.\\overline{3}", "\\frac{3}{10}", False), ("0.33", "0.\\overline{3}", False),
    ("2(1,2,3)", "(2,4,6)", True), ("2(1,2,3)", "(2,4,5)", False),
    ("\\frac{1}{\\sqrt{2}}(1,1)", "\\left(\\frac{\\sqrt{2}}{2},\\frac{\\sqrt{2}}{2}\\right)", True),
    ("\\sqrt{2}(1,1)", "(1,1)", False),
    ("3\\begin{pmatrix}1\\\\-2\\end{pmatrix}", "\\begin{pmatrix}3\\\\-6\\end{pmatrix}", True),
    ("3\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}3\\\\-6\\end{pmatrix}", False),
    ("0.142857", "\\frac{1}{7}", False), ("1.414214", "\\sqrt{2}", False), ("3.141593", "\\pi", False),
    ("0.125", "\\frac{1}{8}", True), ("\\frac{7}{4}", "1.75", True),
    ("\\text{\\textbf{Evelyn}}", "\\text{Evelyn}", True), ("\\text{\\textbf{Amy}}", "\\text{Evelyn}", False),
    ("\\textbf{\\text{(C)}}", "\\text{(C)}", True), ("\\text{\\textbf{6}}", "5", False),
    ("2^{2^{2^{2^{2}}}}", "2^{65536}", True), ("2^{2^{2^{2}}}", "65537", False), ("3^{3^{3}}", "27^{3}", False),
])
def test_families_through_the_grader(pred, gold_text, expected):
    from rftt_plugin.reward import normalize_gold

    # verdicts, not the bound: 60 s so that a loaded machine cannot turn a slow check into a timeout
    verdict = check_equivalence(pred, normalize_gold(gold_text), timeout_s=60)
    assert verdict.equivalent is expected, verdict
    assert not verdict.timed_out
