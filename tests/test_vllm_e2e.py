"""verl's real vLLM rollout server on CPU: ``main_ppo +recipe=rftt|rftt_tree +dryrun=cpu
actor_rollout_ref.rollout.name=vllm`` trains 2 steps, and matches the same run on ``hfcpu``.

Each recipe runs twice with the same seed, once per rollout engine; the command lines differ only
in ``actor_rollout_ref.rollout.name`` (the overlay supplies sleep mode off and the vLLM CPU
environment; the plugin's vLLM patch keeps weights loadable). Asserted:

* both exit 0 after 2 steps; a worker traceback stops the run at once (watchdog), and a hard
  timeout bounds it (a dead vLLM worker makes main_ppo hang instead of exit);
* step 1 (both rollouts run on the actor's initial weights, synced into a server that started
  from dummy weights, ``load_format=dummy``): identical leaves (every trained response has the same
  text on both engines; step text is decoded greedily here, ``rftt.search.step_temperature=0``,
  because the engines draw from different random streams: at the recipe's 0.1 a near-tie can
  sample another token on each, seen once in CI as "4 + 18 = 26" against "= 28"), rollout perplexity (``rollout_corr/rollout_ppl``, from the log-probs the
  server returned) equal within a relative 1e-4 (measured 1e-7), grad norms within 1e-3
  (measured 0 to 3e-5: two runs of the *same* engine differ by as much, because samples come back
  in a different order and float sums follow it);
* step 2 (the rollout runs on the weights synced after step 1): grad norm and rollout perplexity
  within a relative 2e-2. Not tighter, and leaves not compared, because the actor's weights after
  step 1 already differ between runs: AdamW's first update is about lr * sign(g) per coordinate,
  so the 1e-5-level gradient difference flips coordinates whose gradient is near zero, and the
  step-2 decoding can then take another token (measured on rftt_tree with step temperature 0.1:
  grad norms 0.8594 vs 0.8659, perplexities 1.5472 vs 1.5423). A server that missed the sync would
  sample from the dummy weights and be far off;
* ``rftt`` uses the ``prompt_logprobs`` tag read-out, ``rftt_tree`` the one-request one
  (``RFTT_TAG_READOUT=token_ids``: vLLM's ``logprob_token_ids``, returned by the plugin's subclass
  of verl's vLLM server), so the step-1 leaf identity checks both read-outs on the real server;
* every trained response is grammar-valid or cut at its end (a step stops on a closing-tag id,
  or its budget);
* no stale trajectories.
"""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest

from rftt_plugin.cpu.dryrun.process import worker_traceback
from rftt_plugin.cpu.dryrun.report import parse_step_metrics
from rftt_plugin.demo.synthetic import rl_row, split_problems
from rftt_plugin.tokens import validate
from tests.helpers import run_verl
from tests.vllm_lane import build_vllm_tiny, require_vllm_lane

pytestmark = [pytest.mark.vllm, pytest.mark.e2e]

STEPS = 2
N_LEAVES = 4
RUN_TIMEOUT_S = 420
GRAD_REL_TOL = {1: 1e-3, 2: 2e-2}  # see the module docstring
PPL_REL_TOL = {1: 1e-4, 2: 2e-2}
TRUNCATION_CODES = {"missing_output", "unclosed", "partial_tag", "mismatched", "nested", "empty"}


@pytest.fixture(scope="module")
def warm_vllm_model(tmp_path_factory):
    """The prepared head_dim-32 tiny model warmed on tagged arithmetic (as tests' warm_model_dir)."""
    require_vllm_lane()
    import os

    from rftt_plugin.demo.warmup import warmed_arithmetic_model

    if os.environ.get("RFTT_VLLM_WARM_MODEL"):  # developer shortcut: a model this fixture built before
        return os.environ["RFTT_VLLM_WARM_MODEL"]

    root = tmp_path_factory.mktemp("vllm_warm")
    prepared = build_vllm_tiny(root)
    warmed_arithmetic_model(str(prepared), str(root / "warm"), steps=300, log=None)
    return root / "warm"


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm_data")
    train, test = split_problems(16, 4, seed=7)
    pd.DataFrame([rl_row(p, i, "train") for i, p in enumerate(train)]).to_parquet(root / "train.parquet")
    pd.DataFrame([rl_row(p, i, "test") for i, p in enumerate(test)]).to_parquet(root / "test.parquet")
    return root


