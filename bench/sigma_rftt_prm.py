"""σ under ``rftt.reward.rule=rftt_prm`` on the CPU toy: the plugin's 0.1 x PRM against the paper's σ = PRM.

    flock /tmp/rftt-heavy.lock python bench/sigma_rftt_prm.py --steps 30 --out /tmp/sigma

One quickstart SFT checkpoint (model, data and SFT stages of ``rftt quickstart``; reused when
``--out`` already has them), then two ``main_ppo`` runs with the quickstart's RL overrides plus
``rftt.reward.rule=rftt_prm`` and a stand-in PRM (``tests/prm_server.py``: every path scores 0.625).
The only difference: the paper run imports a temporary copy of ``rftt_plugin`` whose
``NO_ANSWER_PRM_SCALE`` is 1.0. Prints, per run and per block of 10 steps, the share of trained
leaves that box an answer (``rftt/leaf/answered_share``), the number of unanswered trained leaves
and ``rftt/policy_path_acc``; writes ``results.json``. Results: docs/measurements/sigma_rftt_prm.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def paper_copy(tmp: Path) -> Path:
    """A copy of the package whose rftt_prm sigma is the PRM score itself (measurement only)."""
    shutil.copytree(ROOT / "rftt_plugin", tmp / "rftt_plugin")
    score = tmp / "rftt_plugin" / "reward" / "rules.py"
    text, n = re.subn(r"^NO_ANSWER_PRM_SCALE = .*$", "NO_ANSWER_PRM_SCALE = 1.0", score.read_text(), flags=re.M)
    if n != 1:
        raise SystemExit("rules.py has no NO_ANSWER_PRM_SCALE line to patch")
    score.write_text(text)
    return tmp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default="/tmp/rftt-sigma")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from rftt_plugin.cpu.dryrun.report import parse_step_metrics
    from rftt_plugin.demo.quickstart import Quickstart, QuickstartConfig

    qs = Quickstart(QuickstartConfig(out=args.out, rl_steps=args.steps))
    for name, fn, done in (("model", qs.stage_model, "model"), ("data", qs.stage_data, "data/rl_train.parquet"),
                           ("sft", qs.stage_sft, "sft/hf")):
        qs._stage(name, qs.out / done, fn)
    prm = subprocess.Popen([sys.executable, str(ROOT / "tests" / "prm_server.py"), "7200"], stdout=subprocess.PIPE,
                           text=True, cwd=str(ROOT))
    url = prm.stdout.readline().strip()
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        arms = (("scaled", ROOT), ("paper", paper_copy(Path(tmp))))
        try:
            for arm, path in arms:
                os.environ["PYTHONPATH"] = str(path)
                shutil.rmtree(qs.out / f"rl_{arm}", ignore_errors=True)  # verl would resume from an old checkpoint
                cmd = [sys.executable, "-m", "verl.trainer.main_ppo", *qs.rl_overrides(f"rl_{arm}"),
                       "rftt.reward.rule=rftt_prm", f"rftt.reward.prm.url={url}"]
                t0 = time.time()
                steps = parse_step_metrics(qs._run(cmd, f"rl_{arm}", total_steps=args.steps))
                keys = ("rftt/leaf/answered_share", "rftt/policy_path_acc", "rftt/prm/calls", "rftt/rows")
                results[arm] = {k: [steps[s].get(k) for s in sorted(steps)] for k in keys}
                results[arm]["wall_s"] = time.time() - t0
        finally:
            prm.kill()
    Path(args.out, "results.json").write_text(json.dumps(results, indent=1))
    for arm, r in results.items():
        share, acc, rows = r["rftt/leaf/answered_share"], r["rftt/policy_path_acc"], r["rftt/rows"]
        unanswered = [round((1 - s) * n) for s, n in zip(share, rows)]
        blocks = range(0, len(share), 10)
        print(f"{arm}: answered share {' / '.join(f'{sum(share[i:i + 10]) / len(share[i:i + 10]):.3f}' for i in blocks)}; "
              f"unanswered leaves {' / '.join(str(sum(unanswered[i:i + 10])) for i in blocks)}; "
              f"policy-path acc {' / '.join(f'{sum(acc[i:i + 10]) / len(acc[i:i + 10]):.3f}' for i in blocks)}; "
              f"{r['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
