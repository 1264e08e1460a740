import contextlib
import threading

import pytest

from keel_core.circuit_breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitOpen

WAIT_SECONDS = 120  # a bound on waits for events between threads, never reached unless broken


class Clock:
    """The breaker's clock, moved by the test: no test waits for a pause to pass."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Dependency:
    def __init__(self):
        self.calls = 0
        self.down = False

    def __call__(self, value=1):
        self.calls += 1
        if self.down:
            raise ConnectionError("connection refused")
        return value


def breaker(clock):
    return CircuitBreaker("redis", failures_to_open=3, reset_seconds=5, clock=clock)


def test_it_opens_after_consecutive_failures_and_then_fails_without_calling():
    clock, redis = Clock(), Dependency()
    guarded = breaker(clock)
    redis.down = True
    for _ in range(3):
        with pytest.raises(ConnectionError, match="refused"):
            guarded.call(redis)
    assert guarded.state == OPEN and redis.calls == 3

    with pytest.raises(
        CircuitOpen, match=r"redis is failing \(3 failures in a row, last: connection refused\)"
    ):
        guarded.call(redis)
    assert redis.calls == 3  # not called


def test_a_success_between_failures_resets_the_count():
    clock, redis = Clock(), Dependency()
    guarded = breaker(clock)
    for down in (True, True, False, True, True):
        redis.down = down
        with contextlib.suppress(ConnectionError):
            guarded.call(redis)
    assert guarded.state == CLOSED


def test_after_the_pause_one_trial_call_closes_or_reopens_it():
    clock, redis = Clock(), Dependency()
    guarded = breaker(clock)
    redis.down = True
    for _ in range(3):
        with pytest.raises(ConnectionError):
            guarded.call(redis)

    clock.now = 5.0
    assert guarded.state == HALF_OPEN
    with pytest.raises(ConnectionError):  # the trial fails: open for another pause
        guarded.call(redis)
    assert guarded.state == OPEN and redis.calls == 4
    clock.now = 9.9
    with pytest.raises(CircuitOpen, match="next try in 0.1 s"):
        guarded.call(redis)

    clock.now = 10.0
    redis.down = False
    assert guarded.call(redis, 7) == 7
    assert guarded.state == CLOSED


def test_only_one_trial_is_out_at_a_time():
    clock, redis = Clock(), Dependency()
    guarded = breaker(clock)
    redis.down = True
    for _ in range(3):
        with pytest.raises(ConnectionError):
            guarded.call(redis)
    clock.now = 5.0
    inside, release = threading.Event(), threading.Event()

    def slow_trial():
        inside.set()
        if not release.wait(WAIT_SECONDS):
            raise TimeoutError("the test never released the trial")
        return "ok"

    trial = threading.Thread(target=guarded.call, args=(slow_trial,))
    trial.start()
    try:
        assert inside.wait(WAIT_SECONDS), "the trial call never started"
        with pytest.raises(CircuitOpen, match="a trial call is under way"):
            guarded.call(redis)
    finally:
        release.set()
        trial.join()
    assert guarded.state == CLOSED and redis.calls == 3  # the trial was the only call let through


def test_an_answer_that_is_an_error_is_not_a_failure():
    clock = Clock()
    guarded = breaker(clock)

    def no_snapshot():
        raise LookupError("nothing published")

    for _ in range(5):
        with pytest.raises(LookupError):
            guarded.call(no_snapshot)
    assert guarded.state == CLOSED
