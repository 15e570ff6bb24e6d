"""The quickstart's tree page (``rftt show --html``): the gold-free search reward and correctness
against the gold are two different marks, and a wrong answer is never drawn green."""

from __future__ import annotations

import re

from rftt_plugin.search.tree import Iteration, Tree
from rftt_plugin.tokens import FunctionalTag as T
from rftt_plugin.tree_view.render import leaf_correctness, render_html

GREEN_HUES = range(90, 151)  # hsl hues a reader sees as green


def _tree(gold="17", search_reward="answered") -> Tree:
    """Root -> analyze -> {output 17 (right), output 15 (wrong)}; both 'answered' (r = 1)."""
    tree = Tree("What is 5 + 3 * 4?", [1, 2], eos_id=0, gold=gold, meta={"search_reward": search_reward})
    a = tree.add_child(tree.root, T.ANALYZE, text="Multiply first.", generated=True, expanded=True, N=2, Q=2.0)
    right = tree.add_child(a, T.OUTPUT, text="The answer is \\boxed{17}.", generated=True, terminal_reason="output",
                           reward=1.0, N=1, Q=1.0)
    wrong = tree.add_child(a, T.OUTPUT, text="The answer is \\boxed{15}.", generated=True, terminal_reason="output",
                           reward=1.0, N=1, Q=1.0)
    tree.root.N, tree.root.Q = 2, 2.0
    tree.iterations = [Iteration(leaf=right.id, emitted=True), Iteration(leaf=wrong.id, emitted=True)]
    return tree


def _summary(page: str, node_id: int) -> str:
    m = re.search(rf"<summary>((?:(?!</summary>).)*#{node_id} ·(?:(?!</summary>).)*)</summary>", page)
    assert m, f"no summary line for node #{node_id}"
    return m.group(1)


def _green(fragment: str) -> bool:
    hues = [int(h) for h in re.findall(r"hsl\((\d+),", fragment)]
    return any(h in GREEN_HUES for h in hues) or "#1a7f37" in fragment


def test_correctness_is_graded_against_the_gold_not_taken_from_the_search_reward():
    tree = _tree()
    assert leaf_correctness(tree) == {2: True, 3: False}  # both have search reward 1.0
    assert leaf_correctness(_tree(gold=None)) == {2: None, 3: None}


def test_wrong_answer_with_answered_reward_is_red_and_never_green():
    page = render_html(_tree())
    right, wrong = _summary(page, 2), _summary(page, 3)
    # the search reward is shown on both, labelled as the search's, in a neutral colour
    assert "search r=1.00" in right and "search r=1.00" in wrong
    assert "✓ correct" in right and _green(right)
    assert "✗ wrong (gold 17)" in wrong and "#c62828" in wrong
    assert not _green(wrong), wrong
    # the legend says what the gold-free reward means
    assert "gold-free, not correctness" in page
    assert "1 of 2 answer leaves correct against the gold" in page


def test_without_gold_nothing_is_judged():
    page = render_html(_tree(gold=None))
    for node in (2, 3):
        line = _summary(page, node)
        assert "not graded (no gold)" in line and not _green(line)
    assert "✓ correct</span><span" in page  # the legend only
    assert "answer leaves not graded (no gold)" in page


def test_search_values_use_a_neutral_scale_even_at_one():
    page = render_html(_tree())
    bars = re.findall(r'<span class="bar" title="search value[^"]*"><i style="[^"]*background:([^"]*)"', page)
    assert bars and not any(_green(b) for b in bars)
