"""Credit assignment and the `rftt_tree` estimator: vectorised vs plain reference, verl equality."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from rftt_plugin.search.advantage import returns_to_go, rftt_tree_advantage
from rftt_plugin.search.credit import dense_rewards, step_credit


def _reference_returns(rewards, mask, gamma):
    out = []
    for r_row, m_row in zip(rewards, mask):
        running, row = 0.0, [0.0] * len(r_row)
        for t in reversed(range(len(r_row))):
            if m_row[t]:
                running = r_row[t] + gamma * running
                row[t] = running
        out.append(row)
    return out


def _valid(values, mask):
    return [values[i][t] for i in range(len(mask)) for t in range(len(mask[i])) if mask[i][t]]


def _reference_std(vals, min_std):
    """Unbiased std of a plain list, floored at min_std (the estimator's documented formula)."""
    mean = sum(vals) / len(vals)
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return mean, max(var, min_std ** 2) ** 0.5


def _reference_global_adv(returns, mask, min_std=0.1):
    vals = _valid(returns, mask)
    if len(vals) < 2:
        return [[0.0] * len(r) for r in returns]
    mean, std = _reference_std(vals, min_std)
    return [[(returns[i][t] - mean) / std if mask[i][t] else 0.0 for t in range(len(mask[i]))]
            for i in range(len(returns))]


def _reference_tree_adv(returns, mask, index, min_std=0.1):
    """Per-tree mean as the baseline, the batch's std of the centred values as the scale."""
    groups = {}
    for i, key in enumerate(index):
        groups.setdefault(key, []).append(i)
    centred = [[0.0] * len(returns[0]) for _ in returns]
    for rows in groups.values():
        vals = [returns[i][t] for i in rows for t in range(len(mask[i])) if mask[i][t]]
        if not vals:
            continue
        mean = sum(vals) / len(vals)
        for i in rows:
            for t in range(len(mask[i])):
                if mask[i][t]:
                    centred[i][t] = returns[i][t] - mean
    vals = _valid(centred, mask)
    if len(vals) < 2:
        return [[0.0] * len(r) for r in returns]
    _, std = _reference_std(vals, min_std)
    return [[centred[i][t] / std if mask[i][t] else 0.0 for t in range(len(mask[i]))] for i in range(len(returns))]


def _batch(seed, rows=7, length=11, pad_rows=1):
    rng = random.Random(seed)
    rewards, mask, index = [], [], []
    for i in range(rows):
        n = rng.randint(1, length)
        m = [1 if t < n and rng.random() > 0.15 else 0 for t in range(length)]
        if not any(m):
            m[0] = 1
        rewards.append([rng.uniform(-1, 1) if rng.random() < 0.3 else 0.0 for _ in range(length)])
        mask.append(m)
        index.append(f"uid{i % 3}")
    for j in range(pad_rows):  # verl's synthetic padding rows
        rewards.append([0.0] * length)
        mask.append([0] * length)
        index.append(f"pad{j}")
    return rewards, mask, index


@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("seed", range(5))
def test_returns_match_plain_reference(gamma, seed):
    rewards, mask, _ = _batch(seed)
    got = returns_to_go(torch.tensor(rewards, dtype=torch.float64), torch.tensor(mask), gamma)
    np.testing.assert_allclose(got.numpy(), _reference_returns(rewards, mask, gamma), atol=1e-12)


@pytest.mark.parametrize("min_std", [0.0, 0.1, 5.0])
@pytest.mark.parametrize("seed", range(5))
def test_tree_normalisation_matches_plain_reference(seed, min_std):
    rewards, mask, index = _batch(seed)
    adv, ret = rftt_tree_advantage(torch.tensor(rewards, dtype=torch.float64), torch.tensor(mask), gamma=1.0,
                                   normalize="tree", index=index, min_std=min_std)
    expected = _reference_tree_adv(_reference_returns(rewards, mask, 1.0), mask, index, min_std)
    np.testing.assert_allclose(adv.numpy(), expected, atol=1e-6)
    assert torch.all(adv[-1] == 0)  # padding row


@pytest.mark.parametrize("min_std", [0.0, 0.1, 5.0])
@pytest.mark.parametrize("seed", range(5))
def test_global_normalisation_matches_plain_reference(seed, min_std):
    rewards, mask, index = _batch(seed)
    adv, _ = rftt_tree_advantage(torch.tensor(rewards, dtype=torch.float64), torch.tensor(mask), gamma=0.9,
                                 normalize="global", index=index, min_std=min_std)
    expected = _reference_global_adv(_reference_returns(rewards, mask, 0.9), mask, min_std)
    np.testing.assert_allclose(adv.numpy(), expected, atol=1e-6)


def _kl_batch(seed, kl_scale=1e-3):
    """Tree "same" (4 leaves, all correct) + two trees with mixed outcomes; KL noise of order 1e-3 per
    token already folded into the rewards (r_t - beta * KL_t), non-contiguous masks."""
    rng = random.Random(seed)
    rewards, mask, index = [], [], []
    outcomes = {"same": [1.0, 1.0, 1.0, 1.0], "mixed1": [1.0, 0.1, 0.0, 0.1], "mixed2": [0.0, 1.0, 0.1, 1.0]}
    for uid, outs in outcomes.items():
        for outcome in outs:
            n = rng.randint(12, 30)
            m = [1 if t < n else 0 for t in range(32)]
            for t in rng.sample(range(n - 1), 3):  # inserted ids inside the path (non-contiguous mask)
                m[t] = 0
            r = [(-rng.uniform(0, 2) * kl_scale if m[t] else 0.0) for t in range(32)]
            r[n - 1] += outcome
            rewards.append(r)
            mask.append(m)
            index.append(uid)
    return rewards, mask, index


@pytest.mark.parametrize("normalize", ["global", "tree", "none"])
@pytest.mark.parametrize("seed", range(3))
def test_equal_outcome_tree_with_kl_noise_keeps_small_advantages(normalize, seed):
    """A tree whose leaves share one outcome must not get its KL noise blown up to unit variance."""
    rewards, mask, index = _kl_batch(seed)
    adv, _ = rftt_tree_advantage(torch.tensor(rewards, dtype=torch.float64), torch.tensor(mask), gamma=1.0,
                                 normalize=normalize, index=index)
    same = [adv[i][t].item() for i in range(len(index)) if index[i] == "same" for t in range(32) if mask[i][t]]
    mean = sum(same) / len(same)
    std = (sum((v - mean) ** 2 for v in same) / (len(same) - 1)) ** 0.5
    assert std <= 0.05, f"{normalize}: std {std:.4f} of an all-correct tree's advantages"
    if normalize == "tree":  # its baseline is its own mean: no systematic push either way
        assert abs(mean) <= 0.05


def test_whole_batch_with_one_outcome_is_bounded_by_the_floor():
    rewards, mask, index = _kl_batch(0)
    index = ["same"] * len(index)
    for i, row in enumerate(rewards):  # every leaf correct
        last = max(t for t in range(32) if mask[i][t])
        row[last] = 1.0 - 1e-3
    for normalize in ("global", "tree"):
        adv, _ = rftt_tree_advantage(torch.tensor(rewards, dtype=torch.float64), torch.tensor(mask), gamma=1.0,
                                     normalize=normalize, index=index, min_std=0.1)
        # returns differ by at most ~2e-3 * 30 tokens; divided by the floor 0.1 that stays < 1
        assert adv.abs().max().item() < 1.0


@pytest.mark.parametrize("gamma", [1.0, 0.95])
def test_terminal_rewards_global_equals_verl_reinforce_plus_plus(gamma):
    from omegaconf import OmegaConf
    from verl.trainer.ppo import core_algos

    torch.manual_seed(0)
    bs, length = 12, 20
    mask = torch.zeros(bs, length)
    lengths = torch.randint(3, length + 1, (bs,))
    rewards = torch.zeros(bs, length)
    for i, n in enumerate(lengths.tolist()):
        mask[i, :n] = 1
        rewards[i, n - 1] = float(torch.rand(()) > 0.5)
    mask[-1] = 0
    rewards[-1] = 0  # padding row
    cfg = OmegaConf.create({"gamma": gamma, "rftt_normalize": "global"})
    ref_adv, ref_ret = core_algos.get_adv_estimator_fn("reinforce_plus_plus")(
        token_level_rewards=rewards, response_mask=mask, config=cfg)
    ours = core_algos.get_adv_estimator_fn("rftt_tree")(token_level_rewards=rewards, response_mask=mask, config=cfg,
                                                       index=[str(i // 4) for i in range(bs)])
    torch.testing.assert_close(ours[0], ref_adv, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours[1], ref_ret, atol=1e-6, rtol=1e-5)


def test_estimator_requires_normalize_setting():
    from omegaconf import OmegaConf

    from rftt_plugin.integration.estimator import compute_rftt_tree_advantage

    with pytest.raises(ValueError, match="recipe=rftt_tree"):
        compute_rftt_tree_advantage(torch.zeros(2, 3), torch.ones(2, 3), config=OmegaConf.create({"gamma": 1.0}))


def test_unknown_normalize_mode_is_rejected():
    with pytest.raises(ValueError, match="normalize"):
        rftt_tree_advantage(torch.zeros(2, 3), torch.ones(2, 3), normalize="per-leaf")


def test_step_credit_and_dense_rewards_place_values():
    credit = step_credit([0.5, 1.0], root_value=0.25, weight=0.5)
    assert credit == [0.125, 0.25]
    dense = dense_rewards([1] * 8, [2, 5], credit, outcome=1.0)
    assert dense == [0, 0, 0.125, 0, 0, 0.25, 0, 1.0]
    with pytest.raises(ValueError):
        dense_rewards([1] * 4, [9], [1.0], outcome=0.0)


def test_outcome_is_never_placed_on_a_masked_token():
    """loss_on_inserted=false masks the inserted EOS (last id): the outcome must move to the last trained id."""
    mask = [0, 1, 1, 1, 0, 1, 1, 0]     # opening tag, text, closing tag, newline, ..., EOS
    dense = dense_rewards(mask, [3, 6], [0.2, -0.1], outcome=1.0)
    assert dense == [0, 0, 0, 0.2, 0, 0, 0.9, 0]
    # a step end on a masked id moves to the trained id before it
    assert dense_rewards([1, 0, 0, 1], [2], [0.5], outcome=0.0) == [0.5, 0, 0, 0]
    # and the estimator sees the whole outcome in every trained token's return
    adv, ret = rftt_tree_advantage(torch.tensor([dense], dtype=torch.float64), torch.tensor([mask]),
                                   normalize="none")
    assert ret[0].tolist() == pytest.approx([0, 1.1, 1.1, 1.1, 0, 0.9, 0.9, 0])


def test_verl_reinforce_plus_plus_keeps_the_moved_outcome():
    """The same placement through verl's own REINFORCE++ (recipe rftt): the outcome reaches every token."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo import core_algos

    mask = torch.tensor([[0, 1, 1, 1, 0, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1, 1]], dtype=torch.float32)
    rewards = torch.tensor([dense_rewards(mask[0].int().tolist(), [], [], 1.0),
                            dense_rewards(mask[1].int().tolist(), [], [], 0.0)], dtype=torch.float32)
    _, returns = core_algos.get_adv_estimator_fn("reinforce_plus_plus")(
        token_level_rewards=rewards, response_mask=mask, config=OmegaConf.create({"gamma": 1.0}))
    assert returns[0, 1].item() == pytest.approx(1.0) and returns[0, 6].item() == pytest.approx(1.0)


def _verl_batch(normalize):
    """A DataProto as the trainer builds it: tree rows + one synthetic padding row."""
    from verl import DataProto

    torch.manual_seed(1)
    bs, length = 9, 10
    mask = torch.ones(bs, length)
    mask[:, 7:] = 0
    mask[-1] = 0
    rewards = torch.zeros(bs, length)
    rewards[:-1, 6] = torch.tensor([1.0, 0.1, 0.0, 1.0, 1.0, 0.0, 0.1, 0.0])
    rewards[:-1, 3] = 0.2  # step credit at a closing tag
    uids = np.array(["a", "a", "a", "a", "b", "b", "b", "b", "pad_x"], dtype=object)
    data = DataProto.from_dict(tensors={"token_level_rewards": rewards, "response_mask": mask},
                               non_tensors={"uid": uids})
    return data, rewards, mask, uids


@pytest.mark.parametrize("normalize", ["global", "tree"])
def test_estimator_through_verl_compute_advantage(normalize):
    from omegaconf import OmegaConf
    from verl.trainer.ppo.ray_trainer import compute_advantage

    data, rewards, mask, uids = _verl_batch(normalize)
    cfg = OmegaConf.create({"gamma": 1.0, "lam": 1.0, "adv_estimator": "rftt_tree", "rftt_normalize": normalize})
    out = compute_advantage(data, adv_estimator="rftt_tree", gamma=1.0, lam=1.0, num_repeat=4, config=cfg)
    adv = out.batch["advantages"]
    returns = _reference_returns(rewards.tolist(), mask.tolist(), 1.0)
    reference = _reference_global_adv if normalize == "global" else (
        lambda r, m: _reference_tree_adv(r, m, list(uids)))
    expected = torch.tensor(reference(returns, mask.tolist()), dtype=adv.dtype)
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=1e-5)
    assert torch.all(adv[-1] == 0)
    assert adv[:-1][mask[:-1].bool()].abs().sum() > 0


def test_estimator_through_verl_v1_multi_trajectory_wrapper():
    from omegaconf import OmegaConf
    from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories

    data, rewards, mask, uids = _verl_batch("tree")
    cfg = OmegaConf.create({"gamma": 1.0, "lam": 1.0, "adv_estimator": "rftt_tree", "rftt_normalize": "tree"})
    out = compute_advantage_for_multi_trajectories(data, batch_keys=list(data.batch.keys()), adv_estimator="rftt_tree",
                                                   gamma=1.0, lam=1.0, num_repeat=4, norm_adv_by_std_in_grpo=True,
                                                   config=cfg)
    expected = _reference_tree_adv(_reference_returns(rewards.tolist(), mask.tolist(), 1.0), mask.tolist(), list(uids))
    torch.testing.assert_close(out.batch["advantages"], torch.tensor(expected, dtype=torch.float32), atol=1e-5,
                               rtol=1e-5)


def test_rftt_tree_recipe_composes_and_validates(tiny_model_dir):
    import verl  # noqa: F401
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=["+recipe=rftt_tree", f"actor_rollout_ref.model.path={tiny_model_dir}",
                                                            "rftt.credit.normalize=global"])
    assert cfg.algorithm.adv_estimator == "rftt_tree"
    assert cfg.algorithm.rftt_normalize == "global"
    assert cfg.rftt.recipe == "rftt_tree" and cfg.rftt.credit.mode == "tree"
    assert cfg.actor_rollout_ref.rollout.agent.default_agent_loop == "rftt_tree"  # inherited from recipe rftt
    assert cfg.algorithm.kl_ctrl.kl_coef == 0.01
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
