"""Phase-1 search: a prompt-driven MCTS over functional steps, run with an instruct model.

Phase 1 of RFTT (rftt-method.md 2.2-2.4) searches solution paths of a question *before* the
model knows the functional tags: every action is a chat prompt (:mod:`.prompts`) asking an
instruct model for one kind of step. The tree model (:class:`~rftt_plugin.search.tree.Tree`,
``Node``) and the selection rule (:func:`~rftt_plugin.search.select.select`) are the same as
phase 2's; only expansion differs (prompts instead of the policy's tag distribution). Nodes carry
text only: phase-1 trees have no token ids (``prompt_ids`` is empty), because the SFT trainer
tokenises the merged samples itself.

Grammar (:data:`PHASE1_GRAMMAR`, rftt-method.md 1.2; counts are samples per action and are
configurable, reference defaults shown)::

    root          -> clarify x2, analyze x2, subquestion x2, next_step x2, direct_answer x1
    clarify       -> analyze x2, subquestion x2, next_step x2, direct_answer x1
    analyze       -> subquestion x2, next_step x2, direct_answer x1
    subquestion   -> next_step x2, direct_answer x1
    next_step     -> next_step x2, subquestion x2, direct_answer x1
    direct_answer -> (terminal)

Every transition except ``root -> direct_answer`` is also allowed by phase 2's grammar
(``tokens.GRAMMAR``). The reference keeps the root's direct answer, and so do we by default
(``root_direct_answer``): it is a cheap full solution whose value informs the search. Such a
path cannot become an SFT sample as it stands (a response may not start with
``<direct_answer>``); :mod:`rftt_plugin.phase1.stitch` skips it and says so in its report.

One search = ``iterations`` iterations of:

1. **select** with the shared rule: stop at a node never expanded; step into the first
   unexplored child; otherwise the UCT-max child (``uct_c``). Children are stored in a seeded
   random order, so "the first unexplored child" is a uniformly random one, as in the
   reference, but without its exclusion of direct answers (they are legitimate leaves).
2. **expand** a node: all its actions x samples are requested at once (concurrently); every
   reply is cleaned (:func:`.prompts.clean_reply`); rejected replies (empty, truncated, tag-like
   text, failed call) and exact duplicates of a sibling of the same kind are not added; the
   counts are kept in ``tree.meta["dropped"]``.
3. **simulate**: from the selected node, expand and move to a uniformly random child until a
   terminal node. No filter on long direct answers.
4. **terminal rules**: ``direct_answer``; a ``next_step`` that states the answer
   (:func:`.prompts.states_answer`: a complete ``\\boxed{}`` or "the answer is"); the depth cap
   (``max_depth`` steps); a node none of whose replies survived cleaning (``dead_end``).
5. **value**: an answer node is graded once, when created, by ``grade(step text, gold)`` (the
   reward module's binary grader by default: 1 correct, 0 otherwise); every other leaf is 0.
   Back-propagation adds the value to Q and 1 to N from the leaf to the root.

If the root yields no usable child, the search stops (``tree.meta["error"]``): there is nothing
to search. A failed model call never raises here (it is a dropped reply); a grader that raises an
``Exception`` marks the node (``error``) and values it 0. ``BaseException`` (interrupts,
cancellation) propagates, which the resumable driver relies on.

Determinism: the random child order and the simulation choices come from one ``random.Random``
per question seeded with ``seed`` and the question; each call's sampling seed is derived from
``seed``, the question, the parent node and the sample index.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Awaitable, Callable, Mapping

from rftt_plugin.phase1.chat import ChatModel, ChatParams, Completion
from rftt_plugin.phase1.prompt_templates import action_messages, clean_reply, states_answer
from rftt_plugin.search.select import select
from rftt_plugin.search.config import SearchConfig
from rftt_plugin.search.tree import Iteration, Node, Tree, TreeStats
from rftt_plugin.tokens import ROOT, FunctionalTag, Step

__all__ = ["PHASE1_GRAMMAR", "PHASE1_TERMINAL_REASONS", "PromptedConfig", "PromptedResult", "PromptedSearch",
           "path_steps"]

_T = FunctionalTag
# Successor actions per node kind, in the reference's order (ROOT = the question).
PHASE1_GRAMMAR: Mapping[FunctionalTag | None, tuple[FunctionalTag, ...]] = {
    ROOT: (_T.CLARIFY, _T.ANALYZE, _T.SUBQUESTION, _T.NEXT_STEP, _T.DIRECT_ANSWER),
    _T.CLARIFY: (_T.ANALYZE, _T.SUBQUESTION, _T.NEXT_STEP, _T.DIRECT_ANSWER),
    _T.ANALYZE: (_T.SUBQUESTION, _T.NEXT_STEP, _T.DIRECT_ANSWER),
    _T.SUBQUESTION: (_T.NEXT_STEP, _T.DIRECT_ANSWER),
    _T.NEXT_STEP: (_T.NEXT_STEP, _T.SUBQUESTION, _T.DIRECT_ANSWER),
    _T.DIRECT_ANSWER: (),
}
del _T

PHASE1_TERMINAL_REASONS = {
    "answer": "a direct_answer, or a next_step that states the answer (graded)",
    "depth": "depth cap reached without an answer",
    "dead_end": "no reply for any successor action survived cleaning",
}

REFERENCE_SAMPLES = {"clarify": 2, "analyze": 2, "subquestion": 2, "next_step": 2, "direct_answer": 1}
REFERENCE_MAX_TOKENS = {"clarify": 512, "analyze": 512, "subquestion": 256, "next_step": 512, "direct_answer": 4096}

GradeFn = Callable[[str, Any], "float | Awaitable[float]"]


_PHASE2 = SearchConfig()


@dataclass(frozen=True)
class PromptedConfig:
    """Every knob of the phase-1 search.

    iterations          MCTS iterations (rollouts) per question (reference script: 16).
    samples             replies requested per action at each expansion (reference: 2 each,
                        direct_answer 1); 0 or absent switches an action off, so
                        ``{"next_step": 1}`` means "next steps only".
    temperature/top_p   sampling of every reply (reference: 0.7, no top_p).
    max_tokens          per-action reply budget in tokens (reference: 512 each, 256 for a
                        sub-question, 4096 for a direct answer); a partial mapping overrides
                        only the actions it names. A reply that hits it is dropped as truncated.
    max_depth           depth cap in steps (reference script: 15).
    uct_c               exploration constant of UCT (reference: 2.0).
    root_direct_answer  keep the root's direct_answer action (reference: yes; see the module doc).
    seed                base seed of the child order, the simulation and every call's sampling.
    concurrency         questions searched at the same time by the driver (``rftt gen-sft``);
                        each search has at most one expansion in flight, i.e. at most
                        sum(samples) requests.
    """

    iterations: int = _PHASE2.iterations       # same budget and exploration as the phase-2 search
    samples: Mapping[str, int] = field(default_factory=lambda: dict(REFERENCE_SAMPLES))
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: Mapping[str, int] = field(default_factory=lambda: dict(REFERENCE_MAX_TOKENS))
    max_depth: int = 15
    uct_c: float = _PHASE2.uct_c
    root_direct_answer: bool = True
    seed: int = 0
    concurrency: int = 8

    def __post_init__(self) -> None:
        known = set(REFERENCE_SAMPLES)
        samples = {**{k: 0 for k in known}, **{str(k): int(v) for k, v in dict(self.samples).items()}}
        tokens = {**REFERENCE_MAX_TOKENS, **{str(k): int(v) for k, v in dict(self.max_tokens).items()}}
        problems = []
        if unknown := sorted(set(samples) - known):
            problems.append(f"samples has unknown actions {unknown} (known: {sorted(known)})")
        if unknown := sorted(set(tokens) - known):
            problems.append(f"max_tokens has unknown actions {unknown} (known: {sorted(known)})")
        if bad := {k: v for k, v in samples.items() if v < 0}:
            problems.append(f"samples must be >= 0 (got {bad})")
        if missing := sorted(k for k, v in samples.items() if v > 0 and tokens.get(k, 0) < 1):
            problems.append(f"max_tokens must be >= 1 for {missing}")
        if self.iterations < 1:
            problems.append(f"iterations must be >= 1 (got {self.iterations})")
        if self.max_depth < 1:
            problems.append(f"max_depth must be >= 1 (got {self.max_depth})")
        if self.uct_c < 0:
            problems.append(f"uct_c must be >= 0 (got {self.uct_c})")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1] (got {self.top_p})")
        if self.concurrency < 1:
            problems.append(f"concurrency must be >= 1 (got {self.concurrency})")
        if not any(samples[a.value] for a in PHASE1_GRAMMAR[ROOT]):
            problems.append("every root action has 0 samples: nothing to search")
        if problems:
            raise ValueError("invalid PromptedConfig: " + "; ".join(problems))
        # Plain dicts (frozen dataclass: set through object.__setattr__) so to_dict() is JSON.
        object.__setattr__(self, "samples", samples)
        object.__setattr__(self, "max_tokens", tokens)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> "PromptedConfig":
        """Build from a dict; unknown keys are an error (a typo must not fall back to a default)."""
        items = dict(data or {})
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(items) - known):
            raise ValueError(f"unknown PromptedConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**items)

    def actions_after(self, tag: FunctionalTag | None) -> list[tuple[FunctionalTag, int]]:
        """(action, samples) pairs to request below a node of kind ``tag``."""
        out = []
        for action in PHASE1_GRAMMAR[tag]:
            if tag is ROOT and action is FunctionalTag.DIRECT_ANSWER and not self.root_direct_answer:
                continue
            if self.samples[action.value] > 0:
                out.append((action, self.samples[action.value]))
        return out


@dataclass
class PromptedResult:
    tree: Tree
    stats: TreeStats
    wall_s: float


def path_steps(tree: Tree, node_id: int) -> list[Step]:
    """The steps from the first one to ``node_id`` (root excluded)."""
    return [Step(n.tag, n.text) for n in tree.path(node_id)]


def _default_grade(text: str, gold: Any) -> Awaitable[float]:
    from rftt_plugin.reward import grade_async

    return grade_async(text, gold)


class PromptedSearch:
    """The phase-1 search bound to one chat model and config; safe for concurrent questions
    (all per-question state lives in the tree and a local random generator)."""

    def __init__(self, chat: ChatModel, config: PromptedConfig | None = None, grade: GradeFn | None = None):
        self.chat = chat
        self.config = config or PromptedConfig()
        self.grade = grade or _default_grade

    async def search(self, question: str, gold: Any, meta: dict[str, Any] | None = None) -> PromptedResult:
        cfg = self.config
        t0 = time.perf_counter()
        tree = Tree(question, [], -1, gold, {"kind": "prompted", "config": cfg.to_dict(), **(meta or {})})
        tree.meta["dropped"] = {}
        salt = zlib.crc32(question.encode("utf-8"))
        rng = random.Random(f"{cfg.seed}:{salt}")
        seen: set[int] = set()
        for _ in range(cfg.iterations):
            calls0, nodes0 = tree.llm_calls, len(tree.nodes)
            node = select(tree, cfg.uct_c)[-1]
            node = await self._simulate(tree, node, rng, salt)
            if node is tree.root:  # the root has no usable child: nothing to search
                tree.meta["error"] = "no usable reply for any action at the root"
                break
            tree.backup(node, node.reward if node.reward is not None else 0.0)
            tree.iterations.append(Iteration(node.id, True, node.id in seen, len(tree.nodes) - nodes0,
                                             tree.llm_calls - calls0))
            seen.add(node.id)
        wall = time.perf_counter() - t0
        tree.meta["wall_s"] = wall
        return PromptedResult(tree, tree.stats(), wall)

    # -- simulation -----------------------------------------------------------------------------
    async def _simulate(self, tree: Tree, node: Node, rng: random.Random, salt: int) -> Node:
        while not node.terminal:
            if not node.expanded:
                await self._expand(tree, node, rng, salt)
            if not node.children:
                if node is tree.root:
                    return node
                node.terminal_reason, node.reward = "dead_end", 0.0
                break
            node = tree[rng.choice(node.children)]
        return node

    # -- expansion ------------------------------------------------------------------------------
    def _call_seed(self, salt: int, parent: Node, action: FunctionalTag, index: int) -> int:
        return (self.config.seed * 1_000_003 + salt * 7_919 + parent.id * 101 + index * 13
                + list(FunctionalTag).index(action)) % (2**31 - 1)

    async def _expand(self, tree: Tree, node: Node, rng: random.Random, salt: int) -> None:
        cfg = self.config
        steps = path_steps(tree, node.id)
        requests = [(action, i) for action, k in cfg.actions_after(node.tag) for i in range(k)]

        async def one(action: FunctionalTag, index: int) -> Completion:
            params = ChatParams(max_tokens=cfg.max_tokens[action.value], temperature=cfg.temperature,
                                top_p=cfg.top_p, seed=self._call_seed(salt, node, action, index))
            try:
                return await self.chat.complete(action_messages(action, tree.question, steps), params)
            except Exception as exc:  # noqa: BLE001 - a failed call is a dropped reply, not a failed search
                return Completion.failed(f"{type(exc).__name__}: {exc}")

        replies = await asyncio.gather(*(one(a, i) for a, i in requests))
        tree.llm_calls += len(requests)
        dropped: Counter[str] = Counter(tree.meta["dropped"])
        kept: list[tuple[FunctionalTag, str, Completion]] = []
        seen: set[tuple[FunctionalTag, str]] = set()
        for (action, _), reply in zip(requests, replies):
            cleaned = clean_reply(action.value, reply.text, reply.finish_reason)
            if not cleaned.ok:
                dropped[cleaned.reason] += 1
                continue
            if (action, cleaned.text) in seen:  # an identical sibling adds nothing to the search
                dropped["duplicate"] += 1
                continue
            seen.add((action, cleaned.text))
            kept.append((action, cleaned.text, reply))
        tree.meta["dropped"] = dict(dropped)
        rng.shuffle(kept)  # the order selection tries unexplored children in: uniformly random
        for rank, (action, text, reply) in enumerate(kept):
            child = tree.add_child(node, action, rank=rank, text=text, generated=True,
                                   finish_reason=reply.finish_reason)
            await self._classify(tree, child)
        node.expanded = True

    async def _classify(self, tree: Tree, node: Node) -> None:
        """Apply the terminal rules to a new node and grade it if it is an answer."""
        is_answer = node.tag is FunctionalTag.DIRECT_ANSWER or (
            node.tag is FunctionalTag.NEXT_STEP and states_answer(node.text))
        if is_answer:
            node.terminal_reason = "answer"
            node.reward = await self._grade(tree, node)
        elif node.depth >= self.config.max_depth:
            node.terminal_reason, node.reward = "depth", 0.0

    async def _grade(self, tree: Tree, node: Node) -> float:
        try:
            value = self.grade(node.text, tree.gold)
            if inspect.isawaitable(value):
                value = await value
            return float(value)
        except Exception as exc:  # noqa: BLE001 - a grader bug must not end the search
            node.error = f"grade: {type(exc).__name__}: {exc}"
            return 0.0
