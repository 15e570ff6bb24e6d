"""Test-time search pays with the default settings on the strategies toy (issue 24), in CI.

The run: ``rftt quickstart --toy strategies --stop-after sft`` (tiny model, the strategies toy's
SFT data, 1,500 verl SFT steps, about 4 min here), then ``rftt eval --mode chain,tree
--iterations 16`` on the 250 held-out questions with rftt eval's default test-time settings (the
faithful search, ``policy`` selection; only the toy's length limits are given).

Measured on seed 0 (docs/test-time-search.md): greedy 71.2%, tree search at 16 iterations 84.8%.
What is asserted is that tree search beats greedy question by question with exact McNemar
p < 0.01, not a measured value; on another CPU the SFT model may differ like another seed's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict

import pytest

from tests.helpers import clean_env, two_sided_sign_test

pytestmark = pytest.mark.e2e

TOY_LIMITS = ["--max-tokens", "160", "--step-max-tokens", "40", "--direct-answer-max-tokens", "40",
              "--max-response-tokens", "160", "--max-depth", "8"]


@pytest.mark.timeout(1500)
def test_default_tree_search_beats_greedy_on_the_strategies_toy(tmp_path):
    from rftt_plugin.cli import main

    out = tmp_path / "qs"
    cmd = [sys.executable, "-m", "rftt_plugin.cli", "quickstart", "--toy", "strategies", "--stop-after", "sft",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=clean_env(OMP_NUM_THREADS="1"),
                          cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert "stopped after sft" in proc.stdout
    assert not (out / "rl").exists()

    argv = ["eval", "--model", str(out / "sft" / "hf"), "--source", f"arith={out / 'data' / 'arith_test.jsonl'}",
            "--benchmarks", "arith", "--mode", "chain,tree", "--iterations", "16", *TOY_LIMITS,
            "--concurrency", "16", "--quiet", "--out", str(tmp_path / "cmp")]
    assert main(argv) == 0
    with (tmp_path / "cmp" / "chain" / "records.jsonl").open() as fh:
        chain = {r["id"]: bool(r["acc"]) for r in map(json.loads, fh)}
    with (tmp_path / "cmp" / "tree" / "records.jsonl").open() as fh:
        records = [json.loads(line) for line in fh]
    tree = {r["id"]: bool(r["budgets"]["16"]["acc"]) for r in records}
    assert sorted(chain) == sorted(tree) and len(tree) == 250
    gained = sum(1 for q in tree if tree[q] and not chain[q])
    lost = sum(1 for q in tree if chain[q] and not tree[q])
    p = two_sided_sign_test(gained, lost)

    # the strategies, read from the trees by hand: the first leaf under each opening tag is the
    # policy's own continuation after that opening
    right, total = defaultdict(int), defaultdict(int)
    for r in records:
        nodes = {n["id"]: n for n in json.loads((tmp_path / "cmp" / "tree" / "trees" / f"{r['id']}.json").read_text())["nodes"]}
        seen = set()
        for leaf in r["leaves"]:
            tag = nodes[leaf["node_ids"][0]]["tag"]
            if tag not in seen:
                seen.add(tag)
                kind = (tag, " - " in r["question"])
                total[kind] += 1
                right[kind] += bool(leaf["acc"])
    acc = {k: right[k] / total[k] for k in total}
    verdict = (f"greedy {sum(chain.values()) / 250:.1%} -> tree@16 {sum(tree.values()) / 250:.1%}, "
               f"{gained} gained / {lost} lost, McNemar p = {p:.2g}; first leaf per opening: "
               + ", ".join(f"{t}{'(-)' if minus else '(+)'} {a:.0%}" for (t, minus), a in sorted(acc.items())))
    print(verdict)
    assert gained > lost and p < 0.01, "default tree search did not beat greedy: " + verdict
    # the tag choice matters: the direct answer (under <clarify>) was only taught on all-plus sums
    assert acc[("clarify", False)] > acc[("clarify", True)] + 0.2, verdict
    # and every step strategy is competent on its own
    for tag in ("analyze", "next_step", "subquestion"):
        both = (right[(tag, False)] + right[(tag, True)]) / (total[(tag, False)] + total[(tag, True)])
        assert both > 0.5, verdict
