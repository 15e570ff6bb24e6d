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
* ``oracle``: 1 when the leaf's answer equals the gold answer. This leaks the gold answer into
  the search (and into ``--selection value``): an upper bound for analysis, never a result.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Callable

from rftt_plugin.backends.base import SamplingParams
from rftt_plugin.data.benchmarks import BenchmarkItem
from rftt_plugin.evaluation.selection import LeafOutcome, assign_answer_classes, score_budgets

SEARCH_REWARDS = ("answered", "none", "oracle")


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
# tree
# ----------------------------------------------------------------------------------------------

def search_grade_fn(search_reward: str, gold: str) -> Callable | None:
    """The reward the search backs up (see the module docstring)."""
    if search_reward == "none":
        return None
    if search_reward == "answered":
        from rftt_plugin.reward.extract import extract_answer

        return lambda text: 1.0 if extract_answer(text).has_answer else 0.0
    if search_reward == "oracle":
        from rftt_plugin.reward import grade_async

        return lambda text: grade_async(text, gold)
    raise ValueError(f"unknown search reward {search_reward!r}; choose one of {', '.join(SEARCH_REWARDS)}")


def _leaf_text(tag_ids: Any, leaf: Any, eos_id: int) -> str:
    ids = list(leaf.response_ids)
    if leaf.terminal_reason == "output" and ids and ids[-1] == eos_id:
        ids = ids[:-1]  # the EOS the search appended is not part of the answer text
    return tag_ids.decode(ids)


def _same_answer(a: str, b: str) -> bool:
    from rftt_plugin.reward import check_equivalence

    return check_equivalence(a, b).equivalent


async def run_tree(item: BenchmarkItem, mcts: Any, budgets: list[int], rule: str, search_reward: str,
                   tree_path: Any = None, tree_file: str | None = None, *,
                   prompt: Callable[[str], list[int]]) -> dict[str, Any]:
    """One search with ``mcts.config.iterations`` (= max budget) iterations, every leaf graded;
    ``prompt(question)`` builds the prompt ids."""
    from rftt_plugin.reward import score_response_async

    t0 = time.perf_counter()
    result = await mcts.search(item.question, prompt(item.question), grade=search_grade_fn(search_reward, item.gold),
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
            terminal_reason=leaf.terminal_reason))
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
