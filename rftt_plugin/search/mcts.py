"""Functional MCTS: tree search over the eight functional tags, driven by the policy itself.

Per question, ``config.iterations`` iterations, each yielding one root-to-leaf path
(design.md section 4, rftt-method.md 3.2):

1. **select** (:func:`~rftt_plugin.search.select.select`): from the root, stop at a node never
   expanded or at a terminal node; step into the most probable unexplored child if there is
   one (and stop there), else into the UCT-max child.
2. **expand** a node: the grammar gives the allowed next tags; the policy's own next-token
   distribution after the node's context ranks them. ``added`` mode: one call reads the
   log-probs of the candidate opening-tag ids (full-vocabulary softmax, temperature 1) -- exact,
   no top-k cut, no substring matching of decoded tokens (unlike the reference's read-out). ``text`` mode: the log-prob of each tag's
   multi-piece ``"<tag>\\n"`` text (sum over its pieces; one scoring call). *Every* allowed tag
   becomes a child, in probability order (ties: grammar order); ``prior`` is the distribution
   renormalised over the allowed tags. (``config.min_tag_prior`` > 0 drops the unlikely ones;
   ``config.samples_per_tag`` > 1 gives each tag that many children, each sampling its own step.)
3. **simulate** (default policy): generate the selected node's step, expand it, descend to its
   most probable child, and repeat until a terminal node. A step is generated lazily when the
   search first reaches it: context = chat-templated prompt + the path's ids + ``<tag>\\n``;
   temperature 0.1 / top_p 0.95 by default; stop at a closing tag; at most 512 new ids (1024
   for ``direct_answer``) and never past the path budget ``max_response_tokens``.
4. **grade** an ``<output>`` leaf with the pluggable ``grade(response_text)`` (sync or async),
   once; any other leaf (depth cap, budget, a step the policy spoiled) gets ``config.cut_reward``.
5. **back up**: Q += r, N += 1 on every node of the path, root included.

Robustness: a step the *policy* spoiled -- EOS inside the step, no closing tag within the max
tokens, a different tag closing it, an empty text -- is kept with the ids it produced, marked
terminal with that reason (see ``TERMINAL_REASONS``) and treated as a leaf with ``cut_reward``; the
tree carries on. An *infrastructure* fault is not the policy's doing and gets no made-up reward:
a backend call that fails (exception, aborted request, ``error`` result) is retried
``config.step_retries`` times; if it still fails, and likewise when the grader raises or
signals no verdict (an exception with a ``cause`` attribute, see
``rftt_plugin.search.tree.FAULT_CAUSES``), the leaf gets ``Node.fault``, is pruned from the tree
(:meth:`Tree.prune`: no back-up, never selected again) and its iteration emits nothing
(``Iteration.fault``; :attr:`SearchResult.slots` lists it as a :class:`Fault`). If the *root*
cannot be expanded there is nothing to search and the search ends with no leaves
(``tree.meta["error"]``).

Duplicates: selection can end on a terminal leaf reached before; faithful mode
(``distinct_leaves=False``) runs exactly ``iterations`` iterations and emits such a leaf again
(the reference behaviour). With ``distinct_leaves=True`` the repeat is backed up (so UCT
moves on) but not emitted, and the search runs until ``iterations`` distinct leaves exist, the
tree is exhausted, or ``max_iterations`` iterations ran.

Determinism: each step's sampling seed is derived from ``config.seed``, the question and the
node id; with a deterministic backend the same inputs give the same tree.

Concurrency: one tree is a chain of dependent calls (selection depends on the last backup), so
it keeps at most one request in flight; throughput comes from running many trees at once
(:func:`rftt_plugin.search.many.search_many`) against a batching backend (the reference searches one tree at a time).
"""

from __future__ import annotations

import logging

import inspect
import math
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

from rftt_plugin.backends.base import Backend, Generation, SamplingParams
from rftt_plugin.search.config import SearchConfig
from rftt_plugin.search.select import select
from rftt_plugin.search.tree import Fault, Iteration, Leaf, Node, Tree, TreeStats
from rftt_plugin.tag_ids import TagIds
from rftt_plugin.tokens import TAGS, FunctionalTag, allowed_next

