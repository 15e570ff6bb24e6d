"""Render a search tree: an indented terminal view and a self-contained interactive HTML page.

Both show, per step: id, tag, prior P(tag) among its siblings, visits N, mean value Q/N, the
terminal reason and reward of leaves, the iterations that emitted a leaf, and the step text
(shortened in the terminal). Children that were ranked but never generated are summarised as
"+k unexplored" (their tags and priors are listed in the HTML).

The HTML page has no external resources: nested ``<details>`` elements (collapsible), tags
coloured by kind, search values (Q/N, the backed-up search reward) in neutral blue, and, for each
``<output>`` leaf, a separate verdict against the gold answer: the only green (correct) or red
(wrong) on the page, so an answer the gold-free search rewarded ("answered") never looks like a
success when it is wrong. Two buttons open or close everything.
"""

from __future__ import annotations

import html
import math
from typing import Any

from rftt_plugin.search.tree import Node, Tree

TAG_COLOURS = {  # one hue per functional tag (HTML) ...
    "clarify": "#8e6bbf", "analyze": "#4f7fc0", "subquestion": "#2a9d8f", "next_step": "#5b8c3a",
    "direct_answer": "#c08a2e", "verify": "#c0592e", "refine": "#b8417a", "output": "#333333",
}
_ANSI = {  # ... and the nearest terminal colour
    "clarify": "35", "analyze": "34", "subquestion": "36", "next_step": "32", "direct_answer": "33",
    "verify": "31", "refine": "95", "output": "1",
}


def as_tree(obj: Tree | dict[str, Any]) -> Tree:
    return obj if isinstance(obj, Tree) else Tree.from_dict(obj)


def _short(text: str, width: int) -> str:
    from rftt_plugin.tree_view.validate import printable  # terminal view: no ESC/control characters

    flat = " ".join(printable(text).split())
    return flat if len(flat) <= width else flat[: max(0, width - 1)] + "…"


def _leaf_iterations(tree: Tree) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, it in enumerate(tree.iterations):
        if it.emitted:
            out.setdefault(it.leaf, []).append(i)
    return out


def _kids(tree: Tree, n: Node) -> list[Node]:
    """``n``'s children in rank order, then any the search pruned as faults (shown, marked)."""
    pruned = [m for m in tree.nodes if m.parent == n.id and m.fault and m.id not in n.children]
    return [tree[c] for c in n.children] + pruned


def _value_rgb(v: float) -> str:
    """Red (0) -> yellow -> green (1); values outside [0, 1] are clipped."""
    v = 0.0 if math.isnan(v) else min(1.0, max(0.0, v))
    return f"hsl({int(120 * v)}, 65%, 45%)"


def summary_line(tree: Tree) -> str:
    s = tree.stats()
    return (f"{s.iterations} iterations · {s.leaves} leaves ({s.unique_leaves} unique) · {s.nodes} nodes · "
            f"depth {s.max_depth} · {s.generated_tokens} generated / {s.independent_tokens} independent tokens "
            f"({s.token_ratio:.2f}) · {s.llm_calls} LLM calls · mean reward {s.mean_reward:.3f}")


# --------------------------------------------------------------------------------------------
# Terminal
# --------------------------------------------------------------------------------------------

