"""Check a tree JSON before drawing it, and make its text safe for a terminal.

``rftt show`` reads files that anyone can edit (or that a crashed tool half wrote). The renderers
assume a well-formed tree: node ids equal to positions, every child id present and pointing back
at its parent, one root, no cycles, numbers where numbers belong. :func:`validate_tree_dict`
checks all of that first and raises :class:`TreeError` with one line naming the node and field,
instead of an AttributeError / IndexError / RecursionError from deep inside the renderer.

:func:`printable` removes control characters (ESC sequences that clear the screen or set the
window title, BEL, backspace, C1 controls) and bidirectional overrides from text that goes to a
terminal; newlines and tabs become spaces.
"""

from __future__ import annotations

import re
from typing import Any

MAX_DEPTH = 500  # far beyond any real search (max_depth is ~18); the recursive renderers stay under Python's limit
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


class TreeError(ValueError):
    """The JSON is not a drawable search tree (message names the node and field)."""


def printable(text: Any) -> str:
    """``text`` without terminal control characters; whitespace controls become spaces.

    >>> printable("a\\x1b[2Jb\\tc\\x07")
    'a[2Jb c'
    """
    return _CONTROL.sub("", str(text).replace("\t", " ").replace("\n", " ").replace("\r", " "))


def _tag_values() -> set[str]:
    from rftt_plugin.search.tree import FunctionalTag

    return {t.value for t in FunctionalTag}


def _is_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return True
    return isinstance(v, str) and v in ("inf", "-inf", "nan")  # how trees store non-finite log-probs


def validate_tree_dict(d: Any, tree_format: str | None = None) -> None:
    """Raise :class:`TreeError` unless ``d`` is a well-formed tree dict (see the module doc)."""
    if not isinstance(d, dict):
        got = "null" if d is None else f"a JSON {type(d).__name__.replace('dict', 'object')}"
        raise TreeError(f"top level is {got}, expected a JSON object with 'nodes'")
    if tree_format is not None and d.get("format") != tree_format:
        raise TreeError(f"field 'format': {d.get('format')!r}, expected {tree_format!r} (not an RFTT search tree)")
    if not isinstance(d.get("question"), str):
        raise TreeError("field 'question': missing or not text")
    nodes = d.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise TreeError("field 'nodes': missing, empty or not a list")
    n = len(nodes)
    for i, node in enumerate(nodes):
        if not isinstance(node, dict):
            raise TreeError(f"nodes[{i}]: not a JSON object")
        if node.get("id") != i or isinstance(node.get("id"), bool):
            raise TreeError(f"nodes[{i}]: field 'id' is {node.get('id')!r}, expected its position {i}")
        parent = node.get("parent")
        if i == 0:
            if parent is not None:
                raise TreeError(f"node 0 (the root): field 'parent' is {parent!r}, expected null")
        elif not isinstance(parent, int) or isinstance(parent, bool) or not 0 <= parent < n or parent == i:
            raise TreeError(f"node {i}: field 'parent' is {parent!r}, not another node's id (0..{n - 1})")
        children = node.get("children", [])
        if not isinstance(children, list):
            raise TreeError(f"node {i}: field 'children' is not a list")
        for c in children:
            if not isinstance(c, int) or isinstance(c, bool) or not 0 <= c < n:
                raise TreeError(f"node {i}: child id {c!r} does not exist (the tree has nodes 0..{n - 1})")
        tag = node.get("tag")
        if i > 0 and tag not in _tag_values():
            raise TreeError(f"node {i}: field 'tag' is {tag!r}, not a functional tag")
        for key in ("Q", "prior", "prior_logprob"):
            if key in node and not _is_number(node[key]):
                raise TreeError(f"node {i}: field {key!r} is {node[key]!r}, expected a number")
        if "N" in node and (not isinstance(node["N"], int) or isinstance(node["N"], bool) or node["N"] < 0):
            raise TreeError(f"node {i}: field 'N' is {node['N']!r}, expected a count")
        if node.get("reward") is not None and not _is_number(node["reward"]):
            raise TreeError(f"node {i}: field 'reward' is {node['reward']!r}, expected a number or null")
        for key in ("text", "error", "terminal_reason", "finish_reason"):
            if node.get(key) is not None and not isinstance(node[key], str):
                raise TreeError(f"node {i}: field {key!r} is not text")
    # Every node reached exactly once from the root, each child pointing back: no cycles, no sharing.
    seen = {0}
    stack = [(0, 0)]
    while stack:
        i, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise TreeError(f"node {i}: deeper than {MAX_DEPTH} steps; no search writes such a tree")
        for c in nodes[i].get("children", []):
            if c in seen:
                raise TreeError(f"node {i}: child {c} is reached twice (a cycle, or a child shared by two parents)")
            if nodes[c].get("parent") != i:
                raise TreeError(f"node {c}: field 'parent' is {nodes[c].get('parent')!r}, but node {i} lists it as a child")
            seen.add(c)
            stack.append((c, depth + 1))
    unreachable = sorted(set(range(n)) - seen)
    if unreachable:
        raise TreeError(f"node {unreachable[0]}: not reachable from the root (a parent cycle, or a parent that "
                        f"does not list it as a child)")
    for k, it in enumerate(d.get("iterations") or []):
        leaf = it.get("leaf") if isinstance(it, dict) else None
        if not isinstance(leaf, int) or isinstance(leaf, bool) or not 0 <= leaf < n:
            raise TreeError(f"iterations[{k}]: field 'leaf' is {leaf!r}, not a node id")

