"""Tree.prefix_spans: each leaf's node ids, parent ids and token offsets (prefix-sharing metadata)."""

from __future__ import annotations

from rftt_plugin.search.tree import Tree
from rftt_plugin.tokens import FunctionalTag as T


def _step(tree, parent, tag, text_ids):
    node = tree.add_child(parent, tag)
    node.append([100, 3], [0.0, 0.0], sampled=False)            # <tag> + newline: 2 ids
    node.append(text_ids + [200], [-0.1] * (len(text_ids) + 1), sampled=True)
    node.close_index = len(node.token_ids) - 1
    node.append([3], [0.0], sampled=False)                      # newline after </tag>
    return node


def test_offsets_parents_and_shared_prefixes():
    t = Tree("q", [1, 2], eos_id=9)
    a = _step(t, t.root, T.NEXT_STEP, [11, 12])        # 2 + 3 + 1 = 6 ids, node 1
    out1 = _step(t, a, T.OUTPUT, [13])                 # 5 ids, node 2
    ver = _step(t, a, T.VERIFY, [14, 15, 16])          # 7 ids, node 3
    out2 = _step(t, ver, T.OUTPUT, [17])               # node 4
    out1.terminal_reason = out2.terminal_reason = "output"

    assert t.prefix_spans(out1.id) == {"node_ids": [1, 2], "parent_ids": [0, 1], "starts": [0, 6]}
    assert t.prefix_spans(out2.id) == {"node_ids": [1, 3, 4], "parent_ids": [0, 1, 3], "starts": [0, 6, 13]}
    # the leaves share node 1, and with it exactly the same response ids
    r1, r2 = t.leaf(out1.id).response_ids, t.leaf(out2.id).response_ids
    assert r1[0:6] == r2[0:6] == [100, 3, 11, 12, 200, 3]
    assert r2[13] == 100 and r2[6:13] == [100, 3, 14, 15, 16, 200, 3]
    # a response cut at 13 ids keeps the nodes that start before the cut
    assert t.prefix_spans(out2.id, 13) == {"node_ids": [1, 3], "parent_ids": [0, 1], "starts": [0, 6]}
