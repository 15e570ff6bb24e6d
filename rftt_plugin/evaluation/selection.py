"""Answer selection over the leaves of one test-time search, and scores per rollout budget.

Pure functions over :class:`LeafOutcome` records (one per MCTS iteration, in iteration order):
no model, no grader, no I/O. ``rftt_plugin.evaluation.job`` builds the records from a search tree.

**Budgets.** The faithful search (``distinct_leaves=False``) runs its iterations one after the
other and iteration *i* only depends on the back-ups of iterations < *i*. The first *k* leaves of
one search with *K* >= *k* iterations are therefore exactly the leaves of a *k*-iteration search
(same tree, same seeds), so one search with ``max(rollouts)`` iterations scores every budget.
Node values at budget *k* are recomputed from the first *k* back-ups (:func:`node_stats`), not
read from the final tree, so a budget never sees a later iteration.

**Selection rule** (:func:`select_answer`):

* Only *valid* leaves vote: the path ends in a closed ``<output>`` step holding a ``\\boxed{}``
  answer. Leaves cut by the depth cap, the token budget, a failed step... have no answer.
* Votes are grouped by *answer class*: leaves whose answers are equivalent share a class
  (:func:`assign_answer_classes`, first-come order, so classes of a prefix of the leaves are the
  prefix's own classes).
* ``majority`` (these functions' default; ``rftt eval`` defaults to ``policy``): the class with
  the most votes (every leaf is one rollout; a leaf the search reached again counts again); ties go to the class holding the path the policy itself
  prefers (the largest sum of the tag log-probs along a path, ``path_logprob``: the tag choices
  greedy decoding would make score highest), then to the larger summed leaf value, then to the
  class seen first. Why the policy's preference and not the value first: with the gold-free
  ``answered`` search reward every answering path is worth about the same, and breaking ties by
  summed value favoured whichever path happened to be visited more -- on the CPU toy after RL
  that turned a tie between the policy's own (right) strategy and a forced, unlikely one into
  the wrong answer on 1 question in 10 (docs/test-time-search.md).
* ``value``: the class with the largest summed leaf value; ties go to more votes, then to the
  class seen first.
* ``policy`` (the default of ``rftt eval``): each *distinct* leaf votes with the policy's own
  probability of its tag path, ``exp(path_logprob)``; the class with the largest total wins (ties:
  more votes, then the summed value, then first seen). It estimates which answer the policy's
  tag choices lead to, so a forced, unlikely tag path (UCT's exploration, prior 1e-4) cannot
  outvote the path the policy prefers, however often the search re-emits it; two plausible
  strategies both count. Without a verifier the toy's forced paths are worse than the
  policy's own, and ``majority`` let them win: docs/test-time-search.md. A leaf without nodes
  (a self-consistency chain) has ``path_logprob`` 0, so ``policy`` is then ``majority``.
* The *leaf value* of a leaf is the mean node value Q/N over the steps of its path (root
  excluded) as of that budget: how well the search rated the route that produced the answer. A
  self-consistency chain has no path in a tree: its value is its own reward (0, or the PRM's
  path score with ``--search-reward prm``), so ``value`` is then a PRM-weighted vote.
* The question counts as solved at budget *k* when the selected class's first leaf is correct.
  No valid leaf means no answer (not solved).

The values are only as informative as the reward the search backed up; at test time that reward
must not use the gold answer (see ``search_reward`` in ``rftt_plugin.evaluation.job``).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

SELECTION_RULES = ("policy", "majority", "value")
_VALUE_DIGITS = 9  # values are compared after rounding: float sums must not decide ties by noise


@dataclass(frozen=True)
class LeafOutcome:
    """What evaluation keeps of one search leaf (one iteration)."""

    pred: str | None                 # the extracted answer, None when the path has none
    acc: bool                        # pred is equivalent to the gold answer
    valid: bool                      # closed <output> step with a boxed answer: may vote
    format_ok: bool                  # the path passes rftt_plugin.tokens.validate
    reward: float                    # the reward the search backed up for this leaf
    node_ids: tuple[int, ...]        # the path's node ids (root excluded)
    new_tokens: int = 0              # ids sampled in this iteration (steps shared with earlier paths: 0)
    answer_class: int | None = None  # leaves with equivalent answers share a class
    terminal_reason: str = "output"
    path_logprob: float = 0.0        # sum of the policy's log-probs of the tags chosen along the path

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["node_ids"] = list(self.node_ids)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LeafOutcome":
        d = dict(d)
        d["node_ids"] = tuple(int(i) for i in d.get("node_ids", ()))
        return cls(**d)


@dataclass(frozen=True)
class Selection:
    """The answer chosen over a set of leaves (``leaf_index`` None: nothing to choose)."""

    leaf_index: int | None
    answer_class: int | None = None
    pred: str | None = None
    votes: int = 0
    value: float = 0.0
    candidates: int = 0              # number of distinct answer classes that voted


@dataclass(frozen=True)
class BudgetOutcome:
    """One question at one rollout budget."""

    k: int
    pred: str | None
    acc: bool                        # the selected answer is correct
    answered: bool                   # some leaf voted
    format_ok: bool                  # the selected leaf passes the format check
    pass_any: bool                   # some voting leaf among the first k is correct (oracle pass@k)
    valid_leaves: int
    tokens: int                      # ids sampled by the first k iterations
    votes: int = 0
    value: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# Answer classes
# ----------------------------------------------------------------------------------------------

_CANON_DROP = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\ |\$|\s+")


def canonical_answer(text: str) -> str:
    """A cheap canonical form for grouping answers before any symbolic check.

    >>> canonical_answer(r"\\left( 3, \\dfrac{\\pi}{2} \\right).")
    '(3,\\\\frac{\\\\pi}{2})'
    """
    s = _CANON_DROP.sub("", text)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return s.rstrip(".")


def assign_answer_classes(preds: Sequence[str | None],
                          same: Callable[[str, str], bool] | None = None) -> list[int | None]:
    """Class index per answer (None for no answer), first-come: a new answer joins the first
    earlier class whose representative (its first answer) it matches, else opens a new class.

    Answers with the same :func:`canonical_answer` always match; ``same(answer, representative)``
    decides the rest (e.g. a symbolic equivalence check). Because classes are assigned in order,
    the classes of ``preds[:k]`` are the first ``k`` entries of the result.

    >>> assign_answer_classes(["1/2", None, "\\\\frac{1}{2}", "3", " 3 "], same=lambda a, b: {a, b} == {"1/2", "\\\\frac{1}{2}"})
    [0, None, 0, 1, 1]
    """
    reps: list[tuple[str, str]] = []  # (answer, canonical) of each class's first answer
    out: list[int | None] = []
    for pred in preds:
        if pred is None or not str(pred).strip():
            out.append(None)
            continue
        canon = canonical_answer(pred)
        found = None
        for index, (rep, rep_canon) in enumerate(reps):
            if canon == rep_canon or (same is not None and same(pred, rep)):
                found = index
                break
        if found is None:
            reps.append((pred, canon))
            found = len(reps) - 1
        out.append(found)
    return out


# ----------------------------------------------------------------------------------------------
# Node values at a budget
# ----------------------------------------------------------------------------------------------

def node_stats(leaves: Iterable[LeafOutcome]) -> dict[int, tuple[float, int]]:
    """(Q, N) of every node after backing up these leaves: Q += reward, N += 1 along each path."""
    stats: dict[int, list] = {}
    for leaf in leaves:
        for node_id in leaf.node_ids:
            entry = stats.setdefault(node_id, [0.0, 0])
            entry[0] += leaf.reward
            entry[1] += 1
    return {k: (q, n) for k, (q, n) in stats.items()}


def leaf_value(leaf: LeafOutcome, stats: dict[int, tuple[float, int]]) -> float:
    """Mean Q/N over the leaf's path; a leaf without nodes (a self-consistency chain: no tree to
    back up into) is worth its own reward."""
    if not leaf.node_ids:
        return leaf.reward
    values = [stats[i][0] / stats[i][1] for i in leaf.node_ids if i in stats and stats[i][1]]
    return sum(values) / len(values) if values else 0.0


# ----------------------------------------------------------------------------------------------
# Selection and budgets
# ----------------------------------------------------------------------------------------------

@dataclass
class _Candidate:
    answer_class: int
    first: int
    votes: int = 0
    value: float = 0.0
    path_logprob: float = -math.inf  # the best (most probable) path among the class's leaves
    weight: float = 0.0              # policy: summed exp(path_logprob) of the class's distinct leaves
    members: list[int] = field(default_factory=list)


def select_answer(leaves: Sequence[LeafOutcome], rule: str = "majority") -> Selection:
    """Choose one answer among ``leaves`` (see the module docstring for the rule)."""
    if rule not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {rule!r}; choose one of {', '.join(SELECTION_RULES)}")
    stats = node_stats(leaves)
    groups: dict[int, _Candidate] = {}
    weighed: set[tuple[int, ...]] = set()  # policy: a re-emitted leaf weighs once
    for index, leaf in enumerate(leaves):
        if not leaf.valid:
            continue
        # A valid leaf without a class (records written by hand) is its own answer.
        cls = leaf.answer_class if leaf.answer_class is not None else -1 - index
        cand = groups.setdefault(cls, _Candidate(cls, index))
        cand.votes += 1
        cand.value += leaf_value(leaf, stats)
        cand.path_logprob = max(cand.path_logprob, round(leaf.path_logprob, _VALUE_DIGITS))
        if not leaf.node_ids or leaf.node_ids not in weighed:
            weighed.add(leaf.node_ids)
            cand.weight += math.exp(leaf.path_logprob)
        cand.members.append(index)
    if not groups:
        return Selection(None)

    def key(c: _Candidate):
        value = round(c.value, _VALUE_DIGITS)
        if rule == "policy":
            primary = (round(c.weight, _VALUE_DIGITS), c.votes, value)
        elif rule == "majority":
            primary = (c.votes, c.path_logprob, value)
        else:
            primary = (value, c.votes)
        return (*primary, -c.first)

    best = max(groups.values(), key=key)
    rep = leaves[best.first]
    return Selection(best.first, rep.answer_class, rep.pred, best.votes, best.value, len(groups))


def score_budget(leaves: Sequence[LeafOutcome], k: int, rule: str = "majority") -> BudgetOutcome:
    """The question at rollout budget ``k``: selection over the first ``k`` leaves.

    A search that ended early (no leaves, or fewer than ``k``) is scored on what it has.
    """
    if k < 1:
        raise ValueError(f"a rollout budget must be >= 1, got {k}")
    head = list(leaves[:k])
    sel = select_answer(head, rule)
    rep = head[sel.leaf_index] if sel.leaf_index is not None else None
    return BudgetOutcome(
        k=k,
        pred=sel.pred,
        acc=bool(rep is not None and rep.acc),
        answered=rep is not None,
        format_ok=bool(rep is not None and rep.format_ok),
        pass_any=any(leaf.acc and leaf.valid for leaf in head),
        valid_leaves=sum(leaf.valid for leaf in head),
        tokens=sum(leaf.new_tokens for leaf in head),
        votes=sel.votes,
        value=0.0 if not math.isfinite(sel.value) else sel.value,
    )


def score_budgets(leaves: Sequence[LeafOutcome], budgets: Iterable[int], rule: str = "majority") -> dict[int, BudgetOutcome]:
    return {int(k): score_budget(leaves, int(k), rule) for k in budgets}


def parse_budgets(text: str | Iterable[int]) -> list[int]:
    """``"1,2,4,8,16"`` -> ``[1, 2, 4, 8, 16]`` (sorted, unique, each >= 1).

    >>> parse_budgets("4, 1,2,2")
    [1, 2, 4]
    """
    parts = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for p in parts:
        if isinstance(p, str) and not p.strip():
            continue
        try:
            k = int(p)
        except (TypeError, ValueError):
            raise ValueError(f"--iterations: {p!r} is not an integer") from None
        if k < 1:
            raise ValueError(f"--iterations: budgets must be >= 1, got {k}")
        out.append(k)
    if not out:
        raise ValueError("--iterations: no budget given")
    return sorted(set(out))
