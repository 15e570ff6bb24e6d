"""One question -> one record, in chain mode or tree mode. Async; knows nothing about files
except the tree path it is handed.

Chain mode (the paper's protocol, rftt-method.md 5.1): the question alone as the single user
turn of the model's chat template (no system prompt, no format hint), decoded greedily
(temperature 0) up to ``max_tokens``; the response is graded like an RL response (answer = the
last ``\\boxed{}`` of the last ``<output>`` block, else of the whole text).

Tree mode: one functional MCTS per question with ``max(rollouts)`` iterations; every leaf is
graded against the gold answer *after* the search, for the records only. What the search itself
backs up is ``search_reward``:

* ``answered`` (default, gold-free): 1 for an ``<output>`` leaf that holds a boxed answer, else 0;
* ``none``: 0 for every leaf (the search follows the policy's tag probabilities and UCT's
  exploration term only);
* ``prm``: the path score of a process reward model (``--prm-url``, a Math-Shepherd-style HTTP
  scorer; ``--prm-aggregate``, default ``min``) for an ``<output>`` leaf that holds a boxed answer,
  else 0. Gold-free, but a verifier: report it as "with a PRM", beside the rewards above;
* ``oracle``: 1 when the leaf's answer equals the gold answer. This leaks the gold answer into
  the search (and into ``--selection value``): an upper bound for analysis, never a result.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable

from rftt_plugin.backends.base import SamplingParams
from rftt_plugin.data.benchmarks import BenchmarkItem
from rftt_plugin.evaluation.selection import LeafOutcome, assign_answer_classes, score_budgets

SEARCH_REWARDS = ("answered", "none", "prm", "oracle")


class QuestionFailed(RuntimeError):
    """The backend could not answer this question (no record is written; a rerun retries it)."""


def _base_record(item: BenchmarkItem, mode: str) -> dict[str, Any]:
    return {"id": item.id, "benchmark": item.benchmark, "mode": mode, "question": item.question,
            "question_sha": item.question_sha, "gold": item.gold, "meta": dict(item.metadata)}


# ----------------------------------------------------------------------------------------------
# chain
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChainSettings:
    max_tokens: int = 4096
    temperature: float = 0.0    # 0 = greedy (the paper's pass@1)
    seed: int = 0


async def run_chain(item: BenchmarkItem, backend: Any, prompt_ids: Callable[[str], list[int]],
                    decode: Callable[[list[int]], str], settings: ChainSettings) -> dict[str, Any]:
    """Greedy-decode one answer and grade it."""
    from rftt_plugin.reward import score_response_async

    t0 = time.perf_counter()
    ids = prompt_ids(item.question)
    params = SamplingParams(max_tokens=settings.max_tokens, temperature=settings.temperature,
                            top_p=1.0, seed=settings.seed)
    gen = await backend.generate(ids, params)
    if gen.finish_reason == "error":
        raise QuestionFailed(f"{item.id}: generation failed: {gen.stop_reason}")
    text = decode(gen.token_ids)
    result = await score_response_async(text, item.gold, data_source=item.benchmark)
    record = _base_record(item, "chain")
    record.update(response=text, pred=result.pred, acc=result.acc, has_answer=result.has_answer,
                  format_ok=result.format_ok, timed_out=result.timed_out, finish_reason=gen.finish_reason,
                  prompt_tokens=len(ids), tokens=len(gen.token_ids), seconds=time.perf_counter() - t0)
    return record


# ----------------------------------------------------------------------------------------------
# self-consistency
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SampleSettings:
    """Self-consistency: ``samples`` chains sampled independently, majority vote over answers."""

    samples: int = 16
    max_tokens: int = 4096
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int = 0


def sample_seed(seed: int, question: str, index: int) -> int:
    """Seed of chain ``index`` of a question: fixed per (seed, question, index), so the first k
    chains of a K-chain run are exactly a k-chain run (one run serves every budget)."""
    return (seed * 1_000_003 + zlib.crc32(question.encode("utf-8")) * 7_919 + index) % (2**31 - 1)


async def run_self_consistency(item: BenchmarkItem, backend: Any, prompt_ids: Callable[[str], list[int]],
                               decode: Callable[[list[int]], str], settings: SampleSettings,
                               budgets: list[int], rule: str = "majority", prm: Any = None,
                               prm_aggregate: str = "min") -> dict[str, Any]:
    """Sample ``settings.samples`` chains (all in flight at once, so a batching backend batches
    them), grade each, and score every budget k on the first k chains like tree leaves: each chain
    is one vote, ``new_tokens`` its sampled ids, no path shared with another. With ``prm`` each
    chain's reward is the PRM's path score (as tree mode's ``--search-reward prm``), which the
    ``value`` rule weighs the votes by."""
    from rftt_plugin.reward import score_response_async

    t0 = time.perf_counter()
    ids = prompt_ids(item.question)

    async def one(index: int):
        params = SamplingParams(max_tokens=settings.max_tokens, temperature=settings.temperature,
                                top_p=settings.top_p, seed=sample_seed(settings.seed, item.question, index))
        return await backend.generate(list(ids), params)

    gens = await asyncio.gather(*(one(i) for i in range(settings.samples)))
    bad = [g for g in gens if g.finish_reason == "error"]
    if bad:
        raise QuestionFailed(f"{item.id}: {len(bad)} of {len(gens)} samples failed: {bad[0].stop_reason}")
    texts = [decode(g.token_ids) for g in gens]
    graded = [await score_response_async(t, item.gold, data_source=item.benchmark) for t in texts]
    preds = [r.pred if r.has_answer else None for r in graded]
    classes = await asyncio.to_thread(assign_answer_classes, preds, _same_answer)
    rewards = [0.0] * len(texts)
    if prm is not None:
        score = _prm_grade(item.question, prm, prm_aggregate)
        async def reward_of(text: str, pred: str | None) -> float:
            return await score(text) if pred is not None else 0.0

        rewards = list(await asyncio.gather(*(reward_of(t, p) for t, p in zip(texts, preds))))
    outcomes = [LeafOutcome(pred=pred, acc=r.acc, valid=pred is not None, format_ok=r.format_ok, reward=reward,
                            node_ids=(), new_tokens=len(g.token_ids), answer_class=cls,
                            terminal_reason=g.finish_reason)
                for r, g, pred, cls, reward in zip(graded, gens, preds, classes, rewards)]
    record = _base_record(item, "sc")
    record.update(
        leaves=[o.to_dict() for o in outcomes], responses=texts,
        budgets={str(k): o.to_dict() for k, o in score_budgets(outcomes, budgets, rule).items()},
        selection=rule, prompt_tokens=len(ids), tokens=sum(o.new_tokens for o in outcomes),
        seconds=time.perf_counter() - t0)
    return record


# ----------------------------------------------------------------------------------------------
# tree
# ----------------------------------------------------------------------------------------------

def search_grade_fn(search_reward: str, gold: str, question: str = "", prm: Any = None,
                    prm_aggregate: str = "min") -> Callable | None:
    """The reward the search backs up (see the module docstring); ``prm``: a
    :class:`~rftt_plugin.reward.prm.StepScorer` for ``search_reward="prm"``."""
    if search_reward == "none":
        return None
    if search_reward == "prm":
        if prm is None:
            raise ValueError("search reward 'prm' needs a PRM (--prm-url)")
        return _prm_grade(question, prm, prm_aggregate)
    if search_reward == "answered":
        from rftt_plugin.reward.extract import extract_answer

        return lambda text: 1.0 if extract_answer(text).has_answer else 0.0
    if search_reward == "oracle":
        from rftt_plugin.reward import grade_async

        return lambda text: grade_async(text, gold)
    raise ValueError(f"unknown search reward {search_reward!r}; choose one of {', '.join(SEARCH_REWARDS)}")


def _prm_grade(question: str, prm: Any, aggregate: str) -> Callable:
    """The PRM's path score of an answering leaf (steps parsed from its text), else 0."""
    from rftt_plugin.reward.extract import extract_answer
    from rftt_plugin.reward.prm import path_score
    from rftt_plugin.tokens import TagFormatError, parse

    async def grade(text: str) -> float:
        if not extract_answer(text).has_answer:
            return 0.0
        try:
            steps = [step.text for step in parse(text) if step.text.strip()]
        except TagFormatError:
            return 0.0  # a malformed path is not a solution the PRM could approve
        return path_score(await prm.score_steps_async(question, steps), aggregate)

    return grade


def _leaf_text(tag_ids: Any, leaf: Any, eos_id: int) -> str:
    ids = list(leaf.response_ids)
    if leaf.terminal_reason == "output" and ids and ids[-1] == eos_id:
        ids = ids[:-1]  # the EOS the search appended is not part of the answer text
    return tag_ids.decode(ids)


def _path_logprob(tree: Any, node_ids: Any) -> float:
    """Sum of the tag log-probs along a path (a tag scored -inf counts as -1e9: JSON has no inf)."""
    return sum(max(float(tree[n].prior_logprob), -1e9) for n in node_ids)


def _same_answer(a: str, b: str) -> bool:
    from rftt_plugin.reward import check_equivalence

    return check_equivalence(a, b).equivalent


async def run_tree(item: BenchmarkItem, mcts: Any, budgets: list[int], rule: str, search_reward: str,
                   tree_path: Any = None, tree_file: str | None = None, *,
                   prompt: Callable[[str], list[int]], prm: Any = None, prm_aggregate: str = "min") -> dict[str, Any]:
    """One search with ``mcts.config.iterations`` (= max budget) iterations, every leaf graded;
    ``prompt(question)`` builds the prompt ids."""
    from rftt_plugin.reward import score_response_async

    t0 = time.perf_counter()
    grade = search_grade_fn(search_reward, item.gold, item.question, prm, prm_aggregate)
    result = await mcts.search(item.question, prompt(item.question), grade=grade,
                               gold=item.gold, meta={"id": item.id, "benchmark": item.benchmark, "search_reward": search_reward})
    tree = result.tree
    if not result.leaves:
        raise QuestionFailed(f"{item.id}: the search produced no leaf: {tree.meta.get('error', 'unknown error')}")
    graded: dict[int, Any] = {}  # leaf node id -> RewardResult (a re-emitted leaf is graded once)
    texts: dict[int, str] = {}
    for leaf in result.leaves:
        if leaf.leaf_id not in graded:
            texts[leaf.leaf_id] = _leaf_text(mcts.tag_ids, leaf, tree.eos_id)
            graded[leaf.leaf_id] = await score_response_async(texts[leaf.leaf_id], item.gold,
                                                              data_source=item.benchmark)
    # Answer classes over valid leaves; the symbolic comparisons block, so run them off the loop.
    preds = [graded[leaf.leaf_id].pred if (leaf.terminal_reason == "output" and graded[leaf.leaf_id].has_answer)
             else None for leaf in result.leaves]
    classes = await asyncio.to_thread(assign_answer_classes, preds, _same_answer)
    seen: set[int] = set()
    outcomes: list[LeafOutcome] = []
    for leaf, pred, cls in zip(result.leaves, preds, classes):
        fresh = [n for n in leaf.node_ids if n not in seen]
        seen.update(fresh)
        r = graded[leaf.leaf_id]
        outcomes.append(LeafOutcome(
            pred=r.pred if r.has_answer else None, acc=r.acc, valid=pred is not None, format_ok=r.format_ok,
            reward=float(leaf.reward), node_ids=tuple(leaf.node_ids),
            new_tokens=sum(tree[n].n_sampled for n in fresh), answer_class=cls,
            terminal_reason=leaf.terminal_reason, path_logprob=_path_logprob(tree, leaf.node_ids)))
    if tree_path is not None:
        tree.save(tree_path)  # before the record: a record always has its tree
    stats = result.stats
    record = _base_record(item, "tree")
    record.update(
        leaves=[o.to_dict() for o in outcomes],
        budgets={str(k): o.to_dict() for k, o in score_budgets(outcomes, budgets, rule).items()},
        selection=rule, tree_file=tree_file, iterations=stats.iterations, unique_leaves=stats.unique_leaves,
        terminal_reasons=stats.terminal_reasons, tokens=stats.generated_tokens, llm_calls=stats.llm_calls,
        search_s=result.wall_s, seconds=time.perf_counter() - t0)
    return record
