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


PromptFn = Callable[[str], Sequence[int]]


@dataclass
class SearchRequest:
    """One question to search; ``prompt_ids`` (its prompt as the model sees it) may be left to
    the ``prompt`` builder the caller passes to :func:`search_many`."""

    question: str
    gold: Any = None
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    prompt_ids: list[int] | None = None


def _as_request(item: SearchRequest | str | dict) -> SearchRequest:
    if isinstance(item, SearchRequest):
        return item
    if isinstance(item, str):
        return SearchRequest(item)
    return SearchRequest(item["question"], item.get("gold"), item.get("id"), dict(item.get("meta") or {}),
                         item.get("prompt_ids"))


def _prompt_of(index: int, req: SearchRequest, prompt: PromptFn | None) -> list[int]:
    if req.prompt_ids is not None:
        return list(req.prompt_ids)
    if prompt is None:
        raise ValueError(f"request {index} ({req.id or req.question[:40]!r}) has no prompt_ids and "
                         "search_many got no prompt builder")
    return list(prompt(req.question))


async def search_many(requests: Sequence[SearchRequest | str | dict], mcts: FunctionalMCTS,
                      grade: GradeWithGold | None = None, max_concurrent_trees: int = 64,
                      on_result: Callable[[int, SearchResult], Any] | None = None,
                      prompt: PromptFn | None = None) -> list[SearchResult]:
    """Search every request; results come back in input order.

    ``prompt(question)`` builds the prompt ids of a request that has none (e.g.
    ``lambda q: chat_prompt_ids(tokenizer, q)``; the fake backend's ``vocab.prompt_ids``).
    ``grade(response_text, gold)`` (sync or async) grades ``<output>`` leaves; without it
    ``mcts.grade`` is used as is. ``on_result(index, result)`` is called as each tree finishes
    (progress bars, writing trees to disk). An unexpected exception in one tree cancels the
    others and propagates (failures *inside* a tree never raise; see FunctionalMCTS).
    """
    if max_concurrent_trees < 1:
        raise ValueError("max_concurrent_trees must be >= 1")
    items = [_as_request(r) for r in requests]
    prompts = [_prompt_of(i, r, prompt) for i, r in enumerate(items)]  # every request checked before any search
    gate = asyncio.Semaphore(max_concurrent_trees)

    async def one(index: int, req: SearchRequest) -> SearchResult:
        async with gate:
            bound = None
            if grade is not None:
                def bound(text: str, _gold=req.gold):
                    return grade(text, _gold)
            meta = {**req.meta, **({"id": req.id} if req.id is not None else {})}
            result = await mcts.search(req.question, prompts[index], grade=bound, gold=req.gold, meta=meta)
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
