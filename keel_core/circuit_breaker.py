"""A circuit breaker: stop calling a dependency that keeps failing, and try it again after a pause.

The scoring service reads features from Redis on every request. When Redis is down or hangs, each
call would wait for its timeout, requests would pile up behind those waits, and the service would
drown in work it cannot finish. After ``failures_to_open`` consecutive failures the breaker *opens*:
calls fail at once with ``CircuitOpen`` for ``reset_seconds``. Then it lets one trial call through
(*half-open*): success closes it, failure opens it again for another pause.

Pure and thread-safe (the service calls the store from worker threads); the clock is injectable so
that tests need not sleep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

R = TypeVar("R")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitOpen(ConnectionError):
    """The breaker refused the call without trying: the dependency failed too often just now."""


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        failures_to_open: int = 3,
        reset_seconds: float = 5.0,
        failure_types: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError),
        clock: Callable[[], float] = time.monotonic,
    ):
        if failures_to_open < 1 or reset_seconds <= 0:
            raise ValueError("failures_to_open must be at least 1 and reset_seconds positive")
        self.name = name
        self.failures_to_open = failures_to_open
        self.reset_seconds = reset_seconds
        self.failure_types = failure_types
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._last_error = ""

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == OPEN and self._clock() >= self._opened_at + self.reset_seconds:
                return HALF_OPEN  # the next call will be the trial
            return self._state

    def call(self, function: Callable[..., R], *args, **kwargs) -> R:
        """``function(*args, **kwargs)``, unless the circuit is open. Only ``failure_types`` count as
        failures: any other exception is an answer from a working dependency and passes through."""
        with self._lock:
            if self._state != CLOSED:
                wait = self._opened_at + self.reset_seconds - self._clock()
                if self._state == HALF_OPEN or wait > 0:
                    retry = (
                        "a trial call is under way"
                        if self._state == HALF_OPEN
                        else f"next try in {wait:.1f} s"
                    )
                    raise CircuitOpen(
                        f"{self.name} is failing ({self._failures} failures in a row, last: "
                        f"{self._last_error}); not called, {retry}"
                    )
                self._state = HALF_OPEN  # this call is the trial
        try:
            result = function(*args, **kwargs)
        except self.failure_types as error:
            with self._lock:
                self._failures += 1
                self._last_error = str(error) or type(error).__name__
                if self._state == HALF_OPEN or self._failures >= self.failures_to_open:
                    self._state, self._opened_at = OPEN, self._clock()
            raise
        except BaseException:
            with self._lock:
                if self._state == HALF_OPEN:  # it answered: it works, whatever the answer was
                    self._state, self._failures = CLOSED, 0
            raise
        with self._lock:
            self._state, self._failures = CLOSED, 0
        return result
