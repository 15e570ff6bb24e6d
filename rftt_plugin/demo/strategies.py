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
