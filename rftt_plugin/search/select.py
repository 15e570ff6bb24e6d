"""MCTS selection: pure functions over a :class:`~rftt_plugin.search.tree.Tree`.

From the root, repeat:

1. stop at a terminal node (it will be re-emitted: the reference's duplicate leaves) or at a
   node never expanded (only the root, in the first iteration);
2. if the node has unexplored children (``N == 0``), step into the most probable one (children
   are kept in rank order, so that is the first) and stop -- the paper's
   ``argmax_a pi(a | s)`` over unexplored tags;
3. otherwise step into the child with the highest UCT score
   ``Q/N + c * sqrt(ln N_parent / N_child)`` (ties: the more probable tag) and repeat.
"""

from __future__ import annotations

import math

from rftt_plugin.search.tree import Node, Tree


def uct_score(child: Node, parent_visits: int, c: float) -> float:
    """UCT of a child; an unvisited child scores +inf (explored first)."""
    if child.N == 0:
        return math.inf
    explore = math.sqrt(math.log(parent_visits) / child.N) if parent_visits > 1 else 0.0
    return child.Q / child.N + c * explore


def best_uct_child(tree: Tree, node: Node, c: float) -> Node:
    children = tree.children(node)
    if not children:
        raise ValueError(f"node {node.id} has no children")
    # max() keeps the first maximum, i.e. the lowest rank among equal scores.
    return max(children, key=lambda ch: uct_score(ch, node.N, c))


def first_unexplored(tree: Tree, node: Node) -> Node | None:
    for child in tree.children(node):
        if child.N == 0:
            return child
    return None


def select(tree: Tree, c: float) -> list[Node]:
    """The selection path from the root (root included); the last node is where to continue."""
    node = tree.root
    path = [node]
    while not node.terminal and node.expanded:
        fresh = first_unexplored(tree, node)
        if fresh is not None:
            path.append(fresh)
            break
        node = best_uct_child(tree, node, c)
        path.append(node)
    return path
