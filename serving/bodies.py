"""Refuse a request body that cannot be read as its content type, with a 400 that says why.

BentoML 1.4 turns some unreadable bodies into a 500 (its parser raises before validation): JSON that
does not parse sent to a list input (``POST /score_batch`` with ``\\x00``), and a broken multipart
form (``POST /score_file``); the fuzz test found both. A caller's mistake must be a 4xx that names
it, so this middleware reads the body first: JSON must parse, a multipart form must parse, and a
body sent as plain text or a URL-encoded form is a 415 (the API speaks JSON and multipart). The
body is then handed on unchanged.

Multipart forms carry files only. BentoML takes a file field sent as text for a URL and downloads
it (a 500 when it is not one, and a request the service makes on a caller's behalf when it is), so
a text part is a 400 naming the field.
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

REFUSED_TYPES = ("text/plain", "application/x-www-form-urlencoded")


async def _read(receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def body_problem(headers: Headers, body: bytes) -> tuple[int, str] | None:
    """(status, reason) when ``body`` cannot be read as its declared content type, else None."""
    content_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type in REFUSED_TYPES:
        return (
            415,
            f"content type {content_type} is not accepted: send application/json (or a multipart form)",
        )
    if content_type == "application/json" and body:
        try:
            json.loads(body)
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
            return 400, f"the body is not valid JSON: {error}"
    if content_type == "multipart/form-data":

        async def stream():
            yield body

        try:
            form = await MultiPartParser(headers, stream()).parse()
        except MultiPartException as error:
            return 400, f"the body is not a valid multipart form: {error.message}"
        texts = sorted({name for name, value in form.multi_items() if not isinstance(value, UploadFile)})
        await form.close()
        if texts:
            return 400, f"multipart fields must be file uploads, not text: {', '.join(map(repr, texts))}"
    return None


class ReadableBodies:
    """ASGI middleware (``FraudScorer.add_asgi_middleware``)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            return await self.app(scope, receive, send)
        body = await _read(receive)
        problem = await body_problem(Headers(scope=scope), body)
        if problem is None:
            delivered = False

            async def replay():
                nonlocal delivered
                if delivered:
                    return await receive()  # the client's disconnect, when it comes
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}

            return await self.app(scope, replay, send)
        status, reason = problem
        payload = json.dumps({"error": reason}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
