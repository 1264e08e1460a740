"""The online feature store cannot answer now: every scoring service's 503, naming why, with
``Retry-After`` (the circuit breaker's pause)."""

from __future__ import annotations

import logging
import math

from starlette.responses import JSONResponse

from keel_core.circuit_breaker import CircuitOpen
from keel_core.online_store import NoSnapshot, StoreUnavailable

logger = logging.getLogger("keel.serving")


class Unavailable(Exception):
    """The online feature store cannot answer now: a 503 naming why, with ``Retry-After``."""

    REASONS = {
        StoreUnavailable: "the online feature store is not reachable",
        CircuitOpen: "the online feature store failed repeatedly; calls to it are paused",
        NoSnapshot: "no online features are published",
    }

    def __init__(self, cause: Exception):
        super().__init__(self.REASONS[type(cause)])
        self.cause = cause

    def response(self, route: str, retry_seconds: float) -> JSONResponse:
        """503 naming the reason, and when to try again: one log line, with the store's own message
        for the operator (no request values in it)."""
        logger.warning("503 POST %s: %s (%s)", route, self, self.cause)
        headers = {"Retry-After": str(math.ceil(retry_seconds))}
        return JSONResponse({"error": str(self)}, status_code=503, headers=headers)
