"""Credit assignment for RFTT: tree values -> per-token rewards -> returns -> advantages.

Pure Python/torch, no verl; torch is imported only by the functions that compute tensors, so the
agent loop's list helpers (:func:`step_credit`, :func:`dense_rewards`, :func:`last_trained_index`)
work without it. ``rftt_plugin.integration.estimator`` registers :func:`rftt_tree_advantage` with
verl as the advantage estimator ``rftt_tree``.

**This is rftt-plugin's extension, not the paper's method.** The paper (and recipe ``rftt``) puts
the outcome reward on the last token and uses REINFORCE++; everything below beyond that is opt-in
through recipe ``rftt_tree``.

Per-token rewards of one leaf (written by the ``rftt_tree`` agent loop as ``rm_scores``)::

    r_t = R_leaf                                   at the last *trained* response token
        + w * (V(s_k) - V(parent(s_k)))            at the closing-tag token of step k, k = 1..n
        + 0                                        elsewhere

where ``R_leaf`` is the outcome reward of the leaf (rule ``rftt``: 1 / 0.1 / 0), ``V(s) = Q(s)/N(s)``
is the node's mean backed-up reward in the search tree (the root's value for ``parent`` of the
first step), and ``w = rftt.credit.step_weight`` (0 = outcome only). "Last trained token" is the
last token whose loss mask is 1: with ``rftt.search.loss_on_inserted=false`` the EOS the search
inserts is masked, and a reward placed there would be dropped by every estimator. With KL in the
reward, verl subtracts ``beta * KL_t`` from every ``r_t`` before the estimator runs.

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
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

NORMALIZE_MODES = ("global", "tree", "none")
DEFAULT_MIN_STD = 0.1
_EPS = 1e-8


def returns_to_go(token_level_rewards: "torch.Tensor", response_mask: "torch.Tensor", gamma: float) -> "torch.Tensor":
    """``G_t = r_t + gamma * G_{t+1}`` on valid tokens; masked tokens carry the return through.

    For ``gamma == 1`` this is a reverse cumulative sum of the masked rewards (one vectorised
    op); otherwise the recursion runs over the time axis (vectorised over rows).
    """
    import torch

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


def _masked_std(values: "torch.Tensor", mask: "torch.Tensor") -> "tuple[torch.Tensor, torch.Tensor]":
    """(mean, unbiased variance) over the valid tokens, as verl's ``masked_mean``/``masked_var``."""
    n = mask.sum()
    mean = (values * mask).sum() / (n + _EPS)
    var = (((values - mean) ** 2) * mask).sum() / (n + _EPS) * (n / (n - 1))
    return mean, var


def _scale(var: "torch.Tensor", min_std: float) -> "torch.Tensor":
    import torch

    # verl's whitening multiplies by rsqrt(var + eps); keep that form so that the unfloored case
    # is bit-for-bit REINFORCE++, and floor the variance instead of the std.
    return torch.rsqrt(torch.clamp(var, min=min_std * min_std) + _EPS)


def _global_whiten(values: "torch.Tensor", mask: "torch.Tensor", min_std: float) -> "torch.Tensor":
    if mask.sum() < 2:
        return values * 0.0
    mean, var = _masked_std(values, mask)
    return (values - mean) * _scale(var, min_std)


def _group_ids(index: Sequence) -> "torch.Tensor":
    import torch

    lookup: dict = {}
    return torch.tensor([lookup.setdefault(str(i), len(lookup)) for i in index], dtype=torch.long)


def _tree_centre(values: "torch.Tensor", mask: "torch.Tensor", index: Sequence) -> "torch.Tensor":
    """``G_t - mean_T(G)`` on valid tokens (0 elsewhere), ``T`` = the rows sharing the row's uid."""
    import torch

    groups = _group_ids(index).to(values.device)
    n_groups = int(groups.max().item()) + 1 if len(groups) else 0
    zeros = torch.zeros(n_groups, dtype=values.dtype, device=values.device)
    tok_sum = zeros.clone().index_add_(0, groups, (values * mask).sum(1))
    tok_cnt = zeros.clone().index_add_(0, groups, mask.sum(1))
    mean = tok_sum / tok_cnt.clamp_min(1.0)
    return (values - mean[groups].unsqueeze(1)) * mask


