"""`rftt quickstart --smoke --toy strategies --test-time`: the strategies toy's stages run end to
end through verl's trainers and write their reports (plumbing at smoke size, about 1 min here; the
measurements are in docs/test-time-search.md, not asserted: at full size the test-time gain over
greedy decoding depends on the seed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import clean_env

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)
def test_strategies_toy_with_test_time_stages_runs_and_reports(tmp_path):
    out = tmp_path / "qs"
    cmd = [sys.executable, "-m", "rftt_plugin.cli", "quickstart", "--smoke", "--toy", "strategies", "--test-time",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=800, env=clean_env(OMP_NUM_THREADS="1"),
                          cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    stages = [s["name"] for s in json.loads((out / "stages.json").read_text())]
    assert stages == ["model", "data", "sft", "eval_sft", "testtime_sft", "rl", "eval_rl", "testtime_rl"]

    # the SFT data is the strategies toy's: every opening tag starts some response
    import pandas as pd

    responses = [m[1]["content"] for m in pd.read_parquet(out / "data" / "sft.parquet")["messages"]]
    openings = {r.lstrip()[1:r.lstrip().index(">")] for r in responses}
    assert openings == {"analyze", "next_step", "subquestion", "clarify"}

    for name in ("testtime_sft", "testtime_rl"):
        result = json.loads((out / name / "compare.json").read_text())
        got = {(p["mode"], p["k"]) for p in result["points"]}
        assert got == {("chain", 1)} | {(m, k) for m in ("sc", "tree") for k in (1, 2, 4, 8, 16)}, got
        assert result["selection"] == "policy"
        assert (out / name / "accuracy_vs_tokens.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        for mode in ("chain", "sc", "tree"):
            assert len((out / name / mode / "records.jsonl").read_text().splitlines()) == 3  # smoke: 3 questions

    table = (out / "strategies.md").read_text()
    for label in ("after SFT", "after tree RL"):
        for tag in ("analyze", "next_step", "subquestion", "clarify"):
            assert f"| {label} | `<{tag}>` (" in table, table
    assert "after chain RL" not in table  # not run without --compare-chain
    # the self-check tables: per model the 3 greedy chains, the 3 x 16 sampled chains of self-consistency,
    # and a row of the search's <verify> read-out for the evaluation's trees and for the test-time trees
    checks = table.split("## Self-checks", 1)[1]
    for label in ("after SFT", "after tree RL"):
        assert f"| {label}, greedy | 3 | " in checks and f"| {label}, sampled (SC) | 48 | " in checks, checks
        assert checks.count(f"| {label} | ") == 1 and checks.count(f"| {label}, test-time tree | ") == 1, checks
