"""Which strategy does the policy choose, and how good is each? (the strategies toy, issue 24)

On the strategies toy (:func:`rftt_plugin.demo.synthetic.strategy_steps`) each opening tag starts
its own way of solving the sum. A tree-mode ``rftt eval`` run holds, for every question, one
child of the root per opening tag, and the search's first leaf under each opening is the
policy's own continuation after that forced opening. So one tree run answers both questions of
issue 24 item 2 without extra generation:

* **choice**: the policy's probability of each opening (the root children's priors), averaged
  over questions;
* **competence**: how often the first leaf under each opening is right, overall and split by
  question kind (all-plus sums vs sums that end in a minus, where the direct answer was never
  taught).

Pure functions over the run's ``records.jsonl`` and ``trees/<id>.json``; no model needed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from rftt_plugin.demo.synthetic import STRATEGY_OPENING
from rftt_plugin.evaluation.compare import load_records
from rftt_plugin.evaluation.stats import wilson_interval

OPENING_STRATEGY = {tag.value: name for name, tag in STRATEGY_OPENING.items()}


@dataclass
class OpeningStats:
    """One opening tag over a run's questions."""

    share_sum: float = 0.0  # summed root prior
    right: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # by question kind
    total: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def question_kind(question: str) -> str:
    """``minus`` when the sum subtracts its last number, else ``plus``.

    >>> question_kind("What is 1 + 2 + 3 - 4?"), question_kind("What is 1 + 2 + 3 + 4?")
    ('minus', 'plus')
    """
    return "minus" if " - " in question else "plus"


def first_leaf_per_opening(record: dict, tree: dict) -> dict[str, dict]:
    """The first leaf (in search order) under each root child, keyed by the child's tag."""
    tags = {n["id"]: n["tag"] for n in tree["nodes"]}
    out: dict[str, dict] = {}
    for leaf in record.get("leaves") or []:
        ids = leaf.get("node_ids") or []
        if ids and ids[0] in tags:
            out.setdefault(tags[ids[0]], leaf)
    return out


def opening_stats(records: list[dict], trees: dict[str, dict]) -> dict[str, OpeningStats]:
    """Choice and competence per opening tag (see the module docstring)."""
    stats: dict[str, OpeningStats] = defaultdict(OpeningStats)
    for record in records:
        tree = trees[record["id"]]
        kind = question_kind(record["question"])
        for node in tree["nodes"]:
            if node.get("parent") == 0 and node.get("tag"):
                stats[node["tag"]].share_sum += float(node.get("prior") or 0.0)
        for tag, leaf in first_leaf_per_opening(record, tree).items():
            stats[tag].total[kind] += 1
            stats[tag].right[kind] += bool(leaf.get("acc"))
    return dict(stats)


def load_tree_run(run: Path) -> tuple[list[dict], dict[str, dict]]:
    """(records, trees by id) of a tree-mode ``rftt eval`` output folder."""
    run = Path(run)
    records_path = run / "records.jsonl"
    if not records_path.is_file():
        raise FileNotFoundError(f"{records_path}: not a tree-mode rftt eval run (no records.jsonl)")
    records = load_records(run)
    trees = {}
    for r in records:
        path = run / "trees" / f"{r['id']}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the tree of question {r['id']} is missing")
        trees[r["id"]] = json.loads(path.read_text())
    return records, trees


def strategy_table(runs: dict[str, Path]) -> str:
    """A markdown table: per model (``runs``: label -> tree run) and opening, share and accuracy."""
    lines = ["| model | opening (strategy) | policy's share | right, all [95% CI] | right, all-plus | right, minus |",
             "|---|---|---|---|---|---|"]
    for label, run in runs.items():
        records, trees = load_tree_run(run)
        stats = opening_stats(records, trees)
        for tag in sorted(stats, key=lambda t: -stats[t].share_sum):
            s = stats[tag]
            n, k = sum(s.total.values()), sum(s.right.values())

            def cell(kind: str) -> str:
                return f"{s.right[kind] / s.total[kind]:.1%}" if s.total[kind] else "-"

            name = f"`<{tag}>` ({OPENING_STRATEGY.get(tag, '?')})"
            acc = "{:.1%} [{:.1%}, {:.1%}]".format(k / n, *wilson_interval(k, n)) if n else "-"
            lines.append(f"| {label} | {name} | {s.share_sum / len(records):.1%} | {acc} | {cell('plus')} | {cell('minus')} |")
    return "\n".join(lines)


