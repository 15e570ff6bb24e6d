"""Several ways of answering on the same questions: greedy chain, self-consistency, tree search.

``rftt eval --mode chain,sc,tree --out DIR`` runs one ordinary (resumable) evaluation per mode
into ``DIR/<mode>/`` and then compares them here, question by question:

* accuracy with a 95% Wilson interval and generated tokens per question, per mode and budget;
* each sampled budget against greedy pass@1 (gained / lost questions, exact McNemar p);
* tree search at budget k against self-consistency **at equal generated tokens**: the smallest
  self-consistency budget whose tokens per question reach the tree's (the largest one when none
  does), so the baseline never gets less compute than the search;
* ``accuracy_vs_tokens.png``: accuracy against generated tokens per question, one line per mode.

Generated tokens are the ids the model sampled (tree: each step counted once, however many
leaves share it; inserted tag ids and the tag read-out's scoring calls are not counted).

Pure over stored records, except :func:`write_comparison` (files).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from rftt_plugin.evaluation.aggregate import CHAIN_COLUMN, columns_for, score_record
from rftt_plugin.evaluation.stats import paired, wilson_interval

COMPARE_PLOT = "accuracy_vs_tokens.png"
MODE_TITLES = {"chain": "greedy chain", "sc": "self-consistency", "tree": "tree search"}


@dataclass(frozen=True)
class Point:
    """One mode at one budget over the compared questions."""

    mode: str
    label: str            # "pass@1" or "k=4"
    k: int
    n: int
    correct: int
    tokens: float         # mean generated tokens per question

    @property
    def acc(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        lo, hi = wilson_interval(self.correct, self.n) if self.n else (0.0, 0.0)
        return {"mode": self.mode, "label": self.label, "k": self.k, "n": self.n, "correct": self.correct,
                "accuracy": self.acc, "ci95": [lo, hi], "tokens_per_question": self.tokens}


def per_question(records: Sequence[dict], budgets: Sequence[int], mode: str,
                 rule: str = "majority") -> dict[str, dict[str, tuple[bool, int]]]:
    """label -> question id -> (correct, generated tokens) for one mode's records."""
    columns = columns_for(mode, budgets)
    out: dict[str, dict[str, tuple[bool, int]]] = {c.label: {} for c in columns}
    for record in records:
        score = score_record(record, columns, rule)
        for c in columns:
            cell = score.cells[c.label]
            out[c.label][record["id"]] = (cell.acc, cell.tokens)
    return out


def compare(records: Mapping[str, Sequence[dict]], budgets: Sequence[int], rule: str = "majority") -> dict[str, Any]:
    """The comparison of the given modes (``{"chain": [...], "sc": [...], "tree": [...]}``) on the
    questions every mode answered."""
    tables = {mode: per_question(recs, budgets, mode, rule) for mode, recs in records.items()}
    ids = None
    for table in tables.values():
        for cells in table.values():
            ids = set(cells) if ids is None else ids & set(cells)
    ids = sorted(ids or ())
    points: list[Point] = []
    for mode, table in tables.items():
        for column in columns_for(mode, budgets):
            cells = table[column.label]
            points.append(Point(mode, column.label, column.k, len(ids), sum(cells[q][0] for q in ids),
                                sum(cells[q][1] for q in ids) / len(ids) if ids else 0.0))

    def outcomes(mode: str, label: str) -> dict[str, bool]:
        return {q: tables[mode][label][q][0] for q in ids}

    tests = []
    if "chain" in tables:
        for p in points:
            if p.mode != "chain":
                tests.append({"a": f"chain {CHAIN_COLUMN}", "b": f"{p.mode} {p.label}",
                              **paired(outcomes("chain", CHAIN_COLUMN), outcomes(p.mode, p.label))})
    if "tree" in tables and "sc" in tables:
        sc_points = [p for p in points if p.mode == "sc"]
        for p in (p for p in points if p.mode == "tree"):
            match = next((s for s in sc_points if s.tokens >= p.tokens), sc_points[-1])
            tests.append({"a": f"sc {match.label}", "b": f"tree {p.label}", "equal_tokens": True,
                          "tokens_a": match.tokens, "tokens_b": p.tokens,
                          **paired(outcomes("sc", match.label), outcomes("tree", p.label))})
    return {"questions": len(ids), "points": [p.to_dict() for p in points], "paired": tests, "selection": rule}


