"""End to end on CPU: `python -m verl.trainer.main_ppo +recipe=rftt` (and `+recipe=rftt_tree`) with
the `+dryrun=cpu` overlay, for 2 real training steps through the `rftt_tree` agent loop.

The policy is the tiny fixture model prepared with the functional tokens and warmed up on
synthetic tagged arithmetic (a random model never boxes an answer, so rewards would all be equal).
Tag read-out goes through the `hfcpu` server's `prompt_logprobs` (vLLM semantics); rewards come
from the plugin's grader; advantages from the recipe's estimator (REINFORCE++ / rftt_tree).

Asserts: exit 0; non-zero gradient norm at every step; leaves per prompt = rollout.n (from the
rollout dump's `{uid}_{session}_{i}` keys); tree metrics in the logged validation metrics; every
trained response valid under the tag grammar or cut at its end (truncation / a failed step,
which the agent loop marks); rollout weights fresh at every step.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections import Counter

import pandas as pd
import pytest
import torch

from rftt_plugin.cpu.dryrun.report import parse_step_metrics
from rftt_plugin.demo.synthetic import rl_row, split_problems
from rftt_plugin.tokens import validate
from tests.helpers import run_verl
from tests.prm_server import PRMServer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(torch.cuda.is_available(), reason="CPU dry run: this host has CUDA"),
]

STEPS = 2
N_LEAVES = 4
RUN_TIMEOUT_S = 420
# Problems that may end a response early without breaking the grammar: the path was cut (depth,
# budget, response length) or a step failed (no closing tag, another tag) -- all marked terminal
# by the search and flagged rftt_leaf_truncated by the agent loop.
TRUNCATION_CODES = {"missing_output", "unclosed", "partial_tag", "mismatched", "nested", "empty"}


@pytest.mark.timeout(2 * RUN_TIMEOUT_S)
@pytest.mark.parametrize("recipe", ["rftt", "rftt_tree", "rftt+blend_prm"])
def test_main_ppo_with_rftt_recipe_two_steps_on_cpu(recipe, warm_model_dir, tmp_path):
    """``rftt+blend_prm``: recipe rftt with rule blend and a PRM served on 127.0.0.1 whose last-step
    score is 0.1 x (number of steps): every leaf's score must be 0.6 x correct + 0.04 x k, k >= 0."""
    recipe, _, variant = recipe.partition("+")
    with contextlib.ExitStack() as stack:
        prm = stack.enter_context(PRMServer(step_score=0.25, last_per_step=0.1)) if variant else None
        _run_two_steps(recipe, warm_model_dir, tmp_path, prm)


def _run_two_steps(recipe, warm_model_dir, tmp_path, prm):
    train, test = split_problems(16, 4, seed=7)
    pd.DataFrame([rl_row(p, i, "train") for i, p in enumerate(train)]).to_parquet(tmp_path / "train.parquet")
    pd.DataFrame([rl_row(p, i, "test") for i, p in enumerate(test)]).to_parquet(tmp_path / "test.parquet")
    dump = tmp_path / "rollouts"
    cmd = [
        sys.executable, "-m", "verl.trainer.main_ppo", f"+recipe={recipe}", "+dryrun=cpu",
        f"actor_rollout_ref.model.path={warm_model_dir}",
        f"data.train_files={tmp_path / 'train.parquet'}", f"data.val_files={tmp_path / 'test.parquet'}",
        f"trainer.total_training_steps={STEPS}", "trainer.test_freq=2",
        "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "data.max_prompt_length=64", "data.max_response_length=192",
        f"actor_rollout_ref.rollout.n={N_LEAVES}", "actor_rollout_ref.actor.optim.lr=1e-4",
        "rftt.search.step_max_tokens=40", "rftt.search.direct_answer_max_tokens=40", "rftt.search.max_depth=6",
        f"trainer.rollout_data_dir={dump}", f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    if recipe == "rftt_tree":
        cmd.append("rftt.credit.step_weight=1.0")
    if prm is not None:
        cmd += ["rftt.reward.rule=blend", f"rftt.reward.prm.url={prm.url}"]
    result, _ = run_verl(cmd, tmp_path, RUN_TIMEOUT_S, f"e2e-{recipe}")
    log_tail = "".join(result.lines[-80:])
    print(f"\n[{recipe} e2e] wall {result.wall_s:.1f} s, peak process-tree RSS {result.peak_tree_rss_mb:.0f} MiB")
    assert not result.timed_out, f"main_ppo exceeded {RUN_TIMEOUT_S} s\n{log_tail}"
    assert result.returncode == 0, f"main_ppo exited with {result.returncode}\n{log_tail}"

    steps = parse_step_metrics(result.lines)
    assert sorted(steps)[-STEPS:] == list(range(1, STEPS + 1)) or sorted(steps) == list(range(STEPS + 1)), steps.keys()
    for step in range(1, STEPS + 1):
        m = steps[step]
        assert m["actor/grad_norm"] > 0, f"step {step}: zero gradient"
        assert m["training/off_policy/trajectory_staleness/max"] == 0, f"step {step}: stale rollout weights"
    val = {k: v for m in steps.values() for k, v in m.items() if k.startswith("val-aux/") and "rftt_tree_" in k}
    assert any("rftt_tree_nodes" in k for k in val), f"no tree metrics in the logged metrics: {sorted(steps[STEPS])}"

    for step in range(1, STEPS + 1):
        rows = [json.loads(line) for line in (dump / f"{step}.jsonl").read_text().splitlines()]
        per_uid = Counter(r["uid"].rsplit("_", 2)[0] for r in rows)
        assert set(per_uid.values()) == {N_LEAVES}, per_uid  # every prompt trained on rollout.n leaves
        for r in rows:
            report = validate(r["output"])
            codes = {p.code for p in report.problems}
            assert report.ok or codes <= TRUNCATION_CODES, (codes, r["output"][:400])
        scores = {round(r["score"], 4) for r in rows}
        assert len(scores) > 1, f"step {step}: every leaf got the same reward {scores}"
        if prm is not None:  # hand-worked: 0.4 x 0.1 x k for a path of k steps, plus 0.6 when correct
            for score in scores:
                k = (score - 0.6 if score >= 0.6 else score) / 0.04
                assert abs(k - round(k)) < 1e-6 and 0 <= round(k) <= 6, (score, scores)  # k = 0: no step with text
    if prm is not None:
        assert prm.requests, "the PRM server was never called"