# -- self-checks: does a <verify> follow the policy's own wrong steps, and does <refine> fix them? ------------------

SELF_CHECK_KINDS = ("checked_wrong_fixed", "checked_wrong_kept", "checked_right", "unchecked_wrong", "unchecked_right")


def self_check_kind(response: str, gold: str, right: bool) -> str:
    """Where one chain (greedy or sampled) stands on self-correction (``SELF_CHECK_KINDS``).

    The attempt before the first ``<verify>`` is *wrong* when one of its equations is false (the toy's
    step checker, :func:`rftt_plugin.demo.toy_prm.score_toy_steps`) or the last result it states is
    not the gold answer. A chain without ``<verify>`` is judged on all its steps the same way.

    >>> slip = "<next_step>\\n3 + 2 = 6\\n</next_step>\\n<verify>\\n3 + 2 is not 6.\\n</verify>\\n"
    >>> self_check_kind(slip + "<refine>\\n3 + 2 = 5\\n</refine>\\n<output>\\n\\\\boxed{5}\\n</output>", "5", True)
    'checked_wrong_fixed'
    >>> self_check_kind("<next_step>\\n3 + 2 = 5\\n</next_step>\\n<verify>\\nRight.\\n</verify>", "5", True)
    'checked_right'
    >>> self_check_kind("<next_step>\\n3 + 2 = 5\\n</next_step>", "6", False)
    'unchecked_wrong'
    """
    from rftt_plugin.demo.toy_prm import last_result, score_toy_steps
    from rftt_plugin.tokens import FunctionalTag, validate

    steps = validate(response, require_output=False).steps
    first_check = next((i for i, s in enumerate(steps) if s.tag == FunctionalTag.VERIFY), None)
    before = [s.text for s in (steps if first_check is None else steps[:first_check])]
    stated = last_result(before)
    wrong = 0.0 in score_toy_steps(before) or (stated is not None and str(stated) != str(gold).strip())
    if first_check is None:
        return "unchecked_wrong" if wrong or not right else "unchecked_right"
    if not wrong:
        return "checked_right"
    return "checked_wrong_fixed" if right else "checked_wrong_kept"


def _share(k: int, n: int, fmt: str = ".1%") -> str:
    """``k / n (percent)``; ``0 / 0`` when there is nothing to count."""
    return f"{k} / {n} ({k / n:{fmt}})" if n else "0 / 0"


def self_check_counts(records: list[dict]) -> dict[str, int]:
    """:func:`self_check_kind` counted over a run's chains: one per record of a chain-mode run, every
    sampled chain (``responses``, graded in ``leaves``) of a self-consistency run."""
    counts = dict.fromkeys(SELF_CHECK_KINDS, 0)
    for r in records:
        gold = str(r.get("gold", ""))
        if "responses" in r:
            chains = [(text or "", bool(leaf.get("acc"))) for text, leaf in zip(r["responses"], r.get("leaves") or [])]
        else:
            chains = [(r.get("response") or "", bool(r.get("acc")))]
        for text, right in chains:
            counts[self_check_kind(text, gold, right)] += 1
    return counts


def self_check_table(runs: dict[str, Path]) -> str:
    """A markdown table per model (``runs``: label -> chain- or sc-mode ``rftt eval`` folder): how often
    a chain checks itself after a wrong attempt and after a right one, and how often the check fixes it."""
    lines = ["| model | chains | wrong attempts: `<verify>` follows | of those checks: fixed | right attempts: "
             "`<verify>` follows |", "|---|---|---|---|---|"]

    for label, run in runs.items():
        c = self_check_counts(load_records(Path(run)))
        checked_wrong = c["checked_wrong_fixed"] + c["checked_wrong_kept"]
        wrong = checked_wrong + c["unchecked_wrong"]
        right = c["checked_right"] + c["unchecked_right"]
        lines.append(f"| {label} | {sum(c.values())} | {_share(checked_wrong, wrong)} | "
                     f"{_share(c['checked_wrong_fixed'], checked_wrong)} | {_share(c['checked_right'], right)} |")
    return "\n".join(lines)