def render_text(obj: Tree | dict[str, Any], *, width: int = 70, max_depth: int | None = None,
                color: bool = False, correct: dict[int, bool | None] | None = None) -> str:
    """An indented tree, one line per generated step.

    An ``<output>`` leaf is marked ✓ / ✗ only by its verdict against the gold answer (``correct``,
    default :func:`leaf_correctness`, as the HTML page), never by the search reward: under eval's
    ``answered`` search reward a wrong boxed answer has reward 1. Without a gold: ``•``."""
    tree = as_tree(obj)
    leaves = _leaf_iterations(tree)
    verdicts = leaf_correctness(tree) if correct is None else correct

    def paint(s: str, code: str) -> str:
        return f"\x1b[{code}m{s}\x1b[0m" if color else s

    def value(v: float) -> str:
        code = "32" if v >= 0.5 else "33" if v > 0 else "31"
        return paint(f"{v:.2f}", code)

    gold = f"   (gold: {_short(str(tree.gold), 60)})" if tree.gold is not None else ""
    lines = [f"Q: {_short(tree.question, 200)}{gold}",
             summary_line(tree), f"root  N={tree.root.N} Q/N={value(tree.root.value)}"]
    if tree.meta.get("error"):
        lines.append(paint(f"error: {_short(str(tree.meta['error']), 300)}", "31"))

    def describe(n: Node) -> str:
        tag = n.tag.value if n.tag else "root"
        parts = [f"#{n.id}", paint(f"<{tag}>", _ANSI.get(tag, "0")), f"p={n.prior:.2f}", f"N={n.N}",
                 f"Q/N={value(n.value)}"]
        if n.terminal:
            verdict = verdicts.get(n.id) if n.terminal_reason == "output" else None
            mark = {True: "✓", False: "✗"}.get(verdict, "•")
            reward = "r=none" if n.reward is None else f"r={n.reward:.2f}"
            parts.append(paint(f"{mark} {_short(n.terminal_reason, 30)} {reward}",
                               {True: "32", False: "31"}.get(verdict, "1" if n.terminal_reason == "output" else "2")))
        if n.fault:
            parts.append(paint(f"[fault: {n.fault}, not trained]", "31"))
        if n.id in leaves:
            parts.append(f"it={','.join(map(str, leaves[n.id]))}")
        if n.error:
            parts.append(paint(f"[{_short(n.error, 40)}]", "31"))
        return " ".join(parts) + f'  "{_short(n.text, width)}"'

    def walk(n: Node, prefix: str) -> None:
        kids = _kids(tree, n)
        shown = [k for k in kids if k.generated]
        hidden = len(kids) - len(shown)
        if max_depth is not None and n.depth >= max_depth:
            if shown:
                lines.append(f"{prefix}└─ … {len(shown)} more below")
            return
        for i, k in enumerate(shown):
            last = i == len(shown) - 1 and not hidden
            lines.append(prefix + ("└─ " if last else "├─ ") + describe(k))
            walk(k, prefix + ("   " if last else "│  "))
        if hidden:
            tags = ", ".join(f"{k.tag.value}" for k in kids if not k.generated)
            lines.append(prefix + paint(f"└─ +{hidden} unexplored ({tags})", "2"))

    walk(tree.root, "")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------
#
# Two different things are shown for an <output> leaf and must never be confused:
# * the *search reward* r: what the search backed up. At test time (``rftt eval``/``rftt search``
#   with ``search_reward=answered``) it means "this leaf boxed an answer" and knows nothing of the
#   gold; it is drawn in neutral blue, like every Q/N value bar (a value, not a verdict);
# * *correctness*: the leaf's answer graded against the tree's gold answer (``rftt_plugin.reward``)
#   when the page is rendered. Only this is drawn green (correct) or red (wrong).

