"""Grader benchmark: our reward grader vs verl's math_verify and MATH scorers, in one run.

    python bench/grader.py [--data bench/data/grader_labelled.jsonl] [--traps bench/data/grader_traps.jsonl]
                           [--workers 2] [--timeout 5]

Every grader sees the same (response, gold string) pairs of the labelled set (built by
bench/make_grader_set.py) and of issue 27's trap families (bench/make_grader_traps.py: hand-labelled
traps with controls per family), and is driven by ``--workers`` client threads, as verl's reward loop calls
a synchronous ``compute_score`` from executor threads. Before timing, each grader's process pool is
started and warmed with one call, and our cache is cleared, so throughput is cold-cache. The
graders run ``--repeats`` times in rotating order and each grader's fastest run is reported, so a
burst of load from other jobs on the machine penalises no grader in particular.

Graders:
- ``rftt``: ``rftt_plugin.reward.compute_score`` (``--workers`` items at a time, pebble process pool,
  ``--timeout`` s bound on each item's work; waiting for a worker has its own limit);
- ``verl_math_verify``: ``verl.utils.reward_score.math_verify.compute_score`` (its spawn pool is
  given ``--workers`` processes instead of the hard-coded 4, for an equal footing; its own
  bound is 5 s signal alarms inside a 30 s outer timeout);
- ``verl_math``: ``verl.utils.reward_score.math_reward.compute_score`` (string normalisation).

``--burst`` runs only the load check of issue 17 instead: 200 concurrent calls, 4 of them hang
bait, ``--workers`` workers; it reports the latency distribution (every call must end within the
queue limit + the ``--timeout`` bound), and how many calls got a verdict, timed out (hang bait) or
were reported overloaded.

Reports accuracy, recall, specificity (also without the RFTT-protocol rows, where a correct value
appears but not in a box the protocol reads), timeouts, p50/p99/max latency and throughput, with
ratios to verl_math_verify, the per-category accuracy; precision and recall per trap family (and
the false positives) for rftt next to math-verify (verl_math_verify) from the same run; a
longest-input table (numbers of 10^2..10^6 digits, right and wrong, through each grader: the
longest answered correctly within the bound); and whether the targets are met.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(HERE, "data", "grader_labelled.jsonl")
DEFAULT_TRAPS = os.path.join(HERE, "data", "grader_traps.jsonl")
LONG_SIZES = (100, 1_000, 10_000, 100_000, 1_000_000)


@dataclass
class Run:
    name: str
    verdicts: list[bool] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    timeouts: int = 0
    wall_s: float = 0.0
    errors: int = 0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))
    return ordered[k]


def run_grader(name: str, fn, items: list[dict], workers: int) -> Run:
    """fn(item) -> (verdict, timed_out). Runs all items on ``workers`` threads, timing each call."""
    run = Run(name, [False] * len(items), [0.0] * len(items))

    def one(i: int) -> None:
        start = time.perf_counter()
        try:
            verdict, timed_out = fn(items[i])
        except Exception as exc:  # noqa: BLE001 - a crashing grader scores "not equivalent"
            print(f"  [{name}] item {items[i]['id']} raised {type(exc).__name__}: {exc}", file=sys.stderr)
            verdict, timed_out = False, False
            run.errors += 1
        run.latencies[i] = time.perf_counter() - start
        run.verdicts[i] = bool(verdict)
        run.timeouts += int(timed_out)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(len(items))))
    run.wall_s = time.perf_counter() - start
    return run


def metrics(run: Run, items: list[dict], keep=lambda item: True) -> dict:
    rows = [(v, it["label"]) for v, it in zip(run.verdicts, items) if keep(it)]
    tp = sum(v and y for v, y in rows)
    tn = sum((not v) and (not y) for v, y in rows)
    pos = sum(y for _, y in rows)
    neg = len(rows) - pos
    return {"n": len(rows), "accuracy": (tp + tn) / len(rows), "recall": tp / pos if pos else float("nan"),
            "specificity": tn / neg if neg else float("nan")}


def precision_recall(run: Run, items: list[dict], keep) -> dict:
    rows = [(v, it["label"]) for v, it in zip(run.verdicts, items) if keep(it)]
    tp = sum(v and y for v, y in rows)
    fp = sum(v and not y for v, y in rows)
    pos = sum(y for _, y in rows)
    return {"n": len(rows), "traps": len(rows) - pos, "controls": pos, "fp": fp, "tp": tp,
            "precision": tp / (tp + fp) if tp + fp else float("nan"), "recall": tp / pos if pos else float("nan")}


def long_number(digits: int) -> str:
    """A number with ``digits`` digits, no leading zero, not periodic in any short period."""
    body = "".join(str((i * i * 7 + i * 3 + 1) % 10) for i in range(digits - 1))
    return "9" + body


def longest_input(graders: dict, args) -> dict:
    """Each grader on numbers of 10^2..10^6 digits, boxed in a response, against the same number
    as gold (must be accepted) and against one with its last digit changed (must be refused).
    A size counts as answered when both verdicts are right and both calls ended within the bound
    (+ margin). A grader stops at its first size that fails (longer ones would only fail slower)."""
    out: dict = {}
    for name, fn in graders.items():
        rows = []
        for digits in LONG_SIZES:
            gold = long_number(digits)
            wrong = gold[:-1] + str((int(gold[-1]) + 1) % 10)
            row = {"digits": digits, "ok": True, "max_s": 0.0}
            for answer, label in ((gold, True), (wrong, False)):
                item = {"data_source": "math", "response": f"The answer is $\\boxed{{{answer}}}$.", "gold": gold}
                start = time.perf_counter()
                try:
                    verdict, _ = fn(item)
                except Exception:  # noqa: BLE001 - a crash is a wrong answer here
                    verdict = None
                elapsed = time.perf_counter() - start
                row["max_s"] = max(row["max_s"], elapsed)
                row["ok"] = row["ok"] and verdict is label and elapsed <= args.timeout + args.margin
            rows.append(row)
            if not row["ok"]:
                break
        answered = [r["digits"] for r in rows if r["ok"]]
        # the longest size up to which every size was answered
        longest = 0
        for r in rows:
            if not r["ok"]:
                break
            longest = r["digits"]
        out[name] = {"rows": rows, "longest_digits": longest, "answered": answered}
    return out


def _quiet_math_verify() -> None:
    """In verl's math-verify workers: its warnings echo the whole input (a megabyte for the
    longest-input rows); the timeouts are counted by the bench anyway."""
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)


def make_graders(args):
    from rftt_plugin.reward import compute_score, configure, grader_stats, reset_grader_stats

    configure(workers=args.workers, timeout_s=args.timeout)

    def rftt(item):
        result = compute_score(item["data_source"], item["response"], item["gold"])
        return result["acc"], result["timed_out"]

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import verl.utils.reward_score.math_verify as verl_mv
    from verl.utils.reward_score import math_reward as verl_math

    # verl hard-codes 4 spawn workers; give it the same number of processes as ours.
    verl_mv._pool = ProcessPoolExecutor(max_workers=args.workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_quiet_math_verify)

    def verl_math_verify(item):
        start = time.perf_counter()
        score = verl_mv.compute_score(item["response"], item["gold"])
        # verl swallows its own 5 s alarms; count calls that ran into one as timeouts
        return score == 1.0, time.perf_counter() - start >= 5.0

    def verl_math_scorer(item):
        return verl_math.compute_score(item["response"], item["gold"]) == 1.0, False

    def warm():
        reset_grader_stats(clear_cache=True)
        compute_score("math", "\\boxed{\\frac{1}{2}}", "0.5")
        verl_mv.compute_score("\\boxed{\\frac{1}{2}}", "0.5")
        verl_mv.compute_score("\\boxed{\\frac{1}{3}}", "0.5")
        reset_grader_stats(clear_cache=True)

    def cleanup():
        for proc in list(getattr(verl_mv._pool, "_processes", {}).values()):
            proc.kill()  # a worker stuck past verl's bound would block interpreter exit
        verl_mv._pool.shutdown(wait=False, cancel_futures=True)

    graders = {"rftt": rftt, "verl_math_verify": verl_math_verify, "verl_math": verl_math_scorer}
    return graders, warm, cleanup, grader_stats, reset_grader_stats


def burst(args) -> int:
    """200 concurrent calls, 4 of them hang bait: no call may run past the bound."""
    from rftt_plugin.reward import check_equivalence, configure, grader_stats, normalize_gold, reset_grader_stats

    configure(workers=args.workers, timeout_s=args.timeout, queue_timeout_s=args.queue_timeout)
    check_equivalence("\\sqrt{4}", normalize_gold("2"))           # build and warm the pool
    reset_grader_stats(clear_cache=True)
    items = [(f"\\sqrt{{{k * k}}}", str(k), True) for k in range(7000, 7196)]
    for i, slot in enumerate((2, 10, 20, 30)):
        items.insert(slot, (f"(x+{i + 1})^{{100000}}", f"x+{i + 1}", False))
    latencies = [0.0] * len(items)
    verdicts: list = [None] * len(items)

    def one(i: int) -> None:
        start = time.perf_counter()
        verdicts[i] = check_equivalence(items[i][0], normalize_gold(items[i][1]))
        latencies[i] = time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        list(pool.map(one, range(len(items))))
    wall = time.perf_counter() - start
    answered = [v for v in verdicts if v.graded]
    wrong = sum(v.equivalent != it[2] for v, it in zip(verdicts, items) if v.graded)
    limit = args.queue_timeout + args.timeout + args.margin
    over = sum(t > limit for t in latencies)
    quick_timeouts = sum(v.status == "timeout" for v, it in zip(verdicts, items) if it[2])
    print(f"burst: {len(items)} concurrent calls ({sum(not it[2] for it in items)} hang bait), "
          f"{args.workers} workers, work bound {args.timeout:g} s, queue limit {args.queue_timeout:g} s, "
          f"wall {wall:.1f} s, cpu_count={os.cpu_count()}")
    print(f"  latency p50 {statistics.median(latencies):.2f} s, p99 {_percentile(latencies, 0.99):.2f} s, "
          f"max {max(latencies):.2f} s; calls over queue limit + bound + {args.margin:g} s: {over}")
    statuses = statistics_counter(v.status for v in verdicts)
    print(f"  verdicts {len(answered)} (wrong {wrong}), statuses {statuses}, quick items timed out "
          f"{quick_timeouts}; counters {grader_stats()}")
    return 0 if over == 0 and wrong == 0 and quick_timeouts == 0 else 1


def statistics_counter(values) -> dict:
    from collections import Counter

    return dict(Counter(values))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--workers", type=int, default=2, help="worker processes per grader = client threads")
    parser.add_argument("--traps", default=DEFAULT_TRAPS, help="issue 27's trap families ('' to skip)")
    parser.add_argument("--timeout", type=float, default=5.0, help="our bound on one item's work (s)")
    parser.add_argument("--queue-timeout", type=float, default=60.0, help="our limit on waiting for a worker (s)")
    parser.add_argument("--no-long", action="store_true", help="skip the longest-input table")
    parser.add_argument("--margin", type=float, default=0.5, help="allowed overshoot of our bound (s)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per grader (rotating order; fastest kept)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    parser.add_argument("--burst", action="store_true", help="run only the 200-call load check (issue 17)")
    args = parser.parse_args(argv)
    if args.burst:
        return burst(args)

    with open(args.data, encoding="utf-8") as f:
        items = [{**json.loads(line), "set": "labelled"} for line in f]
    pos = sum(it["label"] for it in items)
    traps: list[dict] = []
    if args.traps:
        with open(args.traps, encoding="utf-8") as f:
            traps = [{**row, "set": "traps", "category": "trap:" + row["family"], "data_source": "math",
                      "protocol": False} for row in map(json.loads, f)]
        print(f"trap set: {len(traps)} rows ({sum(not t['label'] for t in traps)} traps, "
              f"{sum(t['label'] for t in traps)} controls) in {len({t['family'] for t in traps})} families")
    print(f"labelled set: {len(items)} pairs ({pos} equivalent, {len(items) - pos} not), "
          f"{sum(it['protocol'] for it in items)} protocol rows; {args.workers} workers/threads per grader; "
          f"cpu_count={os.cpu_count()}; python {sys.version.split()[0]}")

    graders, warm, cleanup, grader_stats, reset_grader_stats = make_graders(args)
    names = list(graders)
    all_runs: dict[str, list[Run]] = {name: [] for name in names}
    stats: dict = {}
    try:
        warm()
        # Other jobs may share the machine: run the graders in rotating order, `repeats` times,
        # and keep each grader's fastest run (the one least disturbed).
        for rep in range(args.repeats):
            order = names[rep % len(names):] + names[: rep % len(names)]
            for name in order:
                print(f"run {rep + 1}/{args.repeats}: {name} ...", flush=True)
                if name == "rftt":
                    reset_grader_stats(clear_cache=True)
                all_runs[name].append(run_grader(name, graders[name], items, args.workers))
                if name == "rftt" and not stats:
                    stats = grader_stats()
        warm_run = run_grader("rftt (warm cache)", graders["rftt"], items, args.workers)
        # the trap families and the longest-input probe: every grader once, same process, same run
        trap_runs = {}
        if traps:
            reset_grader_stats(clear_cache=True)
            for name in names:
                print(f"traps: {name} ...", flush=True)
                trap_runs[name] = run_grader(name, graders[name], traps, args.workers)
        long_table = {}
        if not args.no_long:
            print("longest input ...", flush=True)
            long_table = longest_input({n: graders[n] for n in ("rftt", "verl_math_verify")}, args)
    finally:
        cleanup()
    runs = {name: min(rs, key=lambda r: r.wall_s) for name, rs in all_runs.items()}
    for name, rs in all_runs.items():
        if any(r.verdicts != rs[0].verdicts for r in rs):
            print(f"WARNING: {name} gave different verdicts across repeats (timeouts under load?)")
        print(f"{name}: wall times of the runs: {', '.join(f'{r.wall_s:.1f}s' for r in rs)}")

    base = runs["verl_math_verify"]
    base_tput = len(items) / base.wall_s
    header = (f"{'grader':<18} {'acc':>6} {'recall':>6} {'spec':>6} {'acc*':>6} {'timeouts':>8} "
              f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'resp/s':>8} {'x tput':>7} {'x acc':>6}")
    print()
    print(header)
    print("-" * len(header))
    table = {}
    for run in list(runs.values()) + [warm_run]:
        m = metrics(run, items)
        m_np = metrics(run, items, keep=lambda it: not it["protocol"])
        tput = len(items) / run.wall_s
        row = {**m, "accuracy_no_protocol": m_np["accuracy"], "timeouts": run.timeouts,
               "p50_ms": 1000 * statistics.median(run.latencies), "p99_ms": 1000 * _percentile(run.latencies, 0.99),
               "max_ms": 1000 * max(run.latencies), "throughput": tput, "errors": run.errors}
        table[run.name] = row
        base_acc = metrics(base, items)["accuracy"]
        print(f"{run.name:<18} {m['accuracy']:>6.3f} {m['recall']:>6.3f} {m['specificity']:>6.3f} "
              f"{m_np['accuracy']:>6.3f} {run.timeouts:>8d} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} "
              f"{row['max_ms']:>8.1f} {tput:>8.1f} {tput / base_tput:>7.2f} {m['accuracy'] / base_acc:>6.3f}")
    def no_bait_estimate(run: Run) -> float:
        lat = [t for t, it in zip(run.latencies, items) if it["category"] != "hang_bait"]
        return len(lat) / (sum(lat) / args.workers)

    n_bait = sum(it["category"] == "hang_bait" for it in items)
    base_est = no_bait_estimate(base)
    print(f"throughput without the {n_bait} hang_bait rows, estimated as n / (sum of call latencies / workers):")
    for run in runs.values():
        est = no_bait_estimate(run)
        table[run.name]["throughput_no_bait_est"] = est
        print(f"  {run.name:<18} {est:>10.1f} resp/s  {est / base_est:>7.2f}x")
    print("acc* = accuracy without the protocol rows; x tput / x acc = ratio to verl_math_verify; "
          "verl_math_verify timeouts = calls that took >= 5 s (its internal alarm)")
    print(f"rftt grader counters (cold run): {stats}")

    print("\nper-category accuracy (n):")
    cats = sorted({it["category"] for it in items})
    print(f"  {'category':<20} {'n':>3} " + " ".join(f"{name:>16}" for name in runs))
    for cat in cats:
        idx = [i for i, it in enumerate(items) if it["category"] == cat]
        accs = [sum(runs[n].verdicts[i] == items[i]["label"] for i in idx) / len(idx) for n in runs]
        print(f"  {cat:<20} {len(idx):>3} " + " ".join(f"{a:>16.2f}" for a in accs))

    print("\nslowest calls (ms, category):")
    for run in runs.values():
        slow = sorted(range(len(items)), key=lambda i: -run.latencies[i])[:8]
        print(f"  {run.name:<18} " + ", ".join(f"{1000 * run.latencies[i]:.0f} {items[i]['category']}" for i in slow))

    ours = runs["rftt"]
    wrong = [(items[i]["id"], items[i]["category"], items[i]["label"]) for i in range(len(items))
             if ours.verdicts[i] != items[i]["label"]]
    print(f"\nrftt disagreements with the labels ({len(wrong)}): {wrong}")

    acc_ok = table["rftt"]["accuracy"] >= table["verl_math_verify"]["accuracy"]
    bound_ok = table["rftt"]["max_ms"] <= 1000 * (args.timeout + args.margin)
    tput_ratio = table["rftt"]["throughput"] / table["verl_math_verify"]["throughput"]
    print("\ntargets:")
    print(f"  accuracy >= verl_math_verify: {'MET' if acc_ok else 'MISSED'} "
          f"({table['rftt']['accuracy']:.3f} vs {table['verl_math_verify']['accuracy']:.3f})")
    print(f"  max latency <= bound {args.timeout:g} s + {args.margin:g} s: {'MET' if bound_ok else 'MISSED'} "
          f"({table['rftt']['max_ms'] / 1000:.2f} s; verl_math_verify max {table['verl_math_verify']['max_ms'] / 1000:.2f} s)")
    print(f"  throughput >= 3x verl_math_verify (cold cache): {'MET' if tput_ratio >= 3 else 'MISSED'} "
          f"({tput_ratio:.2f}x)")
    family_table = report_traps(trap_runs, traps)
    report_long(long_table, args)
    if family_table:
        fams = sorted({t["family"] for t in traps})
        fp0 = all(family_table["rftt"][f]["fp"] == 0 for f in fams)
        at_least = all(_ge(family_table["rftt"][f][k], family_table["verl_math_verify"][f][k])
                       for f in fams for k in ("precision", "recall"))
        print(f"  0 false positives on every trap family: {'MET' if fp0 else 'MISSED'}")
        print(f"  precision and recall >= math-verify on every family: {'MET' if at_least else 'MISSED'}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"table": table, "rftt_stats": stats, "families": family_table, "longest_input": long_table,
                       "targets": {"accuracy": acc_ok, "bound": bound_ok, "throughput_ratio": tput_ratio}},
                      f, indent=2)
    return 0


def _ge(a: float, b: float) -> bool:
    """a >= b where nan (no accepted row: precision undefined) counts as the lowest value."""
    if b != b:
        return True
    return a == a and a >= b


def _fmt(x: float) -> str:
    return "   -" if x != x else f"{x:.3f}"


def report_traps(trap_runs: dict, traps: list[dict]) -> dict:
    """Precision and recall per family, each grader side by side (the same rows, the same run)."""
    if not trap_runs:
        return {}
    fams = sorted({t["family"] for t in traps})
    table = {name: {f: precision_recall(run, traps, lambda it, f=f: it["family"] == f) for f in fams}
             for name, run in trap_runs.items()}
    for name, run in trap_runs.items():
        table[name]["ALL"] = precision_recall(run, traps, lambda it: True)
    print("\ntrap families (issue 27): false positives (of traps), precision, recall (of controls)")
    names = list(trap_runs)
    print(f"  {'family':<14} {'traps':>5} {'ctrl':>4} " + " ".join(f"{n + ' FP/P/R':>26}" for n in names))
    for f in fams + ["ALL"]:
        row = table[names[0]][f]
        cells = [f"{table[n][f]['fp']:>3d}  {_fmt(table[n][f]['precision'])}  {_fmt(table[n][f]['recall'])}" for n in names]
        print(f"  {f:<14} {row['traps']:>5} {row['controls']:>4} " + " ".join(f"{c:>26}" for c in cells))
    wrong = [(t["id"], t["label"]) for t, v in zip(traps, trap_runs["rftt"].verdicts) if v != t["label"]]
    print(f"  rftt disagreements with the trap labels ({len(wrong)}): {wrong}")
    return table


def report_long(long_table: dict, args) -> None:
    if not long_table:
        return
    print(f"\nlongest input (a number of N digits vs the same / last digit changed; within {args.timeout:g} s "
          f"+ {args.margin:g} s, both verdicts right):")
    for name, entry in long_table.items():
        cells = ", ".join(f"{r['digits']:,}: {'ok' if r['ok'] else 'FAIL'} {r['max_s']:.2f}s" for r in entry["rows"])
        print(f"  {name:<18} longest answered {entry['longest_digits']:>9,} digits  ({cells})")


if __name__ == "__main__":
    raise SystemExit(main())
