"""API keys for the scoring endpoints: ``Authorization: Bearer <key>``, or a 401.

Keys come from ``KEEL_API_KEYS`` (comma-separated) and/or ``KEEL_API_KEYS_FILE`` (one key per line,
``#`` comments: a mounted Kubernetes secret). Several keys at once is how a key is rotated: add the
new one, move the callers, remove the old one. With keys configured, every path needs one except
the probes and the API description (``OPEN_PATHS``): default deny, so an endpoint added later is
protected without anyone remembering to. Without keys the service is open, which only the local
environment allows; in ``staging`` and ``prod`` (``KEEL_ENV``) the service refuses to start.

Keys are held as SHA-256 digests and compared in constant time against every configured key; a
presented key is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from pathlib import Path

logger = logging.getLogger("keel.serving.auth")

OPEN_PATHS = frozenset({"/livez", "/healthz", "/readyz", "/metrics", "/docs.json", "/"})
OPEN_PREFIXES = ("/static_content/",)  # the API page's assets
MIN_KEY_LENGTH = 16
ENVIRONMENTS_THAT_NEED_KEYS = ("staging", "prod")


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def api_keys_from_env(environ=os.environ) -> list[str]:
    """The configured keys. Raises when one is too short or when staging/prod have none."""
    keys = [key.strip() for key in environ.get("KEEL_API_KEYS", "").split(",") if key.strip()]
    if path := environ.get("KEEL_API_KEYS_FILE"):
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as error:
            raise RuntimeError(f"KEEL_API_KEYS_FILE={path}: cannot read it ({error.strerror})") from error
        keys += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if short := [i for i, key in enumerate(keys, 1) if len(key) < MIN_KEY_LENGTH]:
        raise RuntimeError(
            f"API keys number {short} are shorter than {MIN_KEY_LENGTH} characters: too easy to guess"
        )
    environment = environ.get("KEEL_ENV", "local")
    if not keys and environment in ENVIRONMENTS_THAT_NEED_KEYS:
        raise RuntimeError(
            f"KEEL_ENV={environment}: the scoring service does not start without API keys "
            "(set KEEL_API_KEYS or KEEL_API_KEYS_FILE)"
        )
    return keys


class ApiKeyAuth:
    """ASGI middleware (``FraudScorer.add_asgi_middleware``); reads the keys when the worker starts."""

    def __init__(self, app, keys: list[str] | None = None):
        self.app = app
        self.digests = [_digest(key) for key in (api_keys_from_env() if keys is None else keys)]
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