def _tree_whiten(values: "torch.Tensor", mask: "torch.Tensor", index: Sequence, min_std: float) -> "torch.Tensor":
    centred = _tree_centre(values, mask, index)
    if mask.sum() < 2:
        return centred * 0.0
    _, var = _masked_std(centred, mask)
    return centred * _scale(var, min_std)


def rftt_tree_advantage(token_level_rewards: "torch.Tensor", response_mask: "torch.Tensor", *, gamma: float = 1.0,
                        normalize: str = "global", index: Sequence | None = None,
                        min_std: float = DEFAULT_MIN_STD) -> "tuple[torch.Tensor, torch.Tensor]":
    """Advantages and returns for dense per-token rewards (see the module docstring for the formula)."""
    import torch

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


def step_credit(node_values: Sequence[float], root_value: float, weight: float) -> list[float]:
    """Per-step rewards ``weight * (V(s_k) - V(s_{k-1}))`` along a path (``s_0`` = root).

    >>> step_credit([0.5, 1.0, 1.0], root_value=0.25, weight=1.0)
    [0.25, 0.5, 0.0]
    >>> step_credit([0.5], root_value=0.5, weight=0.0)
    [0.0]
    """
    values = [float(root_value), *map(float, node_values)]
    return [weight * (values[k + 1] - values[k]) for k in range(len(node_values))]


def last_trained_index(loss_mask: Sequence[int]) -> int | None:
    """Index of the last token with loss mask 1 (``None`` when nothing is trained).

    >>> last_trained_index([1, 1, 0, 1, 0])
    3
    >>> last_trained_index([0, 0]) is None
    True
    """
    for t in range(len(loss_mask) - 1, -1, -1):
        if loss_mask[t]:
            return t
    return None


def _trained_position(loss_mask: Sequence[int], pos: int) -> int | None:
    """``pos`` if it is trained, else the closest trained token before it, else the first after it."""
    for t in range(pos, -1, -1):
        if loss_mask[t]:
            return t
    for t in range(pos + 1, len(loss_mask)):
        if loss_mask[t]:
            return t
    return None


def dense_rewards(loss_mask: Sequence[int], step_end_positions: Sequence[int], step_rewards: Sequence[float],
                  outcome: float) -> list[float]:
    """Per-token rewards: step credit at each step's closing-tag token, the outcome on the last
    *trained* token (loss mask 1). A value that would land on a masked token moves to the closest
    trained token before it, because every estimator ignores rewards on masked tokens.

    >>> dense_rewards([1, 1, 1, 1, 1, 1], [1, 4], [0.1, -0.2], outcome=1.0)
    [0.0, 0.1, 0.0, 0.0, -0.2, 1.0]
    >>> dense_rewards([0, 1, 1, 0, 1, 0], [2], [0.5], outcome=1.0)   # inserted EOS masked
    [0.0, 0.0, 0.5, 0.0, 1.0, 0.0]
    >>> dense_rewards([0, 0], [], [], outcome=1.0)                   # nothing trained
    [0.0, 0.0]
    """
    n = len(loss_mask)
    if n == 0:
        return []
    if len(step_end_positions) != len(step_rewards):
        raise ValueError(f"{len(step_end_positions)} step ends but {len(step_rewards)} step rewards")
    out = [0.0] * n
    last = last_trained_index(loss_mask)
    if last is None:
        return out
    for pos, r in zip(step_end_positions, step_rewards):
        if not 0 <= pos < n:
            raise ValueError(f"step end {pos} outside a response of {n} tokens")
        at = _trained_position(loss_mask, pos)
        out[at] += float(r)  # type: ignore[index]
    out[last] += float(outcome)
    return out
