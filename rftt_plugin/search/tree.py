"""The search tree: nodes with their exact token ids, statistics, paths, JSON.

A :class:`Node` is one functional step. Its ``token_ids`` are everything the step adds to the
response, in order::

    <tag> \\n            inserted by the search (the tag was *chosen* from the policy's
                          next-token distribution; the newline is format)
    text ... </tag>      sampled by the model (the closing tag ends generation)
    \\n                   inserted (format)

with ``sampled[i]`` telling sampled from inserted ids and ``logprobs[i]`` the log-prob of each
id. For sampled ids it is the backend's log-prob under the sampling distribution (logits divided
by the step temperature). For the inserted opening tag it is the tag's log-prob from the ranking
distribution (temperature 1, full vocabulary): exact per token in ``added`` mode; in ``text``
mode the log-prob of the whole ``"<tag>\\n"`` piece sequence is put on its first id and 0 on
the others, so the sum over the segment is right. Other inserted ids (newlines, the final
EOS) carry 0. Use ``sampled_mask`` to tell which values are real per-token sampling log-probs.

The root (id 0, tag None) is the question and has no ids; the prompt ids live on the
:class:`Tree`. ``Q`` and ``N`` are the MCTS statistics (sum of backed-up rewards, visits).

:meth:`Tree.paths` turns the iterations into :class:`Leaf` records -- the training sequences:
prompt ids, response ids (node ids concatenated along the path, plus EOS after an ``<output>``
step), aligned log-probs, sampled mask, loss mask, step boundaries and the values of the nodes
on the path. Nothing is re-tokenised.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from rftt_plugin.tokens import FunctionalTag

# Why a node has no children. "output" is the only one graded by the reward function.
TERMINAL_REASONS = {
    "output": "an <output> step (graded)",
    "depth": "depth cap reached without <output>",
    "budget": "the path's token budget (max_response_tokens) ran out",
    "length": "no closing tag within the step's max tokens",
    "eos": "the model ended the sequence inside a step",
    "empty": "the step text is empty",
    "wrong_tag": "the step was closed by another tag or opened a tag inside itself",
    "overhang": "text mode: the token that completed the closing tag carries non-space text after it",
    "error": "the backend failed (exception or error result) after its retries: a fault, pruned",
}

# Why a leaf carries no trustworthy reward (``Node.fault``). Such a leaf is pruned from the tree:
# it backs up nothing, selection never returns to it, and no training row is made of it.
FAULT_CAUSES = {
    "step_error": "a generation or tag read-out failed after rftt.search.step_retries retries",
    "grade_timeout": "the answer check gave no verdict (timed out or the grader was overloaded)",
    "grade_error": "the grader raised",
    "prm_error": "the PRM gave no score after its retries",
}



class LeafFault(Exception):
    """Raised by a grader when a leaf gets no trustworthy reward; the search prunes the leaf and
    records ``cause`` (a :data:`FAULT_CAUSES` key) instead of scoring it."""

    def __init__(self, cause: str, message: str):
        if cause not in FAULT_CAUSES:
            raise ValueError(f"unknown fault cause {cause!r}; choose one of {', '.join(FAULT_CAUSES)}")
        super().__init__(message)
        self.cause = cause


TREE_FORMAT = "rftt-tree/1"


@dataclass
class Node:
    id: int
    parent: int | None
    tag: FunctionalTag | None
    depth: int
    rank: int = 0                 # position among the siblings (0 = most probable tag)
    prior_logprob: float = 0.0    # log P(tag | context), full vocabulary, temperature 1
    prior: float = 1.0            # P(tag) renormalised over the allowed siblings
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    sampled: list[bool] = field(default_factory=list)
    close_index: int | None = None  # index in token_ids of the last id of the closing tag
    text: str = ""                # the step text, stripped (display and debugging only)
    children: list[int] = field(default_factory=list)
    generated: bool = False       # step text generated (root: always)
    expanded: bool = False        # children created
    terminal_reason: str | None = None
    reward: float | None = None   # set on terminal nodes
    finish_reason: str | None = None
    error: str | None = None
    fault: str | None = None      # a FAULT_CAUSES key: the node's reward is unknown, it was pruned
    Q: float = 0.0
    N: int = 0

    def __post_init__(self) -> None:
        if self.tag is not None:
            self.tag = FunctionalTag(self.tag)

    @property
    def terminal(self) -> bool:
        return self.terminal_reason is not None

    @property
    def value(self) -> float:
        """Mean backed-up reward Q/N (0 for an unvisited node)."""
        return self.Q / self.N if self.N else 0.0

    @property
    def n_sampled(self) -> int:
        return sum(self.sampled)

    def append(self, ids, logprobs, sampled: bool) -> None:
        ids = [int(t) for t in ids]
        lps = [float(x) for x in logprobs]
        if len(ids) != len(lps):
            raise ValueError("ids and log-probs differ in length")
        self.token_ids += ids
        self.logprobs += lps
        self.sampled += [sampled] * len(ids)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tag"] = None if self.tag is None else self.tag.value
        d["sampled"] = [int(s) for s in self.sampled]
        d["logprobs"] = [_finite(x) for x in self.logprobs]
        d["prior_logprob"] = _finite(self.prior_logprob)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Node":
        d = dict(d)
        d["sampled"] = [bool(s) for s in d.get("sampled", [])]
        d["logprobs"] = [_unfinite(x) for x in d.get("logprobs", [])]
        d["prior_logprob"] = _unfinite(d.get("prior_logprob", 0.0))
        return cls(**d)


def _finite(x: float) -> float | str:
    # JSON has no infinities; a tag outside a top-k read-out can have log-prob -inf.
    return x if math.isfinite(x) else repr(x)


def _unfinite(x: float | str) -> float:
    return float(x)


@dataclass
class Iteration:
    """One MCTS iteration: the leaf it reached and whether that leaf was emitted as a path."""

    leaf: int
    emitted: bool = True
    duplicate: bool = False       # the leaf had been reached by an earlier iteration
    new_nodes: int = 0            # steps generated in this iteration
    llm_calls: int = 0
    fault: str | None = None      # the leaf was a fault (FAULT_CAUSES): pruned, not emitted


@dataclass(frozen=True)
class Fault:
    """An iteration whose leaf has no trustworthy reward: it yields no training sequence."""

    iteration: int
    leaf_id: int
    cause: str                    # a FAULT_CAUSES key
    error: str = ""


@dataclass
class Leaf:
    """One root-to-leaf path as a training sequence (all lists aligned with ``response_ids``)."""

    iteration: int
    leaf_id: int
    node_ids: list[int]           # the path, root excluded
    tags: list[str]
    prompt_ids: list[int]
    response_ids: list[int]
    response_logprobs: list[float]
    sampled_mask: list[int]       # 1 = sampled by the model, 0 = inserted by the search
    loss_mask: list[int]
    step_ends: list[int]          # per step: index of its closing tag's last id (or its last id)
    reward: float
    terminal_reason: str
    node_values: list[float]      # Q/N of each node on the path, at the end of the search
    node_visits: list[int]
    duplicate: bool = False

    @property
    def n_steps(self) -> int:
        return len(self.node_ids)


@dataclass
class TreeStats:
    nodes: int                    # steps in the tree (root excluded)
    max_depth: int
    iterations: int
    leaves: int                   # paths emitted
    unique_leaves: int
    generated_tokens: int         # ids sampled by the model, each shared step counted once
    inserted_tokens: int
    independent_tokens: int       # sampled ids the emitted paths would cost if sampled one by one
    independent_unique_tokens: int  # ... counting each distinct leaf once
    llm_calls: int
    tag_histogram: dict[str, int]
    terminal_reasons: dict[str, int]  # over the distinct leaves
    mean_reward: float            # over the emitted paths
    max_reward: float
    faults: dict[str, int] = field(default_factory=dict)  # faulted iterations by cause
    retries: int = 0              # backend calls retried (each retry once)

    @property
    def token_ratio(self) -> float:
        """generated / independent: the price of the tree relative to independent sampling."""
        return self.generated_tokens / self.independent_tokens if self.independent_tokens else 0.0


class Tree:
    """Nodes in creation order (ids are list indices), plus the question, prompt and iterations."""

    def __init__(self, question: str, prompt_ids: list[int], eos_id: int, gold: Any = None,
                 meta: dict[str, Any] | None = None):
        self.question = question
        self.prompt_ids = [int(t) for t in prompt_ids]
        self.eos_id = int(eos_id)
        self.gold = gold
        self.meta: dict[str, Any] = dict(meta or {})
        self.nodes: list[Node] = [Node(0, None, None, 0, generated=True)]
        self.iterations: list[Iteration] = []
        self.llm_calls = 0

    # -- structure -------------------------------------------------------------------------------
    @property
    def root(self) -> Node:
        return self.nodes[0]

    def __getitem__(self, node_id: int) -> Node:
        return self.nodes[node_id]

    def __len__(self) -> int:
        return len(self.nodes)

    def add_child(self, parent: Node, tag: FunctionalTag, **fields_) -> Node:
        node = Node(len(self.nodes), parent.id, FunctionalTag(tag), parent.depth + 1, **fields_)
        self.nodes.append(node)
        parent.children.append(node.id)
        return node

    def children(self, node: Node) -> list[Node]:
        return [self.nodes[c] for c in node.children]

    def path(self, node_id: int) -> list[Node]:
        """Nodes from the first step to ``node_id`` (root excluded)."""
        out = []
        node = self.nodes[node_id]
        while node.parent is not None:
            out.append(node)
            node = self.nodes[node.parent]
        return out[::-1]

    def response_ids(self, node_id: int) -> list[int]:
        """The response ids up to and including ``node_id`` (no EOS)."""
        return [t for n in self.path(node_id) for t in n.token_ids]

    def context_ids(self, node_id: int) -> list[int]:
        """Prompt ids + response ids up to ``node_id``: what the model conditions on next."""
        return self.prompt_ids + self.response_ids(node_id)

    def walk(self) -> Iterator[Node]:
        """Depth-first, children in rank order."""
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(self.nodes[c] for c in reversed(node.children))

    def is_exhausted(self, node: Node | None = None) -> bool:
        """True when no unexplored node is left below ``node`` (default: root)."""
        node = node or self.root
        stack = [node]
        while stack:
            n = stack.pop()
            if n.terminal:
                continue
            if not n.expanded or any(self.nodes[c].N == 0 for c in n.children):
                return False
            stack.extend(self.nodes[c] for c in n.children)
        return True

    def prune(self, node: Node) -> None:
        """Detach a faulted node (and any ancestor left without children) from the tree: selection
        and statistics never see it again; it stays in ``nodes`` for display and JSON."""
        while node.parent is not None:
            parent = self.nodes[node.parent]
            if node.id in parent.children:
                parent.children.remove(node.id)
            if parent.children or parent.parent is None or parent.terminal:
                return
            node = parent  # an expanded step whose every child faulted: nothing left to search below it

    def backup(self, leaf: Node, reward: float) -> None:
        """Q += reward, N += 1 on every node from the root to ``leaf``."""
        node: Node | None = leaf
        while node is not None:
            node.Q += reward
            node.N += 1
            node = None if node.parent is None else self.nodes[node.parent]

    # -- leaves ---------------------------------------------------------------------------------
    def prefix_spans(self, node_id: int, length: int | None = None) -> dict[str, list[int]]:
        """Where each step of the path to ``node_id`` sits in that leaf's response ids.

        For trainers that share prefixes across the leaves of a tree: ``node_ids`` (root excluded),
        ``parent_ids`` (0 = the root, i.e. the prompt) and ``starts`` (offset of each node's first id
        in the response; node ``k`` spans ``[starts[k], starts[k+1])``, the last one runs to the end,
        the search's EOS included). Two leaves that share a node id share exactly those ids. With
        ``length`` (a response cut to that many ids), nodes that start at or after it are left out.
        """
        path = self.path(node_id)
        starts, offset = [], 0
        for n in path:
            starts.append(offset)
            offset += len(n.token_ids)
        keep = len(path) if length is None else sum(s < length for s in starts)
        return {"node_ids": [n.id for n in path][:keep], "parent_ids": [int(n.parent) for n in path][:keep],
                "starts": starts[:keep]}

    def leaf(self, node_id: int, iteration: int = -1, loss_on_inserted: bool = True,
             duplicate: bool = False) -> Leaf:
        """The training record of the path that ends at ``node_id``."""
        path = self.path(node_id)
        end = self.nodes[node_id]
        ids: list[int] = []
        lps: list[float] = []
        sampled: list[int] = []
        step_ends: list[int] = []
        for n in path:
            offset = len(ids)
            ids += n.token_ids
            lps += n.logprobs
            sampled += [int(s) for s in n.sampled]
            if n.token_ids:
                local = n.close_index if n.close_index is not None else len(n.token_ids) - 1
                step_ends.append(offset + local)
            else:
                step_ends.append(offset - 1)
        if end.terminal_reason == "output":
            # The search ends the response; the model never sampled this EOS.
            ids.append(self.eos_id)
            lps.append(0.0)
            sampled.append(0)
        loss = [1 if (s or loss_on_inserted) else 0 for s in sampled]
        reward = end.reward if end.reward is not None else 0.0
        return Leaf(iteration, node_id, [n.id for n in path], [n.tag.value for n in path],
                    list(self.prompt_ids), ids, lps, sampled, loss, step_ends, float(reward),
                    end.terminal_reason or "open", [n.value for n in path], [n.N for n in path],
                    duplicate)

    def paths(self, loss_on_inserted: bool | None = None) -> list[Leaf]:
        """One :class:`Leaf` per emitted iteration, in iteration order (duplicates included)."""
        if loss_on_inserted is None:
            loss_on_inserted = bool(self.meta.get("config", {}).get("loss_on_inserted", True))
        return [self.leaf(it.leaf, i, loss_on_inserted, it.duplicate)
                for i, it in enumerate(self.iterations) if it.emitted]

    # -- statistics -----------------------------------------------------------------------------
    def stats(self) -> TreeStats:
        steps = self.nodes[1:]
        emitted = [it.leaf for it in self.iterations if it.emitted]
        unique = list(dict.fromkeys(emitted))

        def path_sampled(leaf_id: int) -> int:
            return sum(n.n_sampled for n in self.path(leaf_id))

        rewards = [self.nodes[i].reward or 0.0 for i in emitted]
        return TreeStats(
            nodes=len(steps),
            max_depth=max((n.depth for n in steps), default=0),
            iterations=len(self.iterations),
            leaves=len(emitted),
            unique_leaves=len(unique),
            generated_tokens=sum(n.n_sampled for n in steps),
            inserted_tokens=sum(len(n.token_ids) - n.n_sampled for n in steps),
            independent_tokens=sum(path_sampled(i) for i in emitted),
            independent_unique_tokens=sum(path_sampled(i) for i in unique),
            llm_calls=self.llm_calls,
            tag_histogram=dict(Counter(n.tag.value for n in steps if n.generated)),
            terminal_reasons=dict(Counter(self.nodes[i].terminal_reason or "open" for i in unique)),
            mean_reward=sum(rewards) / len(rewards) if rewards else 0.0,
            max_reward=max(rewards, default=0.0),
            faults=dict(Counter(it.fault for it in self.iterations if it.fault)),
            retries=int(self.meta.get("retries", 0)),
        )

    # -- JSON -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TREE_FORMAT,
            "question": self.question,
            "gold": self.gold,
            "prompt_ids": self.prompt_ids,
            "eos_id": self.eos_id,
            "llm_calls": self.llm_calls,
            "meta": self.meta,
            "stats": asdict(self.stats()),  # informational; recomputed on load
            "iterations": [asdict(it) for it in self.iterations],
            "nodes": [n.to_dict() for n in self.nodes],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Tree":
        if d.get("format") != TREE_FORMAT:
            raise ValueError(f"not an RFTT search tree (format {d.get('format')!r}, expected {TREE_FORMAT!r})")
        tree = cls(d["question"], d["prompt_ids"], d["eos_id"], d.get("gold"), d.get("meta"))
        tree.llm_calls = int(d.get("llm_calls", 0))
        tree.nodes = [Node.from_dict(n) for n in d["nodes"]]
        tree.iterations = [Iteration(**it) for it in d.get("iterations", [])]
        for i, n in enumerate(tree.nodes):
            if n.id != i:
                raise ValueError(f"node at position {i} has id {n.id}")
        return tree

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Tree":
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike) -> None:
        tmp = f"{os.fspath(path)}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self.to_json())
        os.replace(tmp, path)  # never leave a half-written tree behind

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tree":
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read())