def markdown(result: Mapping[str, Any], title: str = "rftt eval: chain vs self-consistency vs tree search") -> str:
    lines = [f"# {title}", "", f"{result['questions']} questions answered by every mode; selection: "
             f"{result['selection']}; tokens = generated ids per question.", "",
             "| mode | budget | accuracy [95% CI] | tokens/q |", "|---|---|---|---|"]
    for p in result["points"]:
        lo, hi = p["ci95"]
        lines.append(f"| {MODE_TITLES.get(p['mode'], p['mode'])} | {p['label']} | {100 * p['accuracy']:.1f}% "
                     f"[{100 * lo:.1f}, {100 * hi:.1f}] | {p['tokens_per_question']:.0f} |")
    if result["paired"]:
        lines += ["", "Question by question (B against A; exact McNemar p):", "",
                  "| A | B | B gained | B lost | p |", "|---|---|---|---|---|"]
        for t in result["paired"]:
            a = t["a"] + (f" ({t['tokens_a']:.0f} tok/q)" if t.get("equal_tokens") else "")
            b = t["b"] + (f" ({t['tokens_b']:.0f} tok/q)" if t.get("equal_tokens") else "")
            lines.append(f"| {a} | {b} | {t['gained']} | {t['lost']} | {t['p']:.2g} |")
    return "\n".join(lines) + "\n"


def write_plot(path: Path, result: Mapping[str, Any], title: str = "", warn: Callable[[str], None] = print) -> bool:
    from rftt_plugin.evaluation.report import pyplot, save_png

    plt = pyplot(warn)
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for mode in dict.fromkeys(p["mode"] for p in result["points"]):
        pts = [p for p in result["points"] if p["mode"] == mode]
        xs = [max(p["tokens_per_question"], 1e-9) for p in pts]
        ys = [100 * p["accuracy"] for p in pts]
        errs = [[100 * (p["accuracy"] - p["ci95"][0]) for p in pts], [100 * (p["ci95"][1] - p["accuracy"]) for p in pts]]
        ax.errorbar(xs, ys, yerr=errs, marker="o" if len(pts) > 1 else "s", capsize=2,
                    label=MODE_TITLES.get(mode, mode))
        if len(pts) > 1:
            for p, x, y in zip(pts, xs, ys):
                ax.annotate(str(p["k"]), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens per question (log)")
    ax.set_ylabel("accuracy (%) with 95% interval")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"{result['questions']} questions, numbers = budget k", fontsize=10)
    ax.legend(fontsize=8)
    save_png(fig, path)
    return True


def load_records(run_dir: Path) -> list[dict]:
    """The records of an ``rftt eval`` run; a broken line is a ValueError naming ``file:line``."""
    path = Path(run_dir) / "records.jsonl"
    out = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not a JSON record ({exc.msg})") from None
    return out


def write_comparison(out: Path, modes: Sequence[str], budgets: Sequence[int], rule: str = "majority",
                     warn: Callable[[str], None] = print) -> dict[str, Any]:
    """Compare ``out/<mode>/records.jsonl`` for ``modes``; write compare.json, compare.md and the plot."""
    out = Path(out)
    result = compare({m: load_records(out / m) for m in modes}, budgets, rule)
    (out / "compare.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "compare.md").write_text(markdown(result), encoding="utf-8")
    write_plot(out / COMPARE_PLOT, result, warn=warn)
    return result
