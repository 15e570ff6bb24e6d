"""Per-question records -> per-benchmark numbers. Pure: no model, no files.

A *column* is one way of answering: ``pass@1`` in chain mode (greedy decoding, one answer), or
``k=<budget>`` in tree mode (answer selected over the first k search leaves). Every question
gets a :class:`Cell` per column; :func:`summarize` averages cells per benchmark, per MATH-500
level and subject, and over all questions.

Tree-mode cells are recomputed from the stored leaves every time, so changing ``--selection``
or asking for other budgets (up to the searched maximum) needs no new generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from rftt_plugin.evaluation.selection import LeafOutcome, score_budgets

CHAIN_COLUMN = "pass@1"


@dataclass(frozen=True)
class Column:
    label: str   # "pass@1" or "k=4"
    k: int       # rollouts behind it (chain: 1)


def columns_for(mode: str, budgets: Sequence[int]) -> list[Column]:
    if mode == "chain":
        return [Column(CHAIN_COLUMN, 1)]
    return [Column(f"k={k}", int(k)) for k in budgets]


@dataclass(frozen=True)
class Cell:
    acc: bool
    answered: bool
    format_ok: bool
    tokens: int
    pass_any: bool | None = None   # tree: some leaf among the first k is correct


@dataclass(frozen=True)
class QuestionScore:
    id: str
    benchmark: str
    cells: dict[str, Cell]
    seconds: float
    level: Any = None
    subject: Any = None


def score_record(record: dict, columns: Sequence[Column], rule: str = "majority") -> QuestionScore:
    """Cells of one stored record (chain or tree) for ``columns``."""
    meta = record.get("meta") or {}
    if record.get("mode") in ("tree", "sc"):  # both keep one LeafOutcome per rollout
        leaves = [LeafOutcome.from_dict(d) for d in record.get("leaves", [])]
        outcomes = score_budgets(leaves, [c.k for c in columns], rule)
        cells = {c.label: Cell(o.acc, o.answered, o.format_ok, o.tokens, o.pass_any)
                 for c, o in ((c, outcomes[c.k]) for c in columns)}
    else:
        cell = Cell(bool(record.get("acc")), bool(record.get("has_answer")), bool(record.get("format_ok")),
                    int(record.get("tokens", 0)))
        cells = {c.label: cell for c in columns}
    return QuestionScore(record["id"], record["benchmark"], cells, float(record.get("seconds", 0.0)),
                         meta.get("level"), meta.get("subject"))


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _block(scores: Sequence[QuestionScore], columns: Sequence[Column]) -> dict[str, Any]:
    """Averages of a group of questions, one value per column."""
    labels = [c.label for c in columns]
    out: dict[str, Any] = {
        "n": len(scores),
        "accuracy": {lb: _mean(float(s.cells[lb].acc) for s in scores) for lb in labels},
        "answered": {lb: _mean(float(s.cells[lb].answered) for s in scores) for lb in labels},
        "format_ok": {lb: _mean(float(s.cells[lb].format_ok) for s in scores) for lb in labels},
        "tokens_per_question": {lb: _mean(s.cells[lb].tokens for s in scores) for lb in labels},
        "seconds_per_question": _mean(s.seconds for s in scores),
    }
    if scores and scores[0].cells[labels[0]].pass_any is not None:
        out["pass_any"] = {lb: _mean(float(bool(s.cells[lb].pass_any)) for s in scores) for lb in labels}
    return out


def _breakdown(scores: Sequence[QuestionScore], columns: Sequence[Column], attr: str) -> dict[str, Any]:
    groups: dict[str, list[QuestionScore]] = {}
    for s in scores:
        value = getattr(s, attr)
        if value is not None:
            groups.setdefault(str(value), []).append(s)

    def order(key: str):
        return (0, int(key), key) if key.isdigit() else (1, 0, key)

    return {key: {"n": len(groups[key]),
                  "accuracy": _block(groups[key], columns)["accuracy"]} for key in sorted(groups, key=order)}


def summarize(scores: Sequence[QuestionScore], columns: Sequence[Column],
              expected: dict[str, int] | None = None) -> dict[str, Any]:
    """Per-benchmark blocks (+ by_level / by_subject where the data has them) and overall numbers.

    ``expected`` maps a benchmark to the number of questions the run asked for; a benchmark with
    fewer finished questions is marked ``complete: false`` so partial numbers are never mistaken
    for full ones. ``overall.micro`` averages over questions, ``overall.macro`` over benchmarks.
    """
    expected = dict(expected or {})
    by_bench: dict[str, list[QuestionScore]] = {}
    for s in scores:
        by_bench.setdefault(s.benchmark, []).append(s)
    benchmarks: dict[str, Any] = {}
    for name in list(expected) + [b for b in by_bench if b not in expected]:
        group = by_bench.get(name, [])
        block = _block(group, columns)
        block["expected"] = expected.get(name, len(group))
        block["complete"] = len(group) >= block["expected"]
        if any(s.level is not None for s in group):
            block["by_level"] = _breakdown(group, columns, "level")
        if any(s.subject is not None for s in group):
            block["by_subject"] = _breakdown(group, columns, "subject")
        benchmarks[name] = block
    labels = [c.label for c in columns]
    filled = [b for b in benchmarks.values() if b["n"]]
    overall = {
        "micro": _block(list(scores), columns),
        "macro_accuracy": {lb: _mean(b["accuracy"][lb] for b in filled) for lb in labels},
    }
    return {"columns": [{"label": c.label, "k": c.k} for c in columns], "benchmarks": benchmarks,
            "overall": overall}


def running_accuracy(scores: Iterable[QuestionScore], label: str) -> dict[str, tuple[int, int]]:
    """benchmark -> (correct, done) for one column (progress bars)."""
    out: dict[str, list[int]] = {}
    for s in scores:
        entry = out.setdefault(s.benchmark, [0, 0])
        entry[0] += int(s.cells[label].acc)
        entry[1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}
