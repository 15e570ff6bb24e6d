"""Run many tree searches concurrently.

Each tree keeps at most one backend request in flight (its calls depend on each other), so
bounding the number of trees in flight bounds the requests in flight. The backend batches
whatever is in flight (the hf micro-batcher; a vLLM server's continuous batching).
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

from rftt_plugin.search.mcts import FunctionalMCTS, SearchResult

GradeWithGold = Callable[[str, Any], "float | Awaitable[float]"]


@dataclass
class SearchRequest:
    question: str
    gold: Any = None
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _as_request(item: SearchRequest | str | dict) -> SearchRequest:
    if isinstance(item, SearchRequest):
        return item
    if isinstance(item, str):
        return SearchRequest(item)
    return SearchRequest(item["question"], item.get("gold"), item.get("id"), dict(item.get("meta") or {}))


async def search_many(requests: Sequence[SearchRequest | str | dict], mcts: FunctionalMCTS,
                      grade: GradeWithGold | None = None, max_concurrent_trees: int = 64,
                      on_result: Callable[[int, SearchResult], Any] | None = None) -> list[SearchResult]:
    """Search every request; results come back in input order.

    ``grade(response_text, gold)`` (sync or async) grades ``<output>`` leaves; without it
    ``mcts.grade`` is used as is. ``on_result(index, result)`` is called as each tree finishes
    (progress bars, writing trees to disk). An unexpected exception in one tree cancels the
    others and propagates (failures *inside* a tree never raise; see FunctionalMCTS).
    """
    if max_concurrent_trees < 1:
        raise ValueError("max_concurrent_trees must be >= 1")
    items = [_as_request(r) for r in requests]
    gate = asyncio.Semaphore(max_concurrent_trees)

    async def one(index: int, req: SearchRequest) -> SearchResult:
        async with gate:
            bound = None
            if grade is not None:
                def bound(text: str, _gold=req.gold):
                    return grade(text, _gold)
            meta = {**req.meta, **({"id": req.id} if req.id is not None else {})}
            result = await mcts.search(req.question, grade=bound, gold=req.gold, meta=meta)
        if on_result is not None:
            done = on_result(index, result)
            if inspect.isawaitable(done):
                await done
        return result

    tasks = [asyncio.ensure_future(one(i, r)) for i, r in enumerate(items)]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