GradeFn = Callable[[str], "float | Awaitable[float]"]

logger = logging.getLogger("rftt_plugin.search")


@dataclass
class SearchResult:
    tree: Tree
    leaves: list[Leaf]
    stats: TreeStats
    wall_s: float
    # What each consumer slot gets, in iteration order: the emitted leaves, and in faithful mode
    # (one path per iteration) a Fault where an iteration's leaf was a fault. Empty: use ``leaves``.
    slots: list[Leaf | Fault] = field(default_factory=list)

    def session_slots(self) -> list[Leaf | Fault]:
        return self.slots or list(self.leaves)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class FunctionalMCTS:
    """Search engine bound to one backend, the tag ids and a config; reusable across questions
    and safe to run for many questions concurrently (all per-search state lives in the tree)."""

    def __init__(self, backend: Backend, tag_ids: TagIds, config: SearchConfig | None = None,
                 grade: GradeFn | None = None):
        self.backend = backend
        self.tag_ids = tag_ids
        self.config = config or SearchConfig()
        self.grade = grade
        if tag_ids.mode != self.config.token_mode:
            raise ValueError(f"the tag ids are in {tag_ids.mode!r} mode but config.token_mode is "
                             f"{self.config.token_mode!r}")
        if tag_ids.eos_id is None:
            raise ValueError("the tokenizer has no eos_token_id; pass eos_id to TagIds.from_tokenizer")

    # -- public ---------------------------------------------------------------------------------
    async def search(self, question: str, prompt_ids: Sequence[int], grade: GradeFn | None = None,
                     gold: Any = None, meta: dict[str, Any] | None = None) -> SearchResult:
        """Search one question; ``prompt_ids`` are its prompt as the model sees it (the caller builds
        them, e.g. :func:`rftt_plugin.chat_prompt.chat_prompt_ids`); ``question`` names the tree."""
        cfg = self.config
        grade = grade or self.grade
        t0 = time.perf_counter()
        tree = Tree(question, list(prompt_ids), self.tag_ids.eos_id, gold,
                    {"config": cfg.to_dict(), **(meta or {})})
        salt = zlib.crc32(question.encode("utf-8"))
        seen: set[int] = set()
        emitted = 0
        for _ in range(cfg.iteration_limit):
            if cfg.distinct_leaves and (emitted >= cfg.iterations or (tree.iterations and tree.is_exhausted())):
                break
            calls0, nodes0 = tree.llm_calls, sum(n.generated for n in tree.nodes)
            node = select(tree, cfg.uct_c)[-1]
            if not node.terminal:
                node = await self._simulate(tree, node, grade, salt)
            if node is tree.root:  # the root could not be expanded: nothing to search
                tree.meta["error"] = tree.root.error or "the root could not be expanded"
                break
            if node.fault is not None:  # no trustworthy reward: back up nothing, never select it again
                tree.prune(node)
                tree.iterations.append(Iteration(node.id, False, False, sum(n.generated for n in tree.nodes) - nodes0,
                                                 tree.llm_calls - calls0, fault=node.fault))
                if not tree.root.children:
                    tree.meta["error"] = f"every branch of the root faulted (last: {node.error})"
                    break
                continue
            tree.backup(node, node.reward if node.reward is not None else cfg.cut_reward)
            duplicate = node.id in seen
            seen.add(node.id)
            emit = not (cfg.distinct_leaves and duplicate)
            emitted += emit
            tree.iterations.append(Iteration(node.id, emit, duplicate,
                                             sum(n.generated for n in tree.nodes) - nodes0,
                                             tree.llm_calls - calls0))
        wall = time.perf_counter() - t0
        tree.meta["wall_s"] = wall
        leaves = tree.paths(cfg.loss_on_inserted)
        return SearchResult(tree, leaves, tree.stats(), wall, self._slots(tree, leaves))

    def _slots(self, tree: Tree, leaves: list[Leaf]) -> list[Leaf | Fault]:
        emitted = iter(leaves)
        slots: list[Leaf | Fault] = []
        for i, it in enumerate(tree.iterations):
            if it.emitted:
                slots.append(next(emitted))
            elif it.fault and not self.config.distinct_leaves:
                # faithful mode: iteration i is consumer i's path; it has none
                slots.append(Fault(i, it.leaf, it.fault, tree[it.leaf].error or ""))
        return slots

    # -- simulation -----------------------------------------------------------------------------
    async def _simulate(self, tree: Tree, node: Node, grade: GradeFn | None, salt: int) -> Node:
        """Generate, expand and follow the most probable tag until a terminal node."""
        while True:
            if not node.generated:
                await self._generate_step(tree, node, grade, salt)
            if node.terminal:
                return node
            if not node.expanded:
                await self._expand(tree, node)
            if node.terminal:
                return node
            node = tree[node.children[0]]

    # -- expansion ------------------------------------------------------------------------------
    async def _expand(self, tree: Tree, node: Node) -> None:
        tags = [t for t in allowed_next(node.tag, node.depth, self.config.max_depth)
                if t.value not in self.config.blocked_tags]
        if not tags:  # defensive: _generate_step already marks these terminal (or every allowed tag is blocked)
            self._terminate(node, "output" if node.tag is FunctionalTag.OUTPUT else "depth")
            return
        context = tree.context_ids(node.id)
        for attempt in range(self.config.step_retries + 1):
            if attempt:
                tree.meta["retries"] = int(tree.meta.get("retries", 0)) + 1
            try:
                if self.tag_ids.mode == "added":
                    scores = await self.backend.next_token_logprobs(
                        context, [self.tag_ids.open_id(t) for t in tags])
                else:
                    scores = await self.backend.sequence_logprobs(
                        context, [self.tag_ids.ranking_candidate(t) for t in tags])
                scores = [float(s) for s in scores]
                if len(scores) != len(tags):
                    raise ValueError(f"backend returned {len(scores)} scores for {len(tags)} tags")
                break
            except Exception as exc:  # noqa: BLE001 - a failed call ends this branch, not the tree
                node.error = _error_text(exc)
            finally:
                tree.llm_calls += 1
        else:
            self._fault(node, "step_error")
            return
        node.error = None
        scores = [s if not math.isnan(s) else -math.inf for s in scores]
        order = sorted(range(len(tags)), key=lambda i: (-scores[i], i))
        top = max(scores)
        weights = [math.exp(s - top) if math.isfinite(top) else 1.0 for s in scores]
        total = sum(weights)
        floor = self.config.min_tag_prior
        for rank, i in enumerate(order):
            if rank and weights[i] / total < floor:
                break  # ``order`` is by probability: every later tag is below the floor too
            for _ in range(self.config.samples_per_tag):  # siblings differ by their step seed (node id)
                tree.add_child(node, tags[i], rank=rank, prior_logprob=scores[i], prior=weights[i] / total)
        node.expanded = True

    # -- one step -------------------------------------------------------------------------------
    def _step_seed(self, salt: int, node: Node) -> int:
        return (self.config.seed * 1_000_003 + salt * 7_919 + node.id) % (2**31 - 1)

    async def _generate_step(self, tree: Tree, node: Node, grade: GradeFn | None, salt: int) -> None:
        cfg, tag_ids = self.config, self.tag_ids
        tag = node.tag
        assert tag is not None, "the root has no step to generate"
        context = tree.context_ids(node.parent)  # type: ignore[arg-type]
        used = len(context) - len(tree.prompt_ids)
        segment = tag_ids.open_segments[tag]
        # The tag was chosen from the ranking distribution: carry its log-prob on the tag id.
        node.append(segment, [node.prior_logprob] + [0.0] * (len(segment) - 1), sampled=False)
        node.generated = True
        reserve = len(tag_ids.after_close_ids) + 1  # room for the newline and a final EOS
        remaining = cfg.max_response_tokens - used - len(segment) - reserve
        cap = cfg.direct_answer_max_tokens if tag is FunctionalTag.DIRECT_ANSWER else cfg.step_max_tokens
        if remaining < 1:
            self._terminate(node, "budget")
            return
        params = SamplingParams(max_tokens=min(cap, remaining), temperature=cfg.step_temperature,
                                top_p=cfg.step_top_p, top_k=cfg.step_top_k,
                                stop_token_ids=tag_ids.stop_token_ids, stop=tag_ids.stop_strings,
                                seed=self._step_seed(salt, node))
        for attempt in range(cfg.step_retries + 1):
            if attempt:
                tree.meta["retries"] = int(tree.meta.get("retries", 0)) + 1
            try:
                gen = await self.backend.generate(context + list(segment), params)
            except Exception as exc:  # noqa: BLE001
                gen = Generation.failed(_error_text(exc))
            finally:
                tree.llm_calls += 1
            if gen.finish_reason != "error":
                break
        node.finish_reason = gen.finish_reason
        node.append(gen.token_ids, gen.logprobs, sampled=True)
        reason = self._check_step(node, gen, budget_limited=params.max_tokens < cap)
        if reason == "error":
            self._fault(node, "step_error")
            return
        if reason is not None:
            self._terminate(node, reason)
            return
        if tag is FunctionalTag.OUTPUT:
            node.terminal_reason = "output"
            node.reward = await self._grade(tree, node, grade)
            return
        if not allowed_next(tag, node.depth, cfg.max_depth):
            self._terminate(node, "depth")
            return
        longest_open = max(len(s) for s in tag_ids.open_segments.values())
        if used + len(node.token_ids) + longest_open + reserve >= cfg.max_response_tokens:
            self._terminate(node, "budget")  # no room for even one more id of text

    def _check_step(self, node: Node, gen: Generation, budget_limited: bool) -> str | None:
        """Validate a generated step; on success finish its ids, else return a terminal reason."""
        tag_ids = self.tag_ids
        tag = node.tag
        ids = gen.token_ids
        if gen.finish_reason == "error":
            node.error = str(gen.stop_reason)
            return "error"
        node.text = tag_ids.decode(ids).strip()
        if gen.finish_reason == "eos":
            return "eos"
        if gen.finish_reason == "length":
            return "budget" if budget_limited else "length"
        # finish_reason == "stop": did the right closing tag end the step?
        close_index = len(node.token_ids) - 1
        if tag_ids.mode == "added":
            hit = tag_ids.tag_of_id(ids[-1]) if ids else None
            body = tag_ids.decode(ids[:-1])
            if hit != (tag, True):
                return "wrong_tag"
            need_newline = True
        else:
            text = tag_ids.decode(ids)
            at = text.find(tag.close)
            others = [t.close for t in TAGS if t is not tag and t.close in text]
            if at < 0 or (others and min(text.find(s) for s in others) < at):
                return "wrong_tag"
            body, overhang = text[:at], text[at + len(tag.close):]
            if overhang.strip():
                return "overhang"
            if any(t.open in body for t in TAGS):
                return "wrong_tag"
            need_newline = "\n" not in overhang
        node.text = body.strip()
        node.close_index = close_index
        if not node.text:
            return "empty"
        if need_newline:
            node.append(tag_ids.after_close_ids, [0.0] * len(tag_ids.after_close_ids), sampled=False)
        return None

    def _terminate(self, node: Node, reason: str) -> None:
        node.terminal_reason = reason
        node.reward = self.config.cut_reward

    def _fault(self, node: Node, cause: str) -> None:
        """A leaf without a trustworthy reward (the search loop prunes it)."""
        node.terminal_reason = node.terminal_reason or "error"
        node.fault = cause
        node.reward = None

    async def _grade(self, tree: Tree, node: Node, grade: GradeFn | None) -> float | None:
        if grade is None:
            return 0.0
        text = self.tag_ids.decode(tree.response_ids(node.id))
        try:
            value = grade(text)
            if inspect.isawaitable(value):
                value = await value
            return float(value)
        except Exception as exc:  # noqa: BLE001 - a grader failure must not kill the tree ...
            if getattr(exc, "fatal", False):
                raise  # ... unless it says the run must stop (e.g. the PRM failed too often in a row)
            node.error = f"grade: {_error_text(exc)}"
            cause = getattr(exc, "cause", None)
            self._fault(node, cause if isinstance(cause, str) else "grade_error")
            logger.warning("grading leaf %d failed (%s; the leaf is dropped, not scored): %s", node.id, node.fault,
                           node.error)
            return None
