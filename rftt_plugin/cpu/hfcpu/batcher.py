"""Collect concurrent requests for a few milliseconds and serve them as one batch.

verl's agent loops send one ``generate`` call per sample, concurrently (``rollout.n`` x batch
size). Serving them one by one would make a CPU rollout needlessly slow, so requests are queued
and a single worker task drains the queue: it waits up to ``max_wait_s`` after the first request
(or until ``max_batch`` are waiting), then runs the whole batch in a thread, so the server's
event loop stays free for control calls (sleep, weight loading) while the forward runs.

The batch function must return one result per request, in order. An exception fails every
request of that batch (each request was validated before it was queued).
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Generic, Sequence, TypeVar

Req = TypeVar("Req")
Res = TypeVar("Res")


class MicroBatcher(Generic[Req, Res]):
    def __init__(
        self,
        run_batch: Callable[[Sequence[Req]], Awaitable[Sequence[Res]]],
        max_wait_s: float = 0.005,
        max_batch: int = 64,
    ):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._run_batch = run_batch
        self.max_wait_s = max_wait_s
        self.max_batch = max_batch
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self.batch_sizes: list[int] = []  # observability (tests, logs)

    async def submit(self, request: Req) -> Res:
        loop = asyncio.get_running_loop()
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        future: asyncio.Future = loop.create_future()
        self._queue.put_nowait((request, future))
        return await future

    async def _collect(self) -> list[tuple[Any, asyncio.Future]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        while len(batch) < self.max_batch and not self._queue.empty():  # late arrivals, no waiting
            batch.append(self._queue.get_nowait())
        return batch

    async def _drain(self) -> None:
        while True:
            batch = await self._collect()
            live = [(req, fut) for req, fut in batch if not fut.cancelled()]
            if not live:
                continue
            self.batch_sizes.append(len(live))
            try:
                results = await self._run_batch([req for req, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(live)} requests")
            except Exception as exc:  # noqa: BLE001 - forwarded to every waiting caller
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(live, results):
                if not fut.done():
                    fut.set_result(result)