def _run(recipe: str, engine: str, model, data, tmp_path):
    dump = tmp_path / f"rollouts-{engine}"
    cmd = [
        sys.executable, "-m", "verl.trainer.main_ppo", f"+recipe={recipe}", "+dryrun=cpu",
        f"actor_rollout_ref.model.path={model}",
        f"data.train_files={data / 'train.parquet'}", f"data.val_files={data / 'test.parquet'}",
        f"trainer.total_training_steps={STEPS}", "trainer.test_freq=2",
        "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "data.max_prompt_length=64", "data.max_response_length=192",
        f"actor_rollout_ref.rollout.n={N_LEAVES}", "actor_rollout_ref.actor.optim.lr=1e-4",
        "rftt.search.step_max_tokens=40", "rftt.search.direct_answer_max_tokens=40", "rftt.search.max_depth=6",
        f"trainer.rollout_data_dir={dump}", f"hydra.run.dir={tmp_path / ('hydra-' + engine)}",
        f"actor_rollout_ref.rollout.name={engine}",
        "rftt.search.step_temperature=0",  # greedy steps: the engines' random streams differ (docstring)
    ]
    if recipe == "rftt_tree":
        cmd.append("rftt.credit.step_weight=1.0")
    # rftt_tree runs with the one-request tag read-out (logprob_token_ids: hfcpu natively, verl's vLLM
    # server through rftt_plugin.integration.vllm_readout; strict, so a refusal fails the run); rftt
    # with the prompt_logprobs read-out.
    readout = "token_ids" if recipe == "rftt_tree" else "prompt_logprobs"
    result, _ = run_verl_watched(cmd, tmp_path, f"v-{recipe}-{engine[:2]}", {"RFTT_TAG_READOUT": readout})
    if readout == "token_ids":
        assert any("tag read-out via logprob_token_ids" in line for line in result.lines), \
            f"{engine}: the one-request read-out was not used"
    tail = "".join(result.lines[-80:])
    print(f"\n[{recipe} on {engine}] wall {result.wall_s:.1f} s, peak process-tree RSS {result.peak_tree_rss_mb:.0f} MiB")
    assert result.aborted is None, f"{engine}: {result.aborted}\n{tail}"
    assert not result.timed_out, f"{engine}: main_ppo exceeded {RUN_TIMEOUT_S} s\n{tail}"
    assert result.returncode == 0, f"{engine}: main_ppo exited with {result.returncode}\n{tail}"
    steps = parse_step_metrics(result.lines)
    assert all(s in steps for s in range(1, STEPS + 1)), f"{engine}: steps logged {sorted(steps)}"
    outputs = {}
    for step in range(1, STEPS + 1):
        rows = [json.loads(line) for line in (dump / f"{step}.jsonl").read_text().splitlines()]
        outputs[step] = sorted(r["output"] for r in rows)
        assert len(rows) == 2 * N_LEAVES, f"{engine} step {step}: {len(rows)} leaves"
        for r in rows:
            report = validate(r["output"])
            codes = {p.code for p in report.problems}
            assert report.ok or codes <= TRUNCATION_CODES, (engine, codes, r["output"][:300])
    return steps, outputs, result


def run_verl_watched(cmd, workdir, tag, extra_env=None):
    """tests.helpers.run_verl plus the watchdog: stop at the first worker traceback."""
    import os
    import shutil

    from rftt_plugin.cpu.dryrun.process import run_logged

    ray_tmp = f"/tmp/rftt-{tag}-{os.getpid()}"  # short: AF_UNIX socket paths must fit in ~107 bytes
    os.makedirs(ray_tmp, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "RAY_TMPDIR": ray_tmp, **(extra_env or {})}
    try:
        return run_logged(cmd, env, workdir / f"{tag}.log", RUN_TIMEOUT_S, marker=ray_tmp,
                          watch=worker_traceback), ray_tmp
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _close(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol * max(abs(a), abs(b), 1e-8)


@pytest.mark.timeout(2 * RUN_TIMEOUT_S + 120)
@pytest.mark.parametrize("recipe", ["rftt", "rftt_tree"])
def test_vllm_rollout_trains_like_hfcpu(recipe, warm_vllm_model, data_files, tmp_path):
    hf_steps, hf_out, _ = _run(recipe, "hfcpu", warm_vllm_model, data_files, tmp_path)
    vl_steps, vl_out, vl_result = _run(recipe, "vllm", warm_vllm_model, data_files, tmp_path)
    assert any("V1 vLLM oneDNN prepack off applied" in line for line in vl_result.lines), \
        "the plugin's vLLM CPU patch did not log in the vLLM run"
    report = []
    for step in range(1, STEPS + 1):
        h, v = hf_steps[step], vl_steps[step]
        report.append(f"step {step}: grad_norm hfcpu {h['actor/grad_norm']:.6f} vllm {v['actor/grad_norm']:.6f}; "
                      f"rollout_ppl hfcpu {h['rollout_corr/rollout_ppl']:.6f} vllm {v['rollout_corr/rollout_ppl']:.6f}")
        assert v["training/off_policy/trajectory_staleness/max"] == 0
        assert h["actor/grad_norm"] > 0
    print(f"\n[{recipe}] " + f"\n[{recipe}] ".join(report))
    for step in range(1, STEPS + 1):
        if step == 1:
            assert hf_out[step] == vl_out[step], f"step {step}: leaves differ between hfcpu and vLLM"
        h, v = hf_steps[step], vl_steps[step]
        assert _close(h["actor/grad_norm"], v["actor/grad_norm"], GRAD_REL_TOL[step]), report[step - 1]
        assert _close(h["rollout_corr/rollout_ppl"], v["rollout_corr/rollout_ppl"], PPL_REL_TOL[step]), report[step - 1]
