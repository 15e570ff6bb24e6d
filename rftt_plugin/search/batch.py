"""Search many questions and write one tree file each: the library half of ``rftt search``.

:func:`search_into_dir` runs :func:`~rftt_plugin.search.many.search_many` with a progress bar and
saves ``out/trees/<index>.json`` as each tree finishes (so an interrupted run keeps what it
finished); :func:`tree_summary` and :func:`totals` are the per-tree and overall numbers of
``summary.json``. The grade function is the caller's: ``rftt_plugin.reward.score.leaf_grader``
for real answers, or none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from rftt_plugin.search.many import PromptFn, SearchRequest, search_many
from rftt_plugin.search.mcts import FunctionalMCTS


def tree_summary(index: int, result, file: str) -> dict[str, Any]:
    s = result.stats
    leaves = result.leaves
    return {
        "index": index, "id": result.tree.meta.get("id"), "file": file,
        "question": result.tree.question[:120], "gold": result.tree.gold,
        "leaves": s.leaves, "unique_leaves": s.unique_leaves, "nodes": s.nodes, "max_depth": s.max_depth,
        "first_leaf_reward": leaves[0].reward if leaves else None,
        "mean_reward": s.mean_reward, "max_reward": s.max_reward,
        "solved": bool(leaves) and s.max_reward >= 1.0,
        "generated_tokens": s.generated_tokens, "independent_tokens": s.independent_tokens,
        "token_ratio": s.token_ratio, "llm_calls": s.llm_calls, "wall_s": result.wall_s,
        "terminal_reasons": s.terminal_reasons, "error": result.tree.meta.get("error"),
    }


def totals(rows: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    n = len(rows) or 1
    gen = sum(r["generated_tokens"] for r in rows)
    ind = sum(r["independent_tokens"] for r in rows)
    return {
        "questions": len(rows),
        "first_leaf_accuracy": sum((r["first_leaf_reward"] or 0) >= 1.0 for r in rows) / n,
        "any_leaf_accuracy": sum(r["solved"] for r in rows) / n,
        "mean_reward": sum(r["mean_reward"] for r in rows) / n,
        "generated_tokens": gen, "independent_tokens": ind, "token_ratio": gen / ind if ind else 0.0,
        "llm_calls": sum(r["llm_calls"] for r in rows), "wall_s": wall_s,
        "errors": sum(1 for r in rows if r["error"]),
    }


async def search_into_dir(requests: Sequence[SearchRequest], mcts: FunctionalMCTS, out: Path, *,
                          grade: Callable | None, concurrency: int, meta: dict[str, Any] | None = None,
                          progress: bool = True, prompt: PromptFn | None = None) -> list[dict[str, Any]]:
    """Search every request (``concurrency`` trees at a time), save each tree as it finishes, and
    return the :func:`tree_summary` rows in request order. ``meta`` is added to every tree's meta;
    ``prompt`` builds the prompt ids of requests without them (see :func:`search_many`)."""
    rows: dict[int, dict[str, Any]] = {}
    (out / "trees").mkdir(parents=True, exist_ok=True)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(requests), desc="trees", unit="tree")

    def done(index: int, result) -> None:
        name = f"trees/{index:05d}.json"
        for key, value in (meta or {}).items():
            result.tree.meta.setdefault(key, value)
        result.tree.save(out / name)
        rows[index] = tree_summary(index, result, name)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(reward=f"{rows[index]['mean_reward']:.2f}", nodes=rows[index]["nodes"])

    try:
        await search_many(requests, mcts, grade=grade, max_concurrent_trees=concurrency, on_result=done,
                          prompt=prompt)
    finally:
        if bar is not None:
            bar.close()
    return [rows[i] for i in sorted(rows)]
