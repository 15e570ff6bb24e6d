"""Write what a run measured: ``results.json``, ``results.md``, ``accuracy_vs_rollouts.png``.

Input is the payload built by ``rftt_plugin.evaluation.job`` (summary from
:func:`rftt_plugin.evaluation.aggregate.summarize` plus run information). Files are written to a
temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

PLOT_FILE = "accuracy_vs_rollouts.png"
TITLES = {"math500": "MATH-500", "gsm8k": "GSM8K", "aime24": "AIME 2024", "amc23": "AMC 2023",
          "olympiadbench": "OlympiadBench"}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    _atomic_write(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def markdown(payload: dict[str, Any]) -> str:
    """The results as markdown tables (accuracies in %)."""
    summary = payload["summary"]
    labels = [c["label"] for c in summary["columns"]]
    last = labels[-1]
    mode = payload["mode"]
    lines = [f"# rftt eval: {mode} mode", ""]
    info = [("model", payload.get("model")), ("backend", payload.get("backend")),
            ("protocol", payload.get("protocol")), ("selection", payload.get("selection_note")),
            ("search reward", payload.get("search_reward") if mode == "tree" else None),
            ("hardware", payload.get("hardware", {}).get("description")),
            ("command", f"`{payload['command']}`" if payload.get("command") else None),
            ("wall time of the last invocation", f"{payload.get('wall_s', 0):.1f} s")]
    lines += [f"- {k}: {v}" for k, v in info if v]
    lines.append("")
    head = ["benchmark", "n"] + [f"acc {lb}" for lb in labels] + [
        f"format-valid ({last})", f"answered ({last})", f"tokens/q ({last})", "s/q"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(name: str, block: dict[str, Any], n_text: str) -> str:
        cells = [name, n_text] + [_pct(block["accuracy"][lb]) for lb in labels] + [
            _pct(block["format_ok"][last]), _pct(block["answered"][last]),
            _num(block["tokens_per_question"][last], 0), _num(block["seconds_per_question"], 2)]
        return "| " + " | ".join(cells) + " |"

    for name, block in summary["benchmarks"].items():
        n_text = f"{block['n']}/{block['expected']}" + ("" if block["complete"] else " (incomplete)")
        lines.append(row(TITLES.get(name, name), block, n_text))
    overall = summary["overall"]
    if len(summary["benchmarks"]) > 1:
        lines.append(row("all (per question)", overall["micro"], str(overall["micro"]["n"])))
        macro = ["average (per benchmark)", ""] + [_pct(overall["macro_accuracy"][lb]) for lb in labels]
        lines.append("| " + " | ".join(macro + [""] * (len(head) - len(macro))) + " |")
    lines.append("")
    for name, block in summary["benchmarks"].items():
        for key, title in (("by_level", "level"), ("by_subject", "subject")):
            groups = block.get(key)
            if not groups:
                continue
            lines += [f"## {TITLES.get(name, name)} by {title}", "",
                      "| " + " | ".join([title, "n"] + [f"acc {lb}" for lb in labels]) + " |",
                      "|" + "---|" * (2 + len(labels))]
            for g, sub in groups.items():
                lines.append("| " + " | ".join([g, str(sub["n"])] + [_pct(sub["accuracy"][lb]) for lb in labels]) + " |")
            lines.append("")
    if mode in ("tree", "sc"):
        lines += ["## Some leaf correct (oracle pass@k: an upper bound for any selection rule, not a result)", "",
                  "| " + " | ".join(["benchmark"] + labels) + " |", "|" + "---|" * (1 + len(labels))]
        for name, block in summary["benchmarks"].items():
            pa = block.get("pass_any", {})
            lines.append("| " + " | ".join([TITLES.get(name, name)] + [_pct(pa.get(lb)) for lb in labels]) + " |")
        lines.append("")
    if payload.get("failed"):
        lines += [f"**{len(payload['failed'])} question(s) failed** in the last invocation and have no record "
                  f"(rerun the same command to retry them):", ""]
        lines += [f"- {msg}" for msg in payload["failed"][:20]]
        lines.append("")
    return "\n".join(lines)


def write_markdown(path: Path, payload: dict[str, Any]) -> None:
    _atomic_write(path, markdown(payload))


def pyplot(warn: Callable[[str], None] = print):
    """matplotlib's pyplot on the file-only backend, or None (with a warning) when not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display on servers and CI
        import matplotlib.pyplot as plt
    except ImportError:
        warn("matplotlib is not installed: no plot (pip install 'rftt-plugin[plot]')")
        return None
    return plt


def save_png(fig, path: Path) -> None:
    """Write a figure atomically (a reader never sees half a file) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)


def write_plot(path: Path, payload: dict[str, Any], warn: Callable[[str], None] = print) -> bool:
    """Accuracy (%) against the rollout budget, one line per benchmark (chain mode: one point
    each at 1). Returns False (with a warning) when matplotlib is not installed."""
    plt = pyplot(warn)
    if plt is None:
        return False
    summary = payload["summary"]
    columns = summary["columns"]
    xs = [c["k"] for c in columns]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    marker = "o" if len(xs) > 1 else "s"
    for name, block in summary["benchmarks"].items():
        ys = [block["accuracy"][c["label"]] for c in columns]
        if all(y is None for y in ys):
            continue
        ax.plot(xs, [100 * (y or 0.0) for y in ys], marker=marker, label=f"{TITLES.get(name, name)} (n={block['n']})")
    macro = summary["overall"]["macro_accuracy"]
    if len(summary["benchmarks"]) > 1 and any(macro[c["label"]] is not None for c in columns):
        ax.plot(xs, [100 * (macro[c["label"]] or 0.0) for c in columns], "k--", marker=marker, label="average")
    if len(xs) > 1:
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
    else:
        ax.set_xticks(xs)
        ax.set_xlim(0.5, 1.5)
    ax.set_xlabel({"tree": "search rollouts (MCTS iterations)", "sc": "sampled chains (self-consistency)"}
                  .get(payload["mode"], "greedy chain (pass@1)"))
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(True, alpha=0.3)
    title = f"{payload['mode']} mode"
    if payload["mode"] != "chain":
        title += f", selection: {payload.get('selection')}"
    ax.set_title(f"{os.path.basename(str(payload.get('model', '')).rstrip('/'))}: {title}", fontsize=10)
    ax.legend(fontsize=8)
    save_png(fig, path)
    return True
