"""The service's OpenAPI document (``/docs.json``), corrected where BentoML 1.4's disagrees with the
answers BentoML itself sends. Callers generate clients from this document, so it must be true.

The fuzz test (``tests/integration/test_serving_resilience.py``) found each of these:

1. Error bodies: ``detail`` is documented as a string, but a validation error sends the list of
   ``{loc, msg, type}`` that names each bad field.
2. A task's synchronous route (``POST /score_file``) sends its error as a list of one error object.
3. ``TaskStatusResponse``: documented with statuses in_progress/success/failure/cancelled and two
   required timestamps; the server sends pending/in_progress/completed/failed/canceled, and a
   submit answers with ``task_id`` and ``status`` only. BentoML also writes ``{"type": "null"}``,
   which OpenAPI 3.0 (the version the document declares) does not have.

It also documents the 415 that ``serving/bodies.py`` answers to a body in a content type the API
does not speak.
"""

from __future__ import annotations

import copy
import json

DOCUMENT_PATH = "/docs.json"
ERRORS = ("InvalidArgument", "NotFound", "InternalServerError")
TASK_STATUSES = ["pending", "in_progress", "completed", "failed", "canceled"]
_FIELD_ERROR = {
    "type": "object",
    "properties": {
        "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
        "msg": {"type": "string"},
        "type": {"type": "string"},
    },
}


def corrected(document: dict) -> dict:
    document = copy.deepcopy(document)
    schemas = document.get("components", {}).get("schemas", {})
    for name in ERRORS:
        if name in schemas:
            schemas[name]["properties"]["detail"] = {
                "title": "Error Detail",
                "anyOf": [{"type": "string"}, {"type": "array", "items": _FIELD_ERROR}],
            }
    if status := schemas.get("TaskStatusResponse"):
        status["required"] = ["task_id", "status"]
        status["properties"]["status"]["enum"] = TASK_STATUSES
        status["properties"]["executed_at"] = {"title": "Executed At", "type": "string", "nullable": True}
    paths = document.get("paths", {})
    for operations in paths.values():
        for operation in operations.values():
            if "requestBody" in operation and "400" in operation.get("responses", {}):
                operation["responses"]["415"] = {
                    "description": "Unsupported Media Type",
                    "content": copy.deepcopy(operation["responses"]["400"]["content"]),
                }
    for path, operations in paths.items():
        if f"{path}/submit" not in paths:
            continue  # not a task
        for operation in operations.values():
            for code, response in operation.get("responses", {}).items():
                if code.startswith(("4", "5")):
                    for media in response.get("content", {}).values():
                        error = media["schema"]
                        media["schema"] = {"anyOf": [error, {"type": "array", "items": error}]}
    return document


class CorrectedOpenApi:
    """ASGI middleware: serves ``corrected(document)`` at ``/docs.json``."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != DOCUMENT_PATH:
            return await self.app(scope, receive, send)
        start, chunks = {}, []

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        body = b"".join(chunks)
        if start["status"] == 200:
            body = json.dumps(corrected(json.loads(body))).encode()
        headers = [(name, value) for name, value in start["headers"] if name != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
