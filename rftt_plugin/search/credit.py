"""Credit assignment along a tree path: node values -> per-token rewards (pure Python, no torch).

The ``rftt_tree`` agent loop calls :func:`leaf_token_rewards` for every leaf it hands to verl;
the resulting list is written as ``rm_scores``. The advantage estimator that turns these rewards
into advantages is :mod:`rftt_plugin.search.advantage` (torch), registered with verl as
``rftt_tree`` by ``rftt_plugin.integration.estimator``.

**This is rftt-plugin's extension, not the paper's method.** The paper (and recipe ``rftt``) puts
the outcome reward on the last token and uses REINFORCE++; step credit is opt-in through recipe
``rftt_tree``.

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
"""

from __future__ import annotations

from collections.abc import Sequence

CREDIT_MODES = ("outcome", "tree")            # rftt.credit.mode: the outcome on the last token, or step credit too
NORMALIZE_MODES = ("global", "tree", "none")  # rftt.credit.normalize: what the advantage is whitened over


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


def leaf_token_rewards(loss_mask: Sequence[int], step_ends: Sequence[int], node_values: Sequence[float],
                       root_value: float, outcome: float, *, step_weight: float, with_step_credit: bool) -> list[float]:
    """Per-token rewards of one (possibly length-cut) leaf: step credit (when ``with_step_credit``)
    at the step ends that fall inside the response, the outcome on the last trained token.

    ``step_ends`` and ``node_values`` describe the whole path; the response may have been cut to
    ``len(loss_mask)`` tokens, so steps ending beyond it get no credit.

    >>> leaf_token_rewards([1, 1, 1, 1], [1, 3], [0.5, 1.0], 0.25, 1.0, step_weight=1.0, with_step_credit=True)
    [0.0, 0.25, 0.0, 1.5]
    >>> leaf_token_rewards([1, 1, 0], [1, 9], [0.5, 1.0], 0.25, 1.0, step_weight=1.0, with_step_credit=True)
    [0.0, 1.25, 0.0]
    >>> leaf_token_rewards([1, 1, 0], [1], [0.5], 0.25, 1.0, step_weight=1.0, with_step_credit=False)
    [0.0, 1.0, 0.0]
    """
    n = len(loss_mask)
    ends: list[tuple[int, float]] = []
    if with_step_credit:
        credit = step_credit(node_values, root_value, step_weight)
        ends = [(int(e), c) for e, c in zip(step_ends, credit) if int(e) < n]
    return dense_rewards(loss_mask, [e for e, _ in ends], [c for _, c in ends], outcome)
