"""The micro-batcher. The tests hold the scoring function inside a call (``gate``) to decide which
requests arrive during it: every step waits for an event (the call entered, the new requests queued),
never for a length of time, so the batches are the same on a busy machine."""

import asyncio
import threading

import pytest

from serving.batching import MicroBatcher

WAIT_SECONDS = 120  # a bound on waits for events, never reached unless something is broken


class Recorder:
    """A scoring function that records the calls it got; ``gate`` holds a call until it is set, and
    ``entered`` says a call has started (on the batcher's thread)."""

    def __init__(self):
        self.calls: list[list[list[int]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, requests):
        self.entered.set()
        if not self.gate.wait(WAIT_SECONDS):
            raise TimeoutError("the test never released the call")
        self.calls.append(requests)
        if any(-1 in request for request in requests):
            raise ValueError("row -1 is invalid")
        return [[row * 10 for row in request] for request in requests]


def batcher(function, max_rows=100):
    return MicroBatcher(function, rows=len, max_rows=max_rows)


async def blocked_in_a_call(function: Recorder) -> None:
    """Until the batcher's thread is inside a call of ``function`` (held there by its gate)."""
    assert await asyncio.to_thread(function.entered.wait, WAIT_SECONDS), "no call started"


async def queued() -> None:
    """Until the tasks created so far have run up to their first wait: each has handed its request
    to the batcher. One pass of the event loop, which runs ready tasks in the order they were made."""
    await asyncio.sleep(0)


def test_one_request_alone_gets_a_call_of_its_own():
    function = Recorder()

    async def main():
        return await batcher(function)([1, 2])

    assert asyncio.run(main()) == [10, 20]
    assert function.calls == [[[1, 2]]]


def test_requests_that_arrive_during_a_call_share_the_next_one_and_get_their_own_results():
    function = Recorder()

    async def main():
        score = batcher(function)
        function.gate.clear()
        first = asyncio.create_task(score([0]))
        await blocked_in_a_call(function)
        rest = [asyncio.create_task(score([i, i + 100])) for i in range(1, 6)]
        await queued()
        function.gate.set()
        return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(main())
    assert first == [0]
    assert rest == [[i * 10, (i + 100) * 10] for i in range(1, 6)]
    assert [len(call) for call in function.calls] == [1, 5]


def test_a_call_never_exceeds_max_rows_but_a_big_request_goes_alone():
    function = Recorder()

    async def main():
        score = batcher(function, max_rows=4)
        function.gate.clear()
        first = asyncio.create_task(score([0]))
        await blocked_in_a_call(function)
        rest = [
            asyncio.create_task(score(request)) for request in ([1, 2], [3, 4], [5, 6, 7, 8, 9, 10], [11])
        ]
        await queued()
        function.gate.set()
        await asyncio.gather(first, *rest)

    asyncio.run(main())
    assert [sum(map(len, call)) for call in function.calls] == [1, 4, 6, 1]


def test_a_failing_call_fails_its_requests_only():
    function = Recorder()

    async def main():
        score = batcher(function)
        function.gate.clear()
        blocker = asyncio.create_task(score([0]))
        await blocked_in_a_call(function)
        bad, good = asyncio.create_task(score([-1])), asyncio.create_task(score([2]))
        await queued()
        function.gate.set()
        await blocker
        with pytest.raises(ValueError, match="row -1 is invalid"):
            await bad
        with pytest.raises(ValueError):  # it shared the failed call
            await good
        return await score([3])  # the batcher keeps working

    assert asyncio.run(main()) == [30]


def test_a_request_cancelled_while_waiting_is_never_scored():
    function = Recorder()

    async def main():
        score = batcher(function)
        function.gate.clear()
        blocker = asyncio.create_task(score([0]))
        await blocked_in_a_call(function)
        gone = asyncio.create_task(score([7]))
        await queued()
        gone.cancel()
        function.gate.set()
        await blocker
        await score([8])

    asyncio.run(main())
    assert [row for call in function.calls for request in call for row in request] == [0, 8]
