"""Reward rules, compute_score's contract, and a call through verl's reward manager."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from rftt_plugin.reward import (
    RewardResult,
    compute_score,
    compute_score_async,
    grade,
    grade_async,
    grader_stats,
    reset_grader_stats,
    score_response,
)

GOOD = "<analyze>\nplan\n</analyze>\n<next_step>\n2+3=5\n</next_step>\n<output>\nSo \\boxed{5}.\n</output>\n"
WRONG = GOOD.replace("\\boxed{5}", "\\boxed{6}")
NO_ANSWER = GOOD.replace("So \\boxed{5}.", "So five.")
BAD_FORMAT = "<output>\nSo \\boxed{5}.\n</output>\n<next_step>\nafter\n</next_step>\n"   # step after output
PLAIN = "2+3=5, so the answer is \\boxed{5}."
KEYS = {"score", "acc", "pred", "has_answer", "format_ok", "timed_out"}


@pytest.mark.parametrize("response, score, acc, has_answer", [
    (GOOD, 1.0, True, True), (WRONG, 0.1, False, True), (NO_ANSWER, 0.0, False, False),
])
def test_rule_rftt(response, score, acc, has_answer):
    result = compute_score("math", response, "5")
    assert set(result) == KEYS
    assert result["score"] == pytest.approx(score)
    assert result["acc"] is acc and result["has_answer"] is has_answer and result["format_ok"] is True
    assert result["timed_out"] is False


@pytest.mark.parametrize("response, score", [(GOOD, 1.0), (WRONG, 0.0), (NO_ANSWER, 0.0)])
def test_rule_binary(response, score):
    assert compute_score("math", response, "5", rule="binary")["score"] == pytest.approx(score)


@pytest.mark.parametrize("response, prm, score", [
    (GOOD, 0.5, 0.8), (WRONG, 0.5, 0.2), (GOOD, 1.0, 1.0), (WRONG, 0.0, 0.0), (NO_ANSWER, 0.25, 0.1),
    (GOOD, [0.9, 0.2, 0.25], 0.7),       # a list of step scores: the last one is used
    (GOOD, 7.0, 1.0),                    # clipped into [0, 1]
])
def test_rule_blend(response, prm, score):
    result = compute_score("math", response, "5", extra_info={"prm_score": prm}, rule="blend")
    assert result["score"] == pytest.approx(score)


def test_rule_blend_numpy_prm():
    np = pytest.importorskip("numpy")
    for prm in (np.float32(0.5), np.array([0.1, 0.5]), np.float64(0.5)):
        result = compute_score("math", GOOD, "5", extra_info={"prm_score": prm}, rule="blend")
        assert result["score"] == pytest.approx(0.8)


@pytest.mark.parametrize("extra_info", [None, {}, {"prm_score": None}, {"prm_score": "n/a"},
                                        {"prm_score": float("nan")}, {"prm_score": []}])
def test_prm_rule_without_a_prm_score_is_an_error_unless_a_default_is_given(extra_info):
    from rftt_plugin.reward.score import MissingPRMScore

    reset_grader_stats()
    with pytest.raises(MissingPRMScore, match="rule 'blend' needs a PRM score"):
        compute_score("math", GOOD, "5", extra_info=extra_info, rule="blend")
    assert grader_stats()["prm_missing"] == 1
    again = compute_score("math", GOOD, "5", extra_info=extra_info, rule="blend", prm_default=0.5)
    assert again["score"] == pytest.approx(0.6 * 1 + 0.4 * 0.5)


@pytest.mark.parametrize("response, prm, score", [
    (GOOD, 0.3, 1.0),              # correct: 1 whatever the PRM says
    (WRONG, 0.3, 0.1),             # answered but wrong: 0.1
    (NO_ANSWER, 0.3, 0.03),        # no answer: sigma = 0.1 x the PRM's path score
    (NO_ANSWER, [0.9, 0.45], 0.045),
    (NO_ANSWER, 1.0, 0.1),         # even a perfect PRM score never beats a wrong answer
])
def test_rule_rftt_prm_uses_the_prm_only_without_an_answer(response, prm, score):
    assert compute_score("math", response, "5", extra_info={"prm_score": prm}, rule="rftt_prm")["score"] == \
        pytest.approx(score)


def test_rule_rftt_prm_needs_the_prm_only_when_there_is_no_answer():
    from rftt_plugin.reward.score import MissingPRMScore

    assert compute_score("math", GOOD, "5", rule="rftt_prm")["score"] == pytest.approx(1.0)
    with pytest.raises(MissingPRMScore):
        compute_score("math", NO_ANSWER, "5", rule="rftt_prm")


def test_format_penalty():
    assert compute_score("math", BAD_FORMAT, "5")["format_ok"] is False
    assert compute_score("math", BAD_FORMAT, "5")["score"] == pytest.approx(1.0)       # off by default
    assert compute_score("math", BAD_FORMAT, "5", format_penalty=0.5)["score"] == pytest.approx(0.5)
    assert compute_score("math", GOOD, "5", format_penalty=0.5)["score"] == pytest.approx(1.0)
    plain = compute_score("math", PLAIN, "5", format_penalty=0.2, rule="binary")
    assert plain["acc"] and not plain["format_ok"] and plain["score"] == pytest.approx(0.8)


def test_unknown_rule_and_kwargs():
    with pytest.raises(ValueError, match="unknown reward rule 'outcome'.*rftt, rftt_prm, binary, blend"):
        compute_score("math", GOOD, "5", rule="outcome")
    with pytest.raises(TypeError, match="format_penality"):
        compute_score("math", GOOD, "5", format_penality=0.1)
    # verl's own extra kwargs are accepted and ignored
    assert compute_score("math", GOOD, "5", reward_router_address=None, reward_model_tokenizer=None)["acc"]


def test_score_response_and_grade():
    result = score_response(GOOD, "5")
    assert isinstance(result, RewardResult) and result.to_dict() == compute_score("m", GOOD, "5")
    assert grade(GOOD, "\\frac{10}{2}") == 1.0
    assert grade(WRONG, "5") == 0.0
    assert grade(NO_ANSWER, "5") == 0.0


async def test_async_variants():
    results = await asyncio.gather(compute_score_async("math", GOOD, "\\frac{15}{3}"),
                                   compute_score_async("math", WRONG, "5"),
                                   grade_async(GOOD, "\\sqrt{25}"))
    assert results[0]["acc"] and results[0]["score"] == 1.0
    assert results[1]["score"] == pytest.approx(0.1)
    assert results[2] == 1.0


def test_importing_the_package_is_cheap():
    code = ("import sys, rftt_plugin.reward; "
            "heavy = [m for m in ('sympy', 'math_verify', 'torch', 'verl', 'transformers', 'numpy') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# through verl, exactly as its reward loop does it
# ---------------------------------------------------------------------------------------------

def _verl_reward_config(**reward_kwargs):
    import verl
    from omegaconf import OmegaConf

    reward_yaml = os.path.join(os.path.dirname(verl.__file__), "trainer", "config", "reward", "reward.yaml")
    cfg = OmegaConf.create({"reward": OmegaConf.load(reward_yaml)})
    cfg.reward.custom_reward_function.path = "pkg://rftt_plugin.reward"
    cfg.reward.custom_reward_function.name = "compute_score"
    OmegaConf.update(cfg, "reward.custom_reward_function.reward_kwargs", dict(reward_kwargs), force_add=True)
    return cfg


def _data_proto(tokenizer, prompt: str, responses: list[str], ground_truth, data_source="math",
                extra_info=None):
    import numpy as np
    import torch
    from verl import DataProto

    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    encoded = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in responses]
    width = max(len(e) for e in encoded) + 3            # right padding, as the rollout leaves it
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    n = len(responses)
    resp = torch.full((n, width), pad, dtype=torch.long)
    mask = torch.zeros((n, len(prompt_ids) + width), dtype=torch.long)
    for i, ids in enumerate(encoded):
        resp[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(prompt_ids) + len(ids)] = 1
    prompts = torch.tensor([prompt_ids] * n)
    batch = {"prompts": prompts, "responses": resp, "input_ids": torch.cat([prompts, resp], dim=1),
             "attention_mask": mask}
    non_tensor = {
        "data_source": np.array([data_source] * n, dtype=object),
        "reward_model": np.array([{"ground_truth": ground_truth, "style": "rule"}] * n, dtype=object),
        "extra_info": np.array([dict(extra_info or {}) for _ in range(n)], dtype=object),
    }
    return DataProto.from_dict(tensors=batch, non_tensors=non_tensor)


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.mark.parametrize("response, reward_kwargs, extra_info, score, acc", [
    (GOOD, {}, None, 1.0, True),
    (WRONG, {}, None, 0.1, False),
    (NO_ANSWER, {}, None, 0.0, False),
    (WRONG, {"rule": "binary"}, None, 0.0, False),
    (GOOD, {"rule": "blend"}, {"prm_score": 0.5}, 0.8, True),
    (BAD_FORMAT, {"format_penalty": 0.25}, None, 0.75, True),
])
async def test_through_verl_reward_manager(tiny_tokenizer, response, reward_kwargs, extra_info, score, acc):
    from verl.trainer.ppo.reward import load_reward_manager

    manager = load_reward_manager(_verl_reward_config(**reward_kwargs), tiny_tokenizer)
    data = _data_proto(tiny_tokenizer, "What is 2 + 3?\n", [response], "5", extra_info=extra_info)
    out = await manager.run_single(data)
    assert out["reward_score"] == pytest.approx(score)
    info = out["reward_extra_info"]
    assert set(info) == KEYS and info["acc"] is acc
    assert info["pred"] == ("" if response is NO_ANSWER else ("6" if response is WRONG else "5"))


async def test_through_verl_reward_manager_many_rows_concurrently(tiny_tokenizer):
    """verl scores rows as concurrent single-row tasks (reward_loop.compute_score_batch)."""
    from verl.trainer.ppo.reward import load_reward_manager

    manager = load_reward_manager(_verl_reward_config(), tiny_tokenizer)
    responses = [GOOD.replace("\\boxed{5}", f"\\boxed{{{form}}}") for form in
                 ("5", "\\frac{10}{2}", "5.0", "\\sqrt{25}", "6", "\\frac{11}{2}")]
    data = _data_proto(tiny_tokenizer, "What is 2 + 3?\n", responses, "5")
    outs = await asyncio.gather(*(manager.run_single(data[i : i + 1]) for i in range(len(data))))
    assert [o["reward_score"] for o in outs] == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.1, 0.1])


async def test_through_verl_with_olympiad_list_gold(tiny_tokenizer):
    from verl.trainer.ppo.reward import load_reward_manager

    manager = load_reward_manager(_verl_reward_config(), tiny_tokenizer)
    import numpy as np

    response = GOOD.replace("\\boxed{5}", "\\boxed{84, 69}")
    data = _data_proto(tiny_tokenizer, "Q\n", [response], np.array(["$69$,$84$"], dtype=object),
                       data_source="olympiadbench")
    out = await manager.run_single(data)
    assert out["reward_score"] == pytest.approx(1.0)