@dataclass
class CheckPriors:
    """The policy's probability of ``<verify>`` at search nodes, split by whether the steps so far hold
    a false equation (:func:`rftt_plugin.demo.toy_prm.score_toy_steps`)."""

    after_false: list[float] = field(default_factory=list)
    after_true: list[float] = field(default_factory=list)


def verify_priors(trees: dict[str, dict]) -> CheckPriors:
    """At every generated node that completes the sum, the prior of its ``<verify>`` child, filed under
    whether the path so far holds a false equation. A policy that checks its own slips gives
    ``after_false`` the larger priors.

    A node completes the sum when it is a ``<direct_answer>`` or its path holds three equations (each
    of the toy's step strategies takes three computations for four operands), so both groups are
    compared at the same point: where the policy chooses between ``<output>`` and ``<verify>``.
    """
    from rftt_plugin.demo.toy_prm import score_toy_steps

    out = CheckPriors()
    for tree in trees.values():
        nodes = {n["id"]: n for n in tree["nodes"]}
        for node in tree["nodes"]:
            if node.get("tag") not in ("next_step", "direct_answer") or not node.get("generated"):
                continue
            check = next((nodes[c] for c in node.get("children") or [] if nodes[c].get("tag") == "verify"), None)
            if check is None:
                continue
            path, at = [], node
            while at is not None and at.get("parent") is not None:
                path.append(at)
                at = nodes.get(at["parent"])
            path.reverse()
            if any(n.get("tag") in ("verify", "refine") for n in path):
                continue  # a second check: not the first decision
            texts = [n.get("text") or "" for n in path]
            if node["tag"] != "direct_answer" and sum(t.count(" = ") for t in texts) < 3:
                continue
            false = 0.0 in score_toy_steps(texts)
            (out.after_false if false else out.after_true).append(float(check.get("prior") or 0.0))
    return out


def checked_leaves(records: list[dict], trees: dict[str, dict]) -> dict[str, list[int]]:
    """The search's leaves whose path passes a ``<verify>``, as ``[leaves, right]``, filed under whether
    the steps before the first ``<verify>`` hold a false equation (``after_false``) or not
    (``after_true``): how often the check and its ``<refine>`` end in the right answer."""
    from rftt_plugin.demo.toy_prm import score_toy_steps

    out = {"after_false": [0, 0], "after_true": [0, 0]}
    for record in records:
        nodes = {n["id"]: n for n in trees[record["id"]]["nodes"]}
        for leaf in record.get("leaves") or []:
            ids = [i for i in leaf.get("node_ids") or [] if i in nodes]
            tags = [nodes[i].get("tag") for i in ids]
            if "verify" not in tags:
                continue
            before = [nodes[i].get("text") or "" for i in ids[:tags.index("verify")]]
            cell = out["after_false" if 0.0 in score_toy_steps(before) else "after_true"]
            cell[0] += 1
            cell[1] += bool(leaf.get("acc"))
    return out


def verify_prior_table(runs: dict[str, Path]) -> str:
    """A markdown table per model (``runs``: label -> tree-mode run): the policy's mean probability of
    ``<verify>`` where the sum is complete, when the steps so far hold a false equation and when not
    (:func:`verify_priors`), and how often the leaves through a ``<verify>`` are right (:func:`checked_leaves`)."""
    lines = ["| model | after a false equation: nodes, mean P(`<verify>`) | after right steps: nodes, mean P(`<verify>`) "
             "| leaves through `<verify>` after a false equation: right / all | after right steps: right / all |",
             "|---|---|---|---|---|"]
    for label, run in runs.items():
        records, trees = load_tree_run(run)
        p = verify_priors(trees)
        leaves = checked_leaves(records, trees)

        def cell(xs: list[float]) -> str:
            return f"{len(xs)}, {sum(xs) / len(xs):.3f}" if xs else "0, -"

        (n_false, right_false), (n_true, right_true) = leaves["after_false"], leaves["after_true"]
        lines.append(f"| {label} | {cell(p.after_false)} | {cell(p.after_true)} | {_share(right_false, n_false, '.0%')} "
                     f"| {_share(right_true, n_true, '.0%')} |")
    return "\n".join(lines)
