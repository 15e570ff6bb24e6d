"""Per-training-step tree metrics: the trained rows' ``extra_fields`` -> ``{"rftt/...": float}``.

The ``rftt_tree`` agent loop writes, into every row it emits (one row = one trained leaf):

* leaf keys (about this row): ``rftt_leaf_steps``, ``rftt_leaf_duplicate``, ``rftt_terminal_reason``,
  ``rftt_format_ok`` and ``reward_extra_info["acc"/"has_answer"]``;
* ``rftt_tree``: a dict about the row's whole tree (:data:`TREE_KEYS`), the same on every row of
  the tree, so it is counted once per ``uid`` -- also when some of the tree's sessions emitted no
  row (a fault), which is why fault counts live here and not on the (absent) rows.

:func:`step_metrics` aggregates the rows of one sampled batch (verl's replay buffer calls it,
``rftt_plugin.integration.replay_order``); docs/training-metrics.md explains every key. Pure:
no verl, no torch. Counts are sums over the step's trees; ``_mean``/``_share`` keys are means.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rftt_plugin.search.tree import FAULT_CAUSES, TERMINAL_REASONS
from rftt_plugin.tokens import TAGS

PREFIX = "rftt"
# the tree dict's keys (all optional: a missing one is skipped, never guessed)
TREE_KEYS = ("uid", "sessions", "distinct_leaves", "nodes", "depth", "llm_calls", "token_ratio", "tags",
             "masked", "faults", "retries", "prm_calls", "prm_failures", "policy_path_acc",
             "prompt_tokens", "cached_tokens")
# terminal reasons of trained rows: the search's, plus verl's response-length cut
LEAF_REASONS = tuple(r for r in TERMINAL_REASONS if r != "error") + ("response_length",)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _unwrap(row: Any) -> Any:
    return getattr(row, "data", row)  # TransferQueue hands non-tensor fields over wrapped


def _sum(trees: list[Mapping], key: str) -> float:
    return float(sum(_number(t.get(key)) or 0.0 for t in trees))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def step_metrics(rows: Iterable[Any]) -> dict[str, float]:
    """Metrics of one training step from its rows' ``extra_fields`` (non-dict rows are skipped).

    >>> row = {"rftt_leaf_steps": 3, "rftt_terminal_reason": "output", "reward_extra_info": {"acc": 1.0},
    ...        "rftt_tree": {"uid": "u", "sessions": 2, "masked": {"step_error": 1}, "policy_path_acc": 1.0}}
    >>> m = step_metrics([row])
    >>> m["rftt/rows"], m["rftt/masked/step_error"], m["rftt/leaf/acc_mean"], m["rftt/policy_path_acc"]
    (1.0, 1.0, 1.0, 1.0)
    """
    leaves = [r for r in (_unwrap(r) for r in rows) if isinstance(r, Mapping)]
    trees: dict[str, Mapping] = {}
    for i, row in enumerate(leaves):
        tree = _unwrap(row.get("rftt_tree"))
        if isinstance(tree, Mapping):
            trees.setdefault(str(tree.get("uid", f"row{i}")), tree)
    if not leaves:
        return {}
    p = PREFIX
    out: dict[str, float] = {f"{p}/rows": float(len(leaves)), f"{p}/trees": float(len(trees))}
    tree_list = list(trees.values())

    # -- leaves (the trained rows) --
    def leaf_mean(name: str, values: list[float | None]) -> None:
        got = [v for v in values if v is not None]
        if got:
            out[f"{p}/leaf/{name}"] = sum(got) / len(got)

    infos = [r.get("reward_extra_info") if isinstance(r.get("reward_extra_info"), Mapping) else {} for r in leaves]
    leaf_mean("steps_mean", [_number(r.get("rftt_leaf_steps")) for r in leaves])
    leaf_mean("acc_mean", [_number(i.get("acc")) for i in infos])
    leaf_mean("answered_share", [_number(i.get("has_answer")) for i in infos])
    leaf_mean("format_ok_share", [_number(r.get("rftt_format_ok")) for r in leaves])
    leaf_mean("duplicate_share", [_number(r.get("rftt_leaf_duplicate")) for r in leaves])
    reasons = [r.get("rftt_terminal_reason") for r in leaves if isinstance(r.get("rftt_terminal_reason"), str)]
    if reasons:
        for reason in LEAF_REASONS:
            out[f"{p}/leaf/terminal/{reason}_share"] = sum(x == reason for x in reasons) / len(reasons)

    if not tree_list:
        return out
    # -- trees (once per uid) --
    for key, name in (("sessions", "leaves_mean"), ("distinct_leaves", "distinct_leaves_mean"),
                      ("nodes", "nodes_mean"), ("depth", "depth_mean"), ("llm_calls", "llm_calls_mean"),
                      ("token_ratio", "token_ratio_mean")):
        value = _mean([v for v in (_number(t.get(key)) for t in tree_list) if v is not None])
        if value is not None:
            out[f"{p}/tree/{name}"] = value
    depths = [v for v in (_number(t.get("depth")) for t in tree_list) if v is not None]
    if depths:
        out[f"{p}/tree/depth_max"] = max(depths)
    tag_counts = {tag.value: 0.0 for tag in TAGS}
    for t in tree_list:
        for tag, count in (t.get("tags") or {}).items():
            if tag in tag_counts:
                tag_counts[tag] += _number(count) or 0.0
    steps = sum(tag_counts.values())
    if steps:
        for tag, count in tag_counts.items():
            out[f"{p}/tags/{tag}_share"] = count / steps
    policy = [v for v in (_number(t.get("policy_path_acc")) for t in tree_list) if v is not None]
    if policy:
        out[f"{p}/policy_path_acc"] = sum(policy) / len(policy)

    # -- faults: every cause always present, so a curve has no gaps --
    masked = {cause: 0.0 for cause in FAULT_CAUSES}
    faults = {cause: 0.0 for cause in FAULT_CAUSES}
    for t in tree_list:
        for target, key in ((masked, "masked"), (faults, "faults")):
            for cause, count in (t.get(key) or {}).items():
                target[cause] = target.get(cause, 0.0) + (_number(count) or 0.0)
    for cause, count in masked.items():
        out[f"{p}/masked/{cause}"] = count
    out[f"{p}/masked/total"] = sum(masked.values())
    out[f"{p}/faults/failed_steps"] = faults.get("step_error", 0.0)
    out[f"{p}/faults/retried_calls"] = _sum(tree_list, "retries")
    out[f"{p}/grader/timeouts"] = faults.get("grade_timeout", 0.0)
    out[f"{p}/grader/errors"] = faults.get("grade_error", 0.0)
    out[f"{p}/prm/calls"] = _sum(tree_list, "prm_calls")
    out[f"{p}/prm/failures"] = _sum(tree_list, "prm_failures")

    # -- the read-out's prefix-cache share, where the rollout engine reports cached tokens --
    reported = [t for t in tree_list if _number(t.get("cached_tokens")) is not None and _number(t.get("prompt_tokens"))]
    if reported:
        out[f"{p}/readout/cache_share"] = _sum(reported, "cached_tokens") / _sum(reported, "prompt_tokens")
    return out
