"""Credit assignment for RFTT: tree values -> per-token rewards -> returns -> advantages.

Pure torch (no verl). ``rftt_plugin.integration.estimator`` registers :func:`rftt_tree_advantage`
with verl as the advantage estimator ``rftt_tree``.

Per-token rewards of one leaf (written by the ``rftt_tree`` agent loop as ``rm_scores``)::

    r_t = R_leaf                                   at the last response token
        + w * (V(s_k) - V(parent(s_k)))            at the closing-tag token of step k, k = 1..n
        + 0                                        elsewhere

where ``R_leaf`` is the outcome reward of the leaf (rule ``rftt``: 1 / 0.1 / 0), ``V(s) = Q(s)/N(s)``
is the node's mean backed-up reward in the search tree (the root's value for ``parent`` of the
first step), and ``w = rftt.credit.step_weight`` (0 = outcome only, the paper's setting). With KL in
the reward, verl subtracts ``beta * KL_t`` from every ``r_t`` before the estimator runs.

Estimator ``rftt_tree`` (returns-to-go, then normalisation)::

    G_t = r_t + gamma * G_{t+1}        over response tokens (mask = 1); masked tokens carry G unchanged
    A_t = (G_t - mean) / std           normalize = "global": mean/std over all valid tokens of the batch
                                       normalize = "tree":   mean/std over the valid tokens of the rows
                                                             sharing the row's index (uid = one tree)
                                       normalize = "none":   A_t = G_t
    A_t = A_t * mask_t

With terminal-only rewards and ``normalize="global"`` this is exactly verl's
``reinforce_plus_plus`` (same recursion, same unbiased masked whitening with eps 1e-8).
Rows whose mask is all zero (verl's synthetic padding rows) get zero advantage; under
``normalize="tree"`` they are their own group and do not touch any tree's statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

NORMALIZE_MODES = ("global", "tree", "none")
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


def _global_whiten(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    n = mask.sum()
    if n < 2:
        return values * 0.0
    mean = (values * mask).sum() / (n + _EPS)
    var = (((values - mean) ** 2) * mask).sum() / (n + _EPS) * (n / (n - 1))
    return (values - mean) * torch.rsqrt(var + _EPS)


def _group_ids(index: Sequence) -> torch.Tensor:
    lookup: dict = {}
    return torch.tensor([lookup.setdefault(str(i), len(lookup)) for i in index], dtype=torch.long)


def _tree_whiten(values: torch.Tensor, mask: torch.Tensor, index: Sequence) -> torch.Tensor:
    groups = _group_ids(index).to(values.device)
    n_groups = int(groups.max().item()) + 1 if len(groups) else 0
    tok_sum = torch.zeros(n_groups, dtype=values.dtype, device=values.device).index_add_(0, groups, (values * mask).sum(1))
    tok_cnt = torch.zeros(n_groups, dtype=values.dtype, device=values.device).index_add_(0, groups, mask.sum(1))
    mean = tok_sum / tok_cnt.clamp_min(1.0)
    centered = (values - mean[groups].unsqueeze(1)) * mask
    sq = torch.zeros(n_groups, dtype=values.dtype, device=values.device).index_add_(0, groups, (centered**2).sum(1))
    # unbiased, as verl's masked_var; a group with < 2 tokens or no spread gets advantage 0
    var = sq / (tok_cnt - 1).clamp_min(1.0)
    std = torch.sqrt(var)
    scale = torch.where(std > 1e-6, 1.0 / (std + _EPS), torch.zeros_like(std))
    return centered * scale[groups].unsqueeze(1)


def rftt_tree_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, *, gamma: float = 1.0,
                        normalize: str = "global", index: Sequence | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns for dense per-token rewards (see the module docstring for the formula)."""
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"rftt.credit.normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    if token_level_rewards.shape != response_mask.shape:
        raise ValueError(f"rewards {tuple(token_level_rewards.shape)} and mask {tuple(response_mask.shape)} differ")
    with torch.no_grad():
        mask = response_mask.to(token_level_rewards.dtype)
        returns = returns_to_go(token_level_rewards, mask, gamma)
        if normalize == "global":
            adv = _global_whiten(returns, mask)
        elif normalize == "tree":
            if index is None or len(index) != returns.shape[0]:
                raise ValueError("normalize='tree' needs one index (uid) per row")
            adv = _tree_whiten(returns, mask, index)
        else:
            adv = returns
        return adv * mask, returns


def step_credit(node_values: Sequence[float], root_value: float, weight: float) -> list[float]:
    """Per-step rewards ``weight * (V(s_k) - V(s_{k-1}))`` along a path (``s_0`` = root).

    >>> step_credit([0.5, 1.0, 1.0], root_value=0.25, weight=1.0)
    [0.25, 0.5, 0.0]
    >>> step_credit([0.5], root_value=0.5, weight=0.0)
    [0.0]
    """
    values = [float(root_value), *map(float, node_values)]
    return [weight * (values[k + 1] - values[k]) for k in range(len(node_values))]


def dense_rewards(response_length: int, step_end_positions: Sequence[int], step_rewards: Sequence[float],
                  outcome: float) -> list[float]:
    """Place step rewards at each step's closing-tag token and the outcome on the last token.

    >>> dense_rewards(6, [1, 4], [0.1, -0.2], outcome=1.0)
    [0.0, 0.1, 0.0, 0.0, -0.2, 1.0]
    """
    if response_length <= 0:
        return []
    if len(step_end_positions) != len(step_rewards):
        raise ValueError(f"{len(step_end_positions)} step ends but {len(step_rewards)} step rewards")
    out = [0.0] * response_length
    for pos, r in zip(step_end_positions, step_rewards):
        if not 0 <= pos < response_length:
            raise ValueError(f"step end {pos} outside a response of {response_length} tokens")
        out[pos] += float(r)
    out[-1] += float(outcome)
    return out
