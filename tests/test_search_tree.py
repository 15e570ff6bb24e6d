"""Tree model, selection order, back-up, statistics and serialisation on hand-built trees."""

from __future__ import annotations

import json
import math

import pytest

from rftt_plugin.search.select import best_uct_child, select, uct_score
from rftt_plugin.search.tree import Iteration, Node, Tree
from rftt_plugin.tokens import FunctionalTag as T


def _step(tree, parent, tag, text_ids, rank=0, prior_logprob=-0.5, closed=True):
    """A finished step: <tag> + newline inserted, text + close sampled, newline inserted."""
    node = tree.add_child(parent, tag, rank=rank, prior_logprob=prior_logprob)
    node.append([100 + rank, 3], [prior_logprob, 0.0], sampled=False)
    node.append(text_ids + ([200] if closed else []), [-0.1] * (len(text_ids) + closed), sampled=True)
    if closed:
        node.close_index = len(node.token_ids) - 1
        node.append([3], [0.0], sampled=False)
    node.generated = True
    return node


@pytest.fixture
def tree():
    """root -> A(next_step) -> A1(output, r=1), A2(verify)->A2a(output, r=0.1); root -> B(analyze)."""
    t = Tree("q", [1, 2, 3], eos_id=9)
    t.root.expanded = True
    a = _step(t, t.root, T.NEXT_STEP, [11, 12], rank=0)
    b = _step(t, t.root, T.ANALYZE, [13], rank=1)
    a.expanded = True
    a1 = _step(t, a, T.OUTPUT, [14], rank=0)
    a1.terminal_reason, a1.reward = "output", 1.0
    a2 = _step(t, a, T.VERIFY, [15, 16, 17], rank=1)
    a2.expanded = True
    a2a = _step(t, a2, T.OUTPUT, [18], rank=0)
    a2a.terminal_reason, a2a.reward = "output", 0.1
    b.terminal_reason, b.reward = "length", 0.0
    return t


def test_paths_and_context_ids(tree):
    a2a = tree[5]
    assert [n.tag for n in tree.path(a2a.id)] == [T.NEXT_STEP, T.VERIFY, T.OUTPUT]
    resp = tree.response_ids(a2a.id)
    assert resp == tree[1].token_ids + tree[4].token_ids + tree[5].token_ids
    assert tree.context_ids(a2a.id) == [1, 2, 3] + resp


def test_leaf_record_is_aligned(tree):
    leaf = tree.leaf(5, iteration=2)
    n = len(leaf.response_ids)
    assert n == len(leaf.response_logprobs) == len(leaf.sampled_mask) == len(leaf.loss_mask)
    assert leaf.response_ids[-1] == 9 and leaf.sampled_mask[-1] == 0  # EOS after <output>
    assert leaf.response_ids[:-1] == tree.response_ids(5)
    # Every step boundary points at the closing-tag id.
    assert [leaf.response_ids[i] for i in leaf.step_ends] == [200, 200, 200]
    # The opening tag carries the ranking log-prob; the sampled ids their own.
    assert leaf.response_logprobs[0] == -0.5 and leaf.sampled_mask[:4] == [0, 0, 1, 1]
    assert leaf.tags == ["next_step", "verify", "output"] and leaf.reward == 0.1
    no_insert = tree.leaf(5, loss_on_inserted=False)
    assert no_insert.loss_mask == no_insert.sampled_mask
    # A failed (unclosed) step has no EOS and its boundary is its last id.
    cut = tree.leaf(2)
    assert cut.response_ids[-1] != 9 and cut.step_ends == [len(cut.response_ids) - 2]


def test_unexplored_children_first_in_rank_order(tree):
    for n in tree.nodes:
        n.N, n.Q = 0, 0.0
    # Nothing visited: the root's most probable child is taken, and selection stops there.
    assert [n.id for n in select(tree, 2.0)] == [0, 1]
    tree[1].N = 1
    tree.root.N = 1
    assert [n.id for n in select(tree, 2.0)] == [0, 2]


