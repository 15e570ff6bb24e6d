"""The user's pipeline (examples/pipeline) end to end on CPU: the scripts a GPU user runs, with the
CPU preset's environment overrides (tiny model, toy questions, scripted phase-1 stand-in, hfcpu
rollout, a few steps). Checks the plumbing between stages, resumption and the messages, not learning
(the quickstart's learning check does that)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, clean_env

PIPELINE = REPO / "examples" / "pipeline"
RUN_TIMEOUT_S = 900


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(work: Path, ray_tmp: str) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return clean_env(PRESET="cpu-tiny", WORK=str(work), PYTHON=sys.executable, RFTT=str(Path(bin_dir) / "rftt"),
                     PATH=f"{bin_dir}:{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1", RAY_TMPDIR=ray_tmp,
                     PHASE1_PORT=str(_free_port()))


def test_a_stage_names_the_stage_that_makes_its_missing_input(tmp_path):
    proc = subprocess.run(["bash", str(PIPELINE / "5_rl.sh")], capture_output=True, text=True, cwd=REPO,
                          env=_env(tmp_path / "w", "/tmp/unused"), timeout=60)
    assert proc.returncode == 1
    assert f"missing {tmp_path / 'w' / 'sft' / 'hf' / 'rftt_export.json'} -- run examples/pipeline/4_sft.sh first" \
        in proc.stderr
    help_text = subprocess.run(["bash", str(PIPELINE / "run_all.sh"), "--help"], capture_output=True, text=True,
                               timeout=30).stdout
    for var in ("WORK=", "BASE_MODEL=", "PHASE1_SERVER=", "RL_RECIPE=", "EVAL_DEVICE="):
        assert var in help_text


@pytest.mark.e2e
def test_pipeline_driver_runs_phase1_to_eval_and_resumes(tmp_path):
    from rftt_plugin.cpu.dryrun.process import run_logged

    work = tmp_path / "work"
    ray_tmp = f"/tmp/rftt-pl-{os.getpid()}"
    os.makedirs(ray_tmp, exist_ok=True)
    try:
        result = run_logged(["bash", str(PIPELINE / "run_all.sh")], _env(work, ray_tmp), tmp_path / "run.log",
                            RUN_TIMEOUT_S, marker=ray_tmp, echo=None, cwd=str(REPO))
        log = "".join(result.lines)
        assert result.returncode == 0 and not result.timed_out, log[-6000:]
        print(f"\n[pipeline e2e] wall {result.wall_s:.0f} s; "
              + ", ".join(re.findall(r"\[pipeline\] (\d_\w+: \d+ s)", log)))
        for stage in ("0_toy_inputs", "1_prepare", "2_phase1_data", "3_data_rl", "4_sft", "5_rl", "6_export",
                      "7_eval"):
            assert re.search(rf"\[pipeline\] {stage}: \d+ s", log), stage

        phase1 = json.loads((work / "phase1" / "report.json").read_text())
        assert phase1["rows"] > 0 and phase1["samples"]["merged"] > 0   # stitched self-correcting samples
        assert json.loads((work / "sft" / "hf" / "rftt_export.json").read_text())["step"] == 4
        assert json.loads((work / "rl" / "hf" / "rftt_export.json").read_text())["step"] == 2
        steps = [line for line in result.lines if re.search(r"\bstep:\d+ - ", line) and "training/global_step" in line]
        assert len(steps) == 2, log[-4000:]
        for line in steps:  # the tree metrics are in every step's console line (#25)
            for key in ("rftt/policy_path_acc:", "rftt/tree/distinct_leaves_mean:", "rftt/leaf/terminal/output_share:",
                        "rftt/grader/timeouts:", "rftt/masked/step_error:"):
                assert key in line, (key, line[:3000])
        print("[pipeline e2e] step line: " + steps[-1].strip()[:6000])
        for mode in ("chain", "tree"):
            summary = json.loads((work / "eval" / mode / "results.json").read_text())
            assert "toy" in json.dumps(summary)

        again = run_logged(["bash", str(PIPELINE / "run_all.sh")], _env(work, ray_tmp), tmp_path / "rerun.log",
                           RUN_TIMEOUT_S, marker=ray_tmp, echo=None, cwd=str(REPO))
        relog = "".join(again.lines)
        assert again.returncode == 0, relog[-4000:]
        for stage in ("0_toy_inputs", "1_prepare", "2_phase1_data", "3_data_rl", "4_sft", "5_rl"):
            assert f"[pipeline:{stage}] already done" in relog, stage
        assert "nothing to do" in relog                       # 6_export: the same step is exported already
        assert "step:1 - " not in relog                       # no training step ran again
        assert relog.count("0 answered now") == 2             # 7_eval: chain and tree resumed every question
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
