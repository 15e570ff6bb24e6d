"""An asyncio micro-batcher: concurrent requests in, one batched call at a time out.

Callers ``await submit(kind, item)``. A worker task waits for the first request, lets the
event loop run for ``wait_s`` so that requests scheduled at about the same time (many search
trees) join it, then takes up to ``max_batch_size`` pending requests of the *oldest request's*
kind (requests of another kind wait for the next round, in order) and runs
``handlers[kind](items) -> results`` in a single worker thread, so the model is used by one
batch at a time and the event loop stays free meanwhile. A coroutine-function handler is awaited
on the event loop instead (hfcpu's server takes its weights lock there before it moves the
forward to a thread). A handler may put an ``Exception`` in its result list to fail just that
request; if it raises, the whole batch fails with it.

One batcher serves the ``hf`` backend (kinds ``score``/``generate``/``call``) and the hfcpu rollout
server (kind ``generate``).

The worker belongs to the running event loop; a batcher used from a new loop (a new
``asyncio.run``) starts a new worker there.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

Handler = Callable[[list[Any]], Any]  # -> list of results, or an awaitable of it


class MicroBatcher:
    def __init__(self, handlers: dict[str, Handler], max_batch_size: int = 16, wait_s: float = 0.002,
                 thread_name: str = "rftt-batcher"):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.handlers = handlers
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._pending: deque[tuple[str, Any, asyncio.Future]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self.batches: list[tuple[str, int]] = []  # (kind, size) of every batch run, for tests/benchmarks

    @property
    def batch_sizes(self) -> list[int]:
        return [size for _, size in self.batches]

    async def submit(self, kind: str, item: Any) -> Any:
        if kind not in self.handlers:
            raise KeyError(f"no handler for {kind!r}")
        loop = asyncio.get_running_loop()
        self._bind(loop)
        fut = loop.create_future()
        self._pending.append((kind, item, fut))
        self._wakeup.set()  # type: ignore[union-attr]
        return await fut

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop and self._worker is not None and not self._worker.done():
            return
        self._loop = loop
        self._pending = deque(p for p in self._pending if p[2].get_loop() is loop)
        self._wakeup = asyncio.Event()
        self._worker = loop.create_task(self._run(), name="rftt-micro-batcher")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            if len(self._pending) < self.max_batch_size:
                await asyncio.sleep(self.wait_s)  # the gather window
            batch = self._take()
            if not self._pending:
                self._wakeup.clear()
            if not batch:
                continue
            kind = batch[0][0]
            self.batches.append((kind, len(batch)))
            try:
                handler, items = self.handlers[kind], [b[1] for b in batch]
                if inspect.iscoroutinefunction(handler):
                    results = await handler(items)
                else:
                    results = await loop.run_in_executor(self._executor, handler, items)
                if len(results) != len(batch):
                    raise RuntimeError(f"handler {kind!r} returned {len(results)} results for {len(batch)} items")
            except Exception as exc:  # noqa: BLE001 - delivered to every waiting caller
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, _, fut), res in zip(batch, results):
                if fut.done():  # the caller was cancelled meanwhile
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    def _take(self) -> list[tuple[str, Any, asyncio.Future]]:
        # Drop requests whose callers gave up before they ran.
        self._pending = deque(p for p in self._pending if not p[2].done())
        if not self._pending:
            return []
        kind = self._pending[0][0]
        batch, rest = [], deque()
        for p in self._pending:
            if p[0] == kind and len(batch) < self.max_batch_size:
                batch.append(p)
            else:
                rest.append(p)
        self._pending = rest
        return batch

    async def aclose(self) -> None:
        worker = self._worker
        # A worker of another (finished) loop is already dead; only ours needs cancelling.
        if worker is not None and not worker.done() and self._loop is asyncio.get_running_loop():
            worker.cancel()
            try:
                await worker
            except asyncio.CancelledError:
                pass
        self._worker = None
        self._executor.shutdown(wait=False, cancel_futures=True)
