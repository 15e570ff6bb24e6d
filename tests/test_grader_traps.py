"""Issue 27's trap families through the whole grader: no false positive, every control accepted.

The rows live in bench/data/grader_traps.jsonl, written by bench/make_grader_traps.py from
hand-written labels (no grader computes a label). Every family holds controls -- answers that
*must* be accepted -- so a grader that refused everything would fail here too.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import subprocess
import sys

import pytest

from rftt_plugin.reward import compute_score, normalize_gold

ROOT = os.path.join(os.path.dirname(__file__), "..")
TRAPS = os.path.join(ROOT, "bench", "data", "grader_traps.jsonl")
SCRIPT = os.path.join(ROOT, "bench", "make_grader_traps.py")
FAMILIES = ("symbolic", "number_words", "units", "hedged", "tuple_set", "bases", "adversarial")
ROOMY = 60.0   # verdicts, not the bound: a loaded machine must not turn a slow check into a timeout


@pytest.fixture(scope="module")
def rows():
    with open(TRAPS, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_trap_file_is_reproducible_from_the_script(tmp_path):
    out = tmp_path / "traps.jsonl"
    subprocess.run([sys.executable, SCRIPT, "--out", str(out)], check=True, capture_output=True)
    digest = lambda path: hashlib.sha256(open(path, "rb").read()).hexdigest()  # noqa: E731
    assert digest(out) == digest(TRAPS), "bench/data/grader_traps.jsonl is stale: rerun bench/make_grader_traps.py"


def test_every_family_has_traps_and_controls(rows):
    counts = collections.Counter((r["family"], r["label"]) for r in rows)
    for family in FAMILIES:
        assert counts[(family, False)] >= 8, family
        assert counts[(family, True)] >= 4, family
    assert len({r["id"] for r in rows}) == len(rows)


@pytest.mark.parametrize("family", FAMILIES)
def test_no_false_positive_and_every_control_accepted(rows, family):
    results = [(r, compute_score("math", r["response"], r["gold"], timeout_s=ROOMY)) for r in rows
               if r["family"] == family]
    false_pos = [(r["id"], r["note"], res["pred"]) for r, res in results if res["acc"] and not r["label"]]
    missed = [(r["id"], r["note"], res["pred"]) for r, res in results if r["label"] and not res["acc"]]
    assert not false_pos, false_pos
    assert not missed, missed
    assert not any(res["timed_out"] for _, res in results)


def test_currency_in_the_gold_is_its_unit():
    gold = normalize_gold("\\$20")
    assert gold.items == ("20",) and gold.currency            # items as before, the sign remembered
    assert not normalize_gold("20").currency
    assert compute_score("math", "\\boxed{20 \\text{ dollars}}", "\\$20")["acc"]
    assert not compute_score("math", "\\boxed{20 \\text{ cents}}", "\\$20")["acc"]
