"""The ``rftt_tree`` advantage estimator: per-token rewards -> returns -> advantages (torch).

The per-token rewards come from :mod:`rftt_plugin.search.credit`; this module is what
``rftt_plugin.integration.estimator`` registers with verl as ``rftt_tree``.
**This is rftt-plugin's extension, not the paper's method** (the paper uses REINFORCE++ on the
outcome reward; recipe ``rftt``).

Estimator ``rftt_tree`` (returns-to-go, then normalisation)::

    G_t = r_t + gamma * G_{t+1}        over response tokens (mask = 1); masked tokens carry G unchanged
    normalize = "global":  A_t = (G_t - mean_B(G)) / max(std_B(G), min_std)
    normalize = "tree":    C_t = G_t - mean_T(G)                (mean over the valid tokens of the
                                                                 rows sharing the row's uid = one tree)
                           A_t = C_t / max(std_B(C), min_std)   (std over all valid tokens of the batch)
    normalize = "none":    A_t = G_t
    A_t = A_t * mask_t

``mean_B``/``std_B`` run over all valid tokens of the batch (unbiased variance, as verl's
``masked_whiten``). Why the tree mode divides by the *batch* spread and why there is a floor: a
tree whose leaves all share one outcome has returns that differ only by ``beta * (remaining KL)``
(order 1e-3). Dividing such a tree by its own standard deviation would blow that noise up to unit
variance and bias early tokens against late ones. With the per-tree mean as a baseline and the
batch's spread as the scale, an equal-outcome tree keeps advantages of the order of its KL noise
divided by the batch spread; ``min_std`` (``rftt.credit.min_std``, 0.1 by default, on the reward
scale 1 / 0.1 / 0) bounds the amplification when the whole batch shares one outcome.
With terminal-only rewards, ``normalize="global"`` and a batch spread of at least ``min_std`` (or
``min_std=0``), this is exactly verl's ``reinforce_plus_plus`` (same recursion, same unbiased masked
whitening with eps 1e-8). Rows whose mask is all zero (verl's synthetic padding rows) get zero
advantage and do not touch any statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rftt_plugin.search.credit import NORMALIZE_MODES
DEFAULT_MIN_STD = 0.1  # the same default as rftt.credit.min_std (config.schema.CreditSettings)
_EPS = 1e-8


def returns_to_go(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """``G_t = r_t + gamma * G_{t+1}`` on valid tokens; masked tokens carry the return through.

    For ``gamma == 1`` this is a reverse cumulative sum of the masked rewards (one vectorised
    op); otherwise the recursion runs over the time axis (vectorised over rows).
    """
    mask = response_mask.to(token_level_rewards.dtype)
    if gamma == 1.0:
        rewards = token_level_rewards * mask
        return torch.flip(torch.cumsum(torch.flip(rewards, dims=[1]), dim=1), dims=[1]) * mask
    returns = torch.zeros_like(token_level_rewards)
    running = torch.zeros_like(token_level_rewards[:, 0])
    for t in reversed(range(token_level_rewards.shape[1])):
        m = mask[:, t]
        new_running = token_level_rewards[:, t] + gamma * running
        returns[:, t] = new_running * m
        running = new_running * m + running * (1 - m)
    return returns


def _masked_std(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, unbiased variance) over the valid tokens, as verl's ``masked_mean``/``masked_var``."""
    n = mask.sum()
    mean = (values * mask).sum() / (n + _EPS)
    var = (((values - mean) ** 2) * mask).sum() / (n + _EPS) * (n / (n - 1))
    return mean, var


def _scale(var: torch.Tensor, min_std: float) -> torch.Tensor:
    # verl's whitening multiplies by rsqrt(var + eps); keep that form so that the unfloored case
    # is bit-for-bit REINFORCE++, and floor the variance instead of the std.
    return torch.rsqrt(torch.clamp(var, min=min_std * min_std) + _EPS)


def _global_whiten(values: torch.Tensor, mask: torch.Tensor, min_std: float) -> torch.Tensor:
    if mask.sum() < 2:
        return values * 0.0
    mean, var = _masked_std(values, mask)
    return (values - mean) * _scale(var, min_std)


def _group_ids(index: Sequence) -> torch.Tensor:
    lookup: dict = {}
    return torch.tensor([lookup.setdefault(str(i), len(lookup)) for i in index], dtype=torch.long)


def _tree_centre(values: torch.Tensor, mask: torch.Tensor, index: Sequence) -> torch.Tensor:
    """``G_t - mean_T(G)`` on valid tokens (0 elsewhere), ``T`` = the rows sharing the row's uid."""
    groups = _group_ids(index).to(values.device)
    n_groups = int(groups.max().item()) + 1 if len(groups) else 0
    zeros = torch.zeros(n_groups, dtype=values.dtype, device=values.device)
    tok_sum = zeros.clone().index_add_(0, groups, (values * mask).sum(1))
    tok_cnt = zeros.clone().index_add_(0, groups, mask.sum(1))
    mean = tok_sum / tok_cnt.clamp_min(1.0)
    return (values - mean[groups].unsqueeze(1)) * mask


def _tree_whiten(values: torch.Tensor, mask: torch.Tensor, index: Sequence, min_std: float) -> torch.Tensor:
    centred = _tree_centre(values, mask, index)
    if mask.sum() < 2:
        return centred * 0.0
    _, var = _masked_std(centred, mask)
    return centred * _scale(var, min_std)


def rftt_tree_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, *, gamma: float = 1.0,
                        normalize: str = "global", index: Sequence | None = None,
                        min_std: float = DEFAULT_MIN_STD) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns for dense per-token rewards (see the module docstring for the formula)."""
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"rftt.credit.normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    if min_std < 0:
        raise ValueError(f"rftt.credit.min_std must be >= 0, got {min_std!r}")
    if token_level_rewards.shape != response_mask.shape:
        raise ValueError(f"rewards {tuple(token_level_rewards.shape)} and mask {tuple(response_mask.shape)} differ")
    with torch.no_grad():
        mask = response_mask.to(token_level_rewards.dtype)
        returns = returns_to_go(token_level_rewards, mask, gamma)
        if normalize == "global":
            adv = _global_whiten(returns, mask, min_std)
        elif normalize == "tree":
            if index is None or len(index) != returns.shape[0]:
                raise ValueError("normalize='tree' needs one index (uid) per row")
            adv = _tree_whiten(returns, mask, index, min_std)
        else:
            adv = returns
        return adv * mask, returns
