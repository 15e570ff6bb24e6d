"""The CPU quickstart end to end (smoke sizes): every stage runs for real through verl's trainers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import clean_env

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(1200)
def test_quickstart_smoke_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "qs"
    cmd = [sys.executable, "-m", "rftt_plugin.cli", "quickstart", "--smoke", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1100, env=clean_env(OMP_NUM_THREADS="1"),
                          cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    stages = {s["name"]: s for s in json.loads((out / "stages.json").read_text())}
    assert list(stages) == ["model", "data", "sft", "eval_sft", "rl", "eval_rl"]
    assert not any(s["skipped"] for s in stages.values())
    # phase 1 ran through verl's SFT trainer and lowered the loss; phase 2 through main_ppo
    losses = json.loads((out / "sft" / "losses.json").read_text())
    assert len(losses) == 20 and losses[-1] < losses[0]
    curve = json.loads((out / "rl" / "reward_curve.json").read_text())
    assert sorted(int(k) for k in curve) == [1, 2]
    for name in ("eval_sft", "eval_rl"):
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["tree"]["benchmarks"]["arith"]["accuracy"].keys() == {"k=1", "k=2"}
    table = (out / "results.md").read_text()
    assert "after SFT (phase 1)" in table and "after tree RL (phase 2, +recipe=rftt)" in table
    assert "95% intervals" in table  # the SFT -> RL verdict line, with Wilson intervals
    results = json.loads((out / "results.json").read_text())
    assert results["eval_sft"]["chain pass@1"]["n"] == 3  # eval_limit of --smoke
    assert (out / "reward_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "tree.html").read_text()
    assert "<details" in html and "</html>" in html
    # a rerun resumes: every stage is found done and skipped, nothing is recomputed
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=clean_env(), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already done") == 6, again.stdout