def test_uct_picks_the_max_and_descends(tree):
    # All root children visited: UCT decides. A has the better mean, B is less visited.
    tree.root.N, tree[1].N, tree[1].Q, tree[2].N, tree[2].Q = 10, 8, 4.0, 2, 0.0
    tree[3].N, tree[4].N = 4, 4
    ua = 4.0 / 8 + 2.0 * math.sqrt(math.log(10) / 8)
    ub = 0.0 + 2.0 * math.sqrt(math.log(10) / 2)
    assert uct_score(tree[1], 10, 2.0) == pytest.approx(ua)
    assert ub > ua and best_uct_child(tree, tree.root, 2.0).id == 2
    # B is terminal: selection stops on it (a duplicate leaf).
    assert [n.id for n in select(tree, 2.0)] == [0, 2]
    # With c = 0 the mean wins; below A all children are visited, so UCT goes on to A1 (Q/N=1).
    tree[3].Q, tree[4].Q = 4.0, 0.4
    assert [n.id for n in select(tree, 0.0)] == [0, 1, 3]
    assert uct_score(Node(9, 0, T.OUTPUT, 1), 5, 2.0) == math.inf


def test_uct_ties_go_to_the_more_probable_tag(tree):
    tree.root.N, tree[1].N, tree[2].N = 4, 2, 2
    assert best_uct_child(tree, tree.root, 2.0).id == 1


def test_backup_adds_reward_and_visit_along_the_path(tree):
    tree.backup(tree[5], 0.1)
    tree.backup(tree[3], 1.0)
    assert (tree.root.N, tree.root.Q) == (2, pytest.approx(1.1))
    assert (tree[1].N, tree[1].Q) == (2, pytest.approx(1.1))
    assert (tree[4].N, tree[4].Q, tree[5].N) == (1, pytest.approx(0.1), 1)
    assert (tree[2].N, tree[3].N, tree[3].value) == (0, 1, 1.0)


def test_stats_count_shared_tokens_once(tree):
    tree.iterations = [Iteration(3), Iteration(5), Iteration(2), Iteration(5, duplicate=True)]
    s = tree.stats()
    sampled = {i: tree[i].n_sampled for i in range(1, 6)}
    assert s.nodes == 5 and s.max_depth == 3 and s.leaves == 4 and s.unique_leaves == 3
    assert s.generated_tokens == sum(sampled.values())
    path = {3: sampled[1] + sampled[3], 5: sampled[1] + sampled[4] + sampled[5], 2: sampled[2]}
    assert s.independent_tokens == path[3] + 2 * path[5] + path[2]
    assert s.independent_unique_tokens == path[3] + path[5] + path[2]
    assert s.token_ratio == pytest.approx(s.generated_tokens / s.independent_tokens)
    assert s.tag_histogram == {"next_step": 1, "analyze": 1, "output": 2, "verify": 1}
    assert s.terminal_reasons == {"output": 2, "length": 1}
    assert s.mean_reward == pytest.approx((1.0 + 0.1 + 0.0 + 0.1) / 4)


def test_exhaustion(tree):
    assert not tree.is_exhausted()  # nothing visited yet
    for n in tree.nodes:
        n.N = 1
    assert tree.is_exhausted()
    tree.add_child(tree[4], T.REFINE)  # a fresh, unvisited child under verify
    assert not tree.is_exhausted()
    assert tree.is_exhausted(tree[1]) is False and tree.is_exhausted(tree[2]) is True


def test_json_round_trip(tree, tmp_path):
    tree.iterations = [Iteration(3, new_nodes=2, llm_calls=4), Iteration(5)]
    tree.backup(tree[3], 1.0)
    tree.backup(tree[5], 0.1)
    tree[2].prior_logprob = -math.inf  # a tag outside a top-k read-out
    tree[2].error = "boom"
    tree.meta["config"] = {"loss_on_inserted": False}
    tree.llm_calls = 7
    path = tmp_path / "t.json"
    tree.save(path)
    data = json.loads(path.read_text())  # strict JSON (no Infinity)
    assert data["format"] == "rftt-tree/1" and data["stats"]["leaves"] == 2
    back = Tree.load(path)
    assert back.to_dict() == tree.to_dict()
    assert back[2].prior_logprob == -math.inf and back[1].tag is T.NEXT_STEP
    assert [vars(x) for x in back.paths()] == [vars(x) for x in tree.paths()]
    assert back.paths()[0].loss_mask == back.paths()[0].sampled_mask  # config travels along
    with pytest.raises(ValueError):
        Tree.from_dict({**data, "format": "something-else"})


def test_search_and_backends_do_not_import_verl():
    import subprocess
    import sys

    code = ("import sys; import rftt_plugin.search, rftt_plugin.backends.fake, rftt_plugin.backends.hf, "
            "rftt_plugin.backends.openai, rftt_plugin.backends.openai_server, rftt_plugin.tree_view.render; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('verl', 'ray', 'vllm')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
