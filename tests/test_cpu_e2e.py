"""End to end on CPU: verl's stock ``python -m verl.trainer.main_ppo`` with the ``+dryrun=cpu``
overlay, the tiny fixture model, GRPO and the stock ``single_turn_agent``, for 2 real steps.

Asserts: exit 0; a non-zero gradient norm and non-zero advantages at every step (the reward file
below varies across samples: a random tiny model never answers correctly); the rollout received
the actor's weights at init and after each step (hfcpu's event log: versions 1, 2, 3 carrying
global_steps 0, 1, 2, each with different weights) and verl saw no stale trajectory. The run has a
hard timeout and its Ray processes are terminated afterwards, also on failure
(``rftt_plugin.cpu.dryrun.process.run_logged``).
"""

from __future__ import annotations

import sys
import textwrap

import pandas as pd
import pytest
import torch

from rftt_plugin.cpu.dryrun.process import ours_alive
from rftt_plugin.cpu.dryrun.report import parse_step_metrics, read_events
from tests.helpers import run_verl

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(torch.cuda.is_available(), reason="CPU dry run: this host has CUDA"),
]

STEPS = 2
RUN_TIMEOUT_S = 220  # hard limit of main_ppo itself; the test stays under 4 minutes

REWARD = textwrap.dedent('''
    def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
        """Fraction of digits in the response: varies across samples, so GRPO advantages are non-zero."""
        text = solution_str or ""
        return sum(c.isdigit() for c in text) / max(len(text), 1)
''')


def _rows(n: int, offset: int = 0) -> list[dict]:
    rows = []
    for i in range(n):
        a, b = 3 * i + 1 + offset, 7 * i + 2
        rows.append({
            "data_source": "rftt_e2e/addition",
            "prompt": [{"role": "user", "content": f"What is {a} plus {b}?"}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(a + b)},
            "extra_info": {"index": i},
        })
    return rows


@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_main_ppo_grpo_two_steps_on_cpu(tiny_model_dir, tmp_path):
    pd.DataFrame(_rows(16)).to_parquet(tmp_path / "train.parquet")
    pd.DataFrame(_rows(4, offset=100)).to_parquet(tmp_path / "val.parquet")
    (tmp_path / "reward.py").write_text(REWARD)
    events = tmp_path / "hfcpu_events.jsonl"

    cmd = [
        sys.executable, "-m", "verl.trainer.main_ppo",
        "algorithm.adv_estimator=grpo",
        f"data.train_files={tmp_path / 'train.parquet'}",
        f"data.val_files={tmp_path / 'val.parquet'}",
        f"actor_rollout_ref.model.path={tiny_model_dir}",
        "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.actor.optim.lr=1e-3",
        "actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent",
        f"reward.custom_reward_function.path={tmp_path / 'reward.py'}",
        "reward.custom_reward_function.name=compute_score",
        "+dryrun=cpu",
        f"trainer.total_training_steps={STEPS}",
        "data.max_prompt_length=64",
        "data.max_response_length=16",
        f"actor_rollout_ref.rollout.engine_kwargs.hfcpu.event_log={events}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    result, ray_tmp = run_verl(cmd, tmp_path, RUN_TIMEOUT_S, "e2e-grpo")
    log_tail = "".join(result.lines[-60:])
    print(f"\n[cpu e2e] wall {result.wall_s:.1f} s, peak process-tree RSS {result.peak_tree_rss_mb:.0f} MiB, "
          f"leftover processes killed: {result.leftovers_killed}, log {result.log_path}")

    assert not result.timed_out, f"main_ppo exceeded {RUN_TIMEOUT_S} s\n{log_tail}"
    assert result.returncode == 0, f"main_ppo exited with {result.returncode}\n{log_tail}"

    steps = parse_step_metrics(result.lines)
    assert sorted(steps) == list(range(1, STEPS + 1)), f"steps logged: {sorted(steps)}\n{log_tail}"
    for step, m in steps.items():
        assert m["actor/grad_norm"] > 0, f"step {step}: zero gradient"
        assert m["critic/advantages/max"] > 0 > m["critic/advantages/min"], f"step {step}: zero advantages"
        assert m["training/off_policy/trajectory_staleness/max"] == 0, f"step {step}: stale rollout weights"

    loads = [e for e in read_events(events) if e["event"] == "load_weights"]
    assert [e["version"] for e in loads] == [1, 2, 3], loads
    assert [e["global_steps"] for e in loads] == [0, 1, 2], loads  # init sync, then after every step
    digests = [e["digest"] for e in loads]
    assert len(set(digests)) == len(digests), f"weights did not change between syncs: {digests}"

    assert not ours_alive(result.seen, ray_tmp), "processes of the run are still alive after cleanup"