_SEARCH_REWARDS = {  # tree.meta["search_reward"] -> what r means on the page
    "answered": "answered: 1 = boxed an answer (gold-free, not correctness)",
    "none": "none: the search backed up 0 everywhere",
    "oracle": "oracle: 1 = equals the gold (gold leaked into the search; analysis only)",
}
_CORRECT, _WRONG, _UNKNOWN = "#1a7f37", "#c62828", "#777777"

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.2em;margin:0 0 .3em} .q{white-space:pre-wrap;background:#fff;border:1px solid #ddd;padding:.6em;border-radius:6px}
.stats{color:#555;margin:.5em 0 1em} .legend span{display:inline-block;margin:0 .4em .3em 0}
details{margin-left:1.2em;border-left:2px solid #e3e3e3;padding-left:.5em}
summary{cursor:pointer;list-style:none;padding:2px 0} summary::-webkit-details-marker{display:none}
summary:before{content:"▸";color:#999;display:inline-block;width:1em} details[open]>summary:before{content:"▾"}
details.leaf>summary:before{content:"•"}
.tag{color:#fff;border-radius:4px;padding:0 .45em;font-family:ui-monospace,monospace;font-size:.92em}
.bar{display:inline-block;width:60px;height:.7em;background:#eee;border-radius:3px;vertical-align:middle;margin:0 .3em}
.bar i{display:block;height:100%;border-radius:3px}
.meta{color:#666;font-size:.9em} .term{font-weight:600;color:#555} .err{color:#b00020}
.sr{border:1px solid #8aa4c8;color:#2d4f7c;background:#eef3fa;border-radius:4px;padding:0 .35em;font-size:.9em}
.verdict{color:#fff;border-radius:4px;padding:0 .4em;font-weight:600;font-size:.9em}
pre{white-space:pre-wrap;background:#fff;border:1px solid #eee;border-radius:4px;padding:.4em .6em;margin:.2em 0 .4em;max-height:22em;overflow:auto}
.unexplored{color:#999;font-size:.9em;margin:.1em 0 .2em} button{margin-right:.5em}
"""

_JS = """
function setAll(open){document.querySelectorAll('details').forEach(d=>d.open=open)}
"""


def _search_rgb(v: float) -> str:
    """A search value in [0, 1] as a neutral blue (light -> dark): a value, never a verdict."""
    v = 0.0 if math.isnan(v) else min(1.0, max(0.0, v))
    return f"hsl(212, 55%, {int(80 - 40 * v)}%)"


def leaf_correctness(obj: Tree | dict[str, Any]) -> dict[int, bool | None]:
    """``{node id: correct?}`` for every ``<output>`` leaf, graded against ``tree.gold``.

    ``None`` when the tree has no gold. The grade is the reward module's (the last ``\\boxed{}``
    of the ``<output>`` step, math equivalence), independent of what the search backed up.
    """
    tree = as_tree(obj)
    leaves = [n for n in tree.nodes if n.terminal_reason == "output" and n.fault is None]
    if tree.gold is None or str(tree.gold).strip() == "":
        return {n.id: None for n in leaves}
    from rftt_plugin.reward import score_response

    return {n.id: bool(score_response(f"<output>\n{n.text}\n</output>", str(tree.gold)).acc) for n in leaves}


def gold_accuracy(trees: list[Tree]) -> dict[str, Any]:
    """First-leaf and any-leaf accuracy against each tree's gold (as the page's verdicts).

    ``graded`` counts the trees with a gold answer; accuracies are over those (None if there are none).
    The first leaf is the first emitted iteration's (the policy's most probable tags)."""
    first = any_ = graded = 0
    for tree in trees:
        if tree.gold is None or str(tree.gold).strip() == "":
            continue
        graded += 1
        verdicts = leaf_correctness(tree)
        emitted = [it.leaf for it in tree.iterations if it.emitted]
        first += bool(emitted and verdicts.get(emitted[0]))
        any_ += any(verdicts.get(i) for i in emitted)
    return {"graded": graded, "first_leaf_accuracy": first / graded if graded else None,
            "any_leaf_accuracy": any_ / graded if graded else None}


def _verdict(correct: bool | None, gold: Any) -> str:
    if correct is None:
        return f'<span class="verdict" style="background:{_UNKNOWN}" title="no gold answer in the tree">not graded (no gold)</span>'
    if correct:
        return f'<span class="verdict" style="background:{_CORRECT}" title="equals the gold answer">✓ correct</span>'
    return (f'<span class="verdict" style="background:{_WRONG}" title="differs from the gold answer">'
            f'✗ wrong (gold {html.escape(str(gold))})</span>')


def _html_node(tree: Tree, n: Node, leaves: dict[int, list[int]], open_depth: int,
               correct: dict[int, bool | None], reward_name: str) -> str:
    tag = n.tag.value if n.tag else "root"
    colour = TAG_COLOURS.get(tag, "#666")
    v = n.value
    bits = [f'<span class="tag" style="background:{colour}">&lt;{tag}&gt;</span>',
            f'<span class="bar" title="search value Q/N = {v:.3f} (mean backed-up search reward)"><i style="width:'
            f'{int(100 * min(1, max(0, v)))}%;background:{_search_rgb(v)}"></i></span>',
            f'<span class="meta">#{n.id} · Q/N {v:.2f} · N {n.N} · p {n.prior:.2f}</span>']
    if n.terminal:
        r = n.reward if n.reward is not None else 0.0
        bits.append(f'<span class="term">{html.escape(n.terminal_reason or "")}</span>')
        bits.append(f'<span class="sr" title="search reward ({html.escape(reward_name)})">'
                    f'search r={r:.2f}</span>')
        if n.fault:
            bits.append(f'<span class="verdict" style="background:{_UNKNOWN}" title="an infrastructure fault: '
                        f'no reward, never trained">fault: {html.escape(n.fault)}</span>')
        elif n.terminal_reason == "output":
            bits.append(_verdict(correct.get(n.id), tree.gold))
    if n.id in leaves:
        bits.append(f'<span class="meta">iterations {", ".join(map(str, leaves[n.id]))}</span>')
    kids = _kids(tree, n)
    shown = [k for k in kids if k.generated]
    body = [f"<pre>{html.escape(n.text)}</pre>"] if n.text else []
    details = (f"log P(tag)={n.prior_logprob:.3f} · {len(n.token_ids)} ids ({n.n_sampled} sampled)"
               + (f" · finish {n.finish_reason}" if n.finish_reason else ""))
    body.append(f'<div class="meta">{html.escape(details)}</div>')
    if n.error:
        body.append(f'<div class="err">{html.escape(n.error)}</div>')
    rest = [k for k in kids if not k.generated]
    if rest:  # ranked but never generated: listed before the children they compete with
        listing = ", ".join(f"{k.tag.value} ({k.prior:.2f})" for k in rest)
        body.append(f'<div class="unexplored">unexplored next tags: {html.escape(listing)}</div>')
    body += [_html_node(tree, k, leaves, open_depth, correct, reward_name) for k in shown]
    cls = ' class="leaf"' if not kids else ""
    opened = " open" if n.depth <= open_depth else ""
    return f"<details{cls}{opened}><summary>{' '.join(bits)}</summary>{''.join(body)}</details>"


def render_html(obj: Tree | dict[str, Any], *, title: str | None = None, open_depth: int = 99,
                correct: dict[int, bool | None] | None = None) -> str:
    """A self-contained HTML page for one tree; steps down to depth ``open_depth`` start open.

    ``correct`` (node id -> correct against the gold) defaults to :func:`leaf_correctness`.
    """
    tree = as_tree(obj)
    leaves = _leaf_iterations(tree)
    correct = leaf_correctness(tree) if correct is None else correct
    mode = str(tree.meta.get("search_reward") or "")
    reward_name = _SEARCH_REWARDS.get(mode, f"{mode}: as graded during the search" if mode else
                                      "as graded during the search (kind not recorded in the tree)")
    legend = "".join(f'<span class="tag" style="background:{c}">&lt;{t}&gt;</span>' for t, c in TAG_COLOURS.items())
    gold = f"<div class='meta'>gold: {html.escape(str(tree.gold))}</div>" if tree.gold is not None else ""
    error = f"<div class='err'>error: {html.escape(str(tree.meta['error']))}</div>" if tree.meta.get("error") else ""
    n_out = [c for c in correct.values() if c is not None]
    tally = (f"{sum(n_out)} of {len(n_out)} answer leaves correct against the gold" if n_out else
             "answer leaves not graded (no gold)")
    root = tree.root
    roots = "".join(_html_node(tree, k, leaves, open_depth, correct, reward_name)
                    for k in _kids(tree, root) if k.generated)
    head = title or "RFTT search tree"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(head)}</title>
<style>{_CSS}</style><script>{_JS}</script></head><body>
<h1>{html.escape(head)}</h1>
<div class="q">{html.escape(tree.question)}</div>{gold}{error}
<div class="stats">{html.escape(summary_line(tree))}</div>
<div class="legend">{legend}</div>
<div class="legend"><span class="sr">search r</span> <span class="meta">what the search backed up — {html.escape(reward_name)}</span></div>
<div class="legend"><span class="meta">search value Q/N: <span class="bar"><i style="width:100%;background:linear-gradient(90deg,{_search_rgb(0)},{_search_rgb(1)})"></i></span> 0 → 1</span>
<span class="verdict" style="background:{_CORRECT}">✓ correct</span><span class="verdict" style="background:{_WRONG}">✗ wrong</span>
<span class="meta">only these two are judged against the gold answer · {html.escape(tally)}</span></div>
<p><button onclick="setAll(true)">expand all</button><button onclick="setAll(false)">collapse all</button>
<span class="meta">root: N {root.N} · Q/N {root.value:.3f}</span></p>
<div class="tree">{roots}</div>
</body></html>
"""
