"""API keys for the scoring endpoints: ``Authorization: Bearer <key>``, or a 401.

The keys are settings (``serving/settings.py``: ``KEEL_API_KEYS`` and ``KEEL_API_KEYS_FILE``, a
mounted Kubernetes secret). Several keys at once is how a key is rotated: add the new one, move the
callers, remove the old one. With keys configured, every path needs one except the probes and the
API description (``OPEN_PATHS``): default deny, so an endpoint added later is protected without
anyone remembering to. Without keys the service is open, which only the local environment allows;
in ``staging`` and ``prod`` (``KEEL_ENV``) the service refuses to start.

Keys are held as SHA-256 digests and compared in constant time against every configured key; a
presented key is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Sequence

from serving.settings import settings

logger = logging.getLogger("keel.serving.auth")

OPEN_PATHS = frozenset({"/livez", "/healthz", "/readyz", "/metrics", "/docs.json", "/"})
OPEN_PREFIXES = ("/static_content/",)  # the API page's assets


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


class ApiKeyAuth:
    """ASGI middleware (a BentoML service's ``add_asgi_middleware``); the keys are the process's settings."""

    def __init__(self, app, keys: Sequence[str] | None = None):
        self.app = app
        self.digests = [_digest(key) for key in (settings().api_keys if keys is None else keys)]
        if not self.digests:
            logger.warning("no API keys configured: the scoring endpoints are open (local environment)")

    async def __call__(self, scope, receive, send):
        if (
            scope["type"] != "http"
            or not self.digests
            or scope["path"] in OPEN_PATHS
            or scope["path"].startswith(OPEN_PREFIXES)
        ):
            return await self.app(scope, receive, send)
        problem = self._problem(scope)
        if problem is None:
            return await self.app(scope, receive, send)
        client = scope.get("client") or ("?", 0)
        logger.warning("401 %s %s from %s: %s", scope["method"], scope["path"], client[0], problem)
        body = json.dumps({"error": problem}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="keel", error="invalid_token"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _problem(self, scope) -> str | None:
        """None when the request carries a configured key, else what is wrong (never the key)."""
        headers = [value for name, value in scope["headers"] if name == b"authorization"]
        if not headers:
            return "missing Authorization header: send 'Authorization: Bearer <API key>'"
        scheme, _, token = headers[0].decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "the Authorization header is not 'Bearer <API key>'"
        presented = _digest(token.strip())
        matched = False
        for digest in self.digests:  # no early exit: the time taken does not say which key matched
            matched |= hmac.compare_digest(digest, presented)
        return None if matched else "invalid API key"
