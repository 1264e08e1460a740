"""The service's OpenAPI document (``/docs.json``), corrected to say what the service actually does.

Callers generate clients from this document and the fuzz test holds the service to it (schemathesis,
every default check: no answer outside the document, every body it admits accepted, every body it
does not admit refused), so it must be exact. BentoML 1.4 writes it from the request models (whose
fields carry the lake's rules, ``serving/schemas.py``); this module corrects the rest:

1. Every error body is ``Refusal`` (``{"error", "detail"?}``), the shape admission, the 503s and
   BentoML's own task routes send; BentoML documents three error schemas, one of them wrongly.
2. Each operation lists the statuses it can answer: 413 (too large), 415 (content type), 503
   (overloaded, or the online store unavailable; ``Retry-After``), 504 (past the time limit), 401
   when API keys are configured (with the bearer scheme), ``/readyz``'s 503.
3. A file field names its media type (``encoding``): Parquet.
4. A task's ``/cancel`` and ``/retry`` are gone: the service does not offer them
   (``serving/admission.py``); ``/get`` of a task still running answers 409.
6. Request bodies are required, and a form holds its files and nothing else.
5. ``TaskStatusResponse``: BentoML documents statuses in_progress/success/failure/cancelled and two
   required timestamps; the server sends pending/in_progress/completed/failed/canceled, and a submit
   answers with ``task_id`` and ``status`` only.
"""

from __future__ import annotations

import copy
import json

from serving.admission import NOT_OFFERED, routes_of
from serving.auth import OPEN_PATHS
from serving.settings import settings

DOCUMENT_PATH = "/docs.json"
BENTOML_ERRORS = ("InvalidArgument", "NotFound", "InternalServerError")
TASK_STATUSES = ["pending", "in_progress", "completed", "failed", "canceled"]
REFUSAL = {
    "type": "object",
    "title": "Refusal",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "what is wrong"},
        "detail": {
            "type": "array",
            "description": "per field: where (loc), what (msg), the kind of error (type)",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}
_REF = {"$ref": "#/components/schemas/Refusal"}
# Statuses every API operation (a scoring route or a task's submit) may answer besides 200.
_ADMISSION = {
    "400": "the body does not match the request schema (every field named)",
    "413": "the body, or the file's rows or decoded size, is over the documented limit",
    "415": "the content type is not the operation's",
    "503": "overloaded, or the online feature store is unavailable: try again after Retry-After seconds",
    "504": "the request ran past the time limit",
    "500": "a failure of the service",
}
_ANY = {"504": _ADMISSION["504"], "500": _ADMISSION["500"]}


def _error(description: str, retry_after: bool = False) -> dict:
    response = {"description": description, "content": {"application/json": {"schema": dict(_REF)}}}
    if retry_after:
        response["headers"] = {
            "Retry-After": {
                "description": "seconds to wait before trying again",
                "schema": {"type": "integer"},
            }
        }
    return response


def _replace_refs(node, old: set[str], new: str):
    if isinstance(node, dict):
        if node.get("$ref", "").rsplit("/", 1)[-1] in old:
            return {"$ref": new}
        return {key: _replace_refs(value, old, new) for key, value in node.items()}
    if isinstance(node, list):
        return [_replace_refs(value, old, new) for value in node]
    return node


def corrected(document: dict, secured: bool, api_paths: set[str], file_media_types: dict[str, str]) -> dict:
    """``document`` as the service behaves: ``secured`` when API keys are configured, ``api_paths``
    the routes admission guards, ``file_media_types`` the media type of each file field."""
    document = copy.deepcopy(document)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in BENTOML_ERRORS:
        schemas.pop(name, None)
    schemas["Refusal"] = REFUSAL
    document = _replace_refs(document, set(BENTOML_ERRORS), _REF["$ref"])
    schemas = document["components"]["schemas"]
    if status := schemas.get("TaskStatusResponse"):
        status["required"] = ["task_id", "status"]
        status["properties"]["status"]["enum"] = TASK_STATUSES
        status["properties"]["executed_at"] = {"title": "Executed At", "type": "string", "nullable": True}
    paths = document.setdefault("paths", {})
    for path in [p for p in paths if p.endswith(NOT_OFFERED) and p.rsplit("/", 1)[0] in api_paths]:
        del paths[path]
    if secured:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, operations in paths.items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            statuses = _ADMISSION if path in api_paths else _ANY
            if path.endswith("/get") and path.removesuffix("/get") in api_paths:
                statuses = {  # a task's stored failure is sent as it was
                    **_ANY,
                    "400": _ADMISSION["400"],
                    "409": "the task has not completed yet",
                    "503": _ADMISSION["503"],
                }
            for code, description in statuses.items():
                responses[code] = _error(description, retry_after=code == "503")
            for code, response in responses.items():
                if code[0] in "45" and code not in statuses:
                    responses[code] = _error(response.get("description", "refused"))
            if path == "/readyz":
                responses["503"] = {
                    "description": "not ready: the online store does not answer with a snapshot",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            if secured and path not in OPEN_PATHS:
                operation["security"] = [{"bearer": []}]
                responses["401"] = _error("missing or invalid API key (Authorization: Bearer <key>)")
            if path in api_paths and "requestBody" in operation:
                operation["requestBody"]["required"] = True  # an empty body is not a request
            for media, body in operation.get("requestBody", {}).get("content", {}).items():
                if media == "multipart/form-data":
                    body["schema"]["additionalProperties"] = False  # a form has its files, nothing else
                fields = body.get("schema", {}).get("properties", {})
                encoding = {
                    name: {"contentType": file_media_types[name]}
                    for name in fields
                    if name in file_media_types
                }
                if media == "multipart/form-data" and encoding:
                    body["encoding"] = encoding
    return document


class CorrectedOpenApi:
    """ASGI middleware: serves ``corrected(document, ...)`` at ``/docs.json``."""

    def __init__(self, app, service, media_types: dict[str, str], secured: bool | None = None):
        self.app = app
        self.options = {
            "secured": bool(settings().api_keys) if secured is None else secured,
            "api_paths": set(routes_of(service, media_types)),
            "file_media_types": dict(media_types),
        }

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
            body = json.dumps(corrected(json.loads(body), **self.options)).encode()
        headers = [(name, value) for name, value in start["headers"] if name != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
