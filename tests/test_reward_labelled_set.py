"""The grader benchmark's labelled set: reproducible, well-formed, and our grader agrees with it."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import subprocess
import sys

import pytest

from rftt_plugin.reward import compute_score

ROOT = os.path.join(os.path.dirname(__file__), "..")
SET = os.path.join(ROOT, "bench", "data", "grader_labelled.jsonl")
SCRIPT = os.path.join(ROOT, "bench", "make_grader_set.py")


@pytest.fixture(scope="module")
def items():
    with open(SET, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.fulldata
def test_set_is_reproducible_from_the_script(tmp_path, full_data_dir):
    out = tmp_path / "set.jsonl"
    subprocess.run([sys.executable, SCRIPT, "--out", str(out), "--data", os.path.join(full_data_dir, "eval")],
                   check=True, capture_output=True)
    digest = lambda path: hashlib.sha256(open(path, "rb").read()).hexdigest()  # noqa: E731
    assert digest(out) == digest(SET), "bench/data/grader_labelled.jsonl is stale: rerun bench/make_grader_set.py"


def test_set_shape(items):
    assert len(items) >= 200
    labels = collections.Counter(it["label"] for it in items)
    assert labels[True] >= 60 and labels[False] >= 60
    cats = {it["category"] for it in items}
    for needed in ("frac_decimal", "set_reordered", "int_format", "units_text", "interval", "degrees", "percent",
                   "hang_bait", "long_200k", "null_bytes", "unbalanced", "no_box", "tiny_numbers"):
        assert needed in cats, needed
    assert any(len(it["response"]) >= 200_000 for it in items)
    assert any("\x00" in it["response"] for it in items)
    assert len({it["id"] for it in items}) == len(items)
    sources = {it["data_source"] for it in items}
    assert {"HuggingFaceH4/MATH-500", "openai/gsm8k", "aime24", "amc23", "olympiadbench"} <= sources


@pytest.mark.slow  # ~300 symbolic checks: 10-60 s
def test_our_grader_agrees_with_the_labels(items):
    # hang bait is left to bench/grader.py: three of its rows cost the full 5 s bound each. This
    # checks verdicts, not the bound: a 60 s bound keeps a loaded machine from turning slow
    # symbolic checks into timeouts (= wrong verdicts); the bound itself is tested in test_reward_pool.
    rows = [it for it in items if it["category"] != "hang_bait"]
    wrong = [(it["id"], it["category"]) for it in rows
             if compute_score(it["data_source"], it["response"], it["gold"], timeout_s=60)["acc"] != it["label"]]
    assert len(wrong) <= len(rows) // 100, wrong
