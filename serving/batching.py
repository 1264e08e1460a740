"""Micro-batching: concurrent requests share one call of the scoring function.

A gradient-boosted model costs about the same for one row as for a hundred (per-tree overhead, not
arithmetic), so the service's throughput comes from scoring the rows of many requests in one call.
``MicroBatcher`` does that without ever waiting for company: a call starts as soon as the previous
one ends, with every request that arrived meanwhile. One client alone gets a call of its own at once
(no added latency); under load the calls grow by themselves, to at most ``max_rows`` rows.

The function runs on one dedicated thread, one call at a time, so the event loop keeps reading
requests (and answering health probes) while the model works; ``thread_initializer`` prepares that
thread (the service limits OpenMP there). An exception fails exactly the requests of that call. A
request cancelled while it waits (timeout, client gone) is never scored.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

Request = TypeVar("Request")
Result = TypeVar("Result")


class MicroBatcher(Generic[Request, Result]):
    def __init__(
        self,
        function: Callable[[list[Request]], Sequence[Result]],
        rows: Callable[[Request], int],
        max_rows: int,
        thread_initializer: Callable[[], object] | None = None,
    ):
        """``function`` takes a list of requests and returns one result per request, in order;
        ``rows`` says how many rows a request brings (a request bigger than ``max_rows`` goes alone)."""
        self.function = function
        self.rows = rows
        self.max_rows = max_rows
        self._thread = ThreadPoolExecutor(1, "micro-batcher", initializer=thread_initializer)
        self._waiting: deque[tuple[Request, asyncio.Future[Result]]] = deque()
        self._worker: asyncio.Task | None = None

    async def __call__(self, request: Request) -> Result:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="micro-batcher")
        return await future

    async def _work(self) -> None:
        while self._waiting:
            batch = self._next_batch()
            if not batch:
                continue
            requests = [request for request, _ in batch]
            try:
                results = await asyncio.get_running_loop().run_in_executor(
                    self._thread, self.function, requests
                )
                if len(results) != len(requests):
                    raise RuntimeError(f"{len(requests)} requests got {len(results)} results")
            except BaseException as error:  # every request of this call fails with the call's error
                stopped = not isinstance(error, Exception)  # cancelled: the server is stopping
                for _, future in batch:
                    if not future.done():
                        future.set_exception(RuntimeError("the batcher was stopped") if stopped else error)
                if stopped:
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    def _next_batch(self) -> list[tuple[Request, asyncio.Future[Result]]]:
        batch, rows = [], 0
        while self._waiting:
            request, future = self._waiting[0]
            if future.cancelled():
                self._waiting.popleft()
                continue
            size = self.rows(request)
            if batch and rows + size > self.max_rows:
                break
            batch.append(self._waiting.popleft())
            rows += size
        return batch
