"""A dropped leaf (no row) leaves REINFORCE++ whitening of the other rows exactly as if the batch
had only those rows, also after verl pads the batch with its all-masked no-op rows."""

from __future__ import annotations

import torch


def _rpp(rewards, mask):
    from omegaconf import OmegaConf
    from verl.trainer.ppo.core_algos import compute_reinforce_plus_plus_outcome_advantage

    return compute_reinforce_plus_plus_outcome_advantage(rewards, mask, config=OmegaConf.create({"gamma": 1.0}))[0]


def _batch(outcomes, lengths, width=6):
    rewards = torch.zeros(len(outcomes), width)
    mask = torch.zeros(len(outcomes), width)
    for i, (r, n) in enumerate(zip(outcomes, lengths)):
        mask[i, :n] = 1
        rewards[i, n - 1] = r
    return rewards, mask


def test_padding_rows_after_a_dropped_leaf_do_not_move_the_advantages():
    kept_r, kept_m = _batch([1.0, 0.1, 0.0, 1.0], [3, 5, 2, 6])
    alone = _rpp(kept_r, kept_m)
    # verl pads the batch to a multiple with rows whose response mask is all zero (padding_utils)
    pad_r, pad_m = torch.zeros(2, 6), torch.zeros(2, 6)
    padded = _rpp(torch.cat([kept_r, pad_r]), torch.cat([kept_m, pad_m]))
    torch.testing.assert_close(padded[:4], alone)
    assert torch.count_nonzero(padded[4:]) == 0
    # by hand: returns are the outcome on every valid token; whitening over the 16 valid tokens
    returns = torch.tensor([1.0] * 3 + [0.1] * 5 + [0.0] * 2 + [1.0] * 6)
    mean, std = returns.mean(), returns.std()  # unbiased, as verl's masked_var
    torch.testing.assert_close(alone[0, 0], (1.0 - mean) / std, atol=1e-4, rtol=0)
    # a made-up 0 for the dropped leaf would have moved every other row's advantage
    faked_r, faked_m = _batch([1.0, 0.1, 0.0, 1.0, 0.0], [3, 5, 2, 6, 4])
    assert not torch.allclose(_rpp(faked_r, faked_m)[:4], alone)
