"""Admission: every request to a scoring route is read, bounded and checked here, before BentoML.

A caller's mistake is a 4xx that names the field, never a 500 and never a hang. BentoML 1.4 let some
through: JSON nested 1,000 deep raised a RecursionError (a 500, after 10 s); a Parquet file under
another form field was a 500; ``/submit`` without a file was accepted and the task then failed; a
body had no size bound; a refusal logged a traceback holding parts of the body. So, for each API
route of the service (and a task's ``/submit``):

- the body is read with a bound (``Content-Length``, then the bytes actually received) -> 413;
- its content type must be the route's, JSON or a multipart form -> else 415;
- JSON is validated by the route's own input model (the one BentoML validates with, so the OpenAPI
  document describes exactly this), with the platform's time zone in the context -> 400 with every
  field's error (pydantic parses JSON without recursion, so any depth is just invalid);
- a form must carry exactly the route's file fields, each one file -> 400 naming the field; each file
  passes its route's check (``file_checks``); the form is then handed on re-encoded, with only those
  files, a neutral file name and the declared media type (BentoML would use the caller's file name
  for a temporary file, and refuses a part sent as ``application/octet-stream``);
- at most ``max_in_flight`` requests of a worker are inside at once; past that, 503 ``overloaded``
  with ``Retry-After``, at once, rather than queueing work that cannot finish in time.

A refusal is one log line (status, route and, per field, where and what kind of error: never a value,
never a traceback) and a JSON body ``{"error": ..., "detail": [...]}`` (``serving.schemas.Refusal``).
A task's ``/cancel`` and ``/retry`` are not offered (404): BentoML 1.4's ``/cancel`` marks the task
cancelled, answers 400 and lets the work go on (a file's work is bounded by its row limit instead),
and ``/retry`` re-runs a stored copy of the request (a caller sends the file again). ``/get`` of a
task still running is a 409, not BentoML's 400.
"""

from __future__ import annotations

import inspect
import json
import logging
import secrets
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pydantic import TypeAdapter, ValidationError
from pydantic_core import from_json
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from serving.settings import MAX_FILE_BYTES, MAX_JSON_BYTES, settings

logger = logging.getLogger("keel.serving.admission")
RETRY_AFTER_SECONDS = 1  # an overloaded worker frees a slot within a request's time
# BentoML's task routes this service does not offer: /cancel marks a task cancelled and lets it run;
# /retry re-runs it from a stored copy of the request (send the file again instead).
NOT_OFFERED = ("/cancel", "/retry")


class Refused(Exception):
    """A request refused: its status, what is wrong, and per field where and what (no values)."""

    def __init__(
        self, status: int, error: str, detail: list[dict] | None = None, retry_after: int | None = None
    ):
        super().__init__(error)
        self.status, self.error, self.detail, self.retry_after = status, error, detail, retry_after

    def body(self) -> bytes:
        return json.dumps({"error": self.error, **({"detail": self.detail} if self.detail else {})}).encode()

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", b"application/json")]
        if self.retry_after is not None:
            headers.append((b"retry-after", str(self.retry_after).encode()))
        return headers

    def summary(self) -> str:
        """What the log says: the error, or where and what kind of error per field (no values)."""
        if not self.detail:
            return self.error
        return "; ".join(f"{_where(d)}: {d['type']}" for d in self.detail)


def _where(problem: dict) -> str:
    """A field's place, for the log: the name of a field the request made up is the caller's text."""
    loc = [str(part) for part in problem["loc"]]
    if problem["type"] == "extra_forbidden" and loc:
        loc[-1] = "(a field not in the schema)"
    return ".".join(loc) or "body"


FileCheck = Callable[[bytes], None]  # raises Refused when the file cannot be taken


@dataclass(frozen=True)
class Route:
    path: str
    body: TypeAdapter | None  # a JSON body's type, as the endpoint declares it; None for a form
    files: tuple[str, ...] = ()  # a form's file fields
    media_types: Mapping[str, str] = field(default_factory=dict)  # file field -> its media type


def routes_of(service, media_types: Mapping[str, str]) -> dict[str, Route]:
    """Each API route of a BentoML service (and its task's /submit): the type of its JSON body (the
    endpoint's one positional parameter, whose schema BentoML documents) or its form's file fields."""
    routes = {}
    for method in service.apis.values():
        files = tuple(method.input_spec.multipart_fields)
        if files:
            types = {name: media_types.get(name, "application/octet-stream") for name in files}
            route = Route(method.route, None, files, types)
        else:
            parameters = [p for p in inspect.signature(method.func).parameters.values() if p.name != "self"]
            if len(parameters) != 1 or parameters[0].kind is not inspect.Parameter.POSITIONAL_ONLY:
                raise TypeError(
                    f"{method.route}: admission checks bodies that are one positional-only parameter"
                )
            body = typing.get_type_hints(method.func, include_extras=True)[parameters[0].name]
            route = Route(method.route, TypeAdapter(body))
        routes[method.route] = route
        if method.is_task:
            routes[f"{method.route}/submit"] = route
    return routes


def field_errors(error: ValidationError) -> list[dict]:
    """pydantic's errors without the input values (``loc``, ``msg``, ``type``)."""
    return [
        {"loc": list(problem["loc"]), "msg": problem["msg"], "type": problem["type"]}
        for problem in error.errors(include_url=False, include_input=False, include_context=False)
    ]


class Admission:
    """ASGI middleware (``Service.add_asgi_middleware(Admission, service=..., ...)`` on a BentoML service)."""

    def __init__(
        self,
        app,
        service,
        file_checks: Mapping[str, FileCheck] | None = None,
        media_types: Mapping[str, str] | None = None,
        max_in_flight: int | None = None,
        context: Mapping | None = None,
    ):
        self.app = app
        self.routes = routes_of(service, media_types or {})
        tasks = [method.route for method in service.apis.values() if method.is_task]
        self.not_offered = {route + suffix for route in tasks for suffix in NOT_OFFERED}
        self.results = {f"{route}/get" for route in tasks}
        self.file_checks = dict(file_checks or {})
        self.max_in_flight = settings().max_in_flight if max_in_flight is None else max_in_flight
        self.context = {"zone": settings().time_zone} if context is None else dict(context)
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path in self.not_offered:
            return await self._refuse(scope, send, Refused(404, f"{path} is not offered by this service"))
        if path in self.results and b"task_id=" in scope.get("query_string", b""):
            return await self.app(scope, receive, _not_completed_is_a_conflict(send))
        route = self.routes.get(path)
        if route is None or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        if self.in_flight >= self.max_in_flight:
            overloaded = f"overloaded: {self.in_flight} requests in flight, try again shortly"
            return await self._refuse(scope, send, Refused(503, overloaded, retry_after=RETRY_AFTER_SECONDS))
        self.in_flight += 1
        try:
            try:
                body, headers = await self._admit(scope, receive, route)
            except Refused as refused:
                return await self._refuse(scope, send, refused)
            delivered = False

            async def replay():
                nonlocal delivered
                if delivered:
                    return await receive()  # the client's disconnect, when it comes
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app({**scope, "headers": headers}, replay, send)
        finally:
            self.in_flight -= 1

    async def _admit(self, scope, receive, route: Route) -> tuple[bytes, list]:
        """The body to hand on and its headers, or ``Refused``."""
        headers = Headers(scope=scope)
        content_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        expected = "application/json" if route.body is not None else "multipart/form-data"
        if content_type != expected:
            raise Refused(415, f"content type {content_type or 'none'} is not accepted here: send {expected}")
        limit = MAX_JSON_BYTES if route.body is not None else MAX_FILE_BYTES
        body = await _read(receive, headers, limit)
        if route.body is not None:
            try:
                # pydantic's parser: no recursion (any depth is just too deep), no NaN (not JSON).
                route.body.validate_python(from_json(body, allow_inf_nan=False), context=self.context)
            except ValidationError as error:
                raise Refused(
                    400, "the body does not match the request schema", field_errors(error)
                ) from None
            except ValueError as error:  # not JSON
                problem = {"loc": [], "msg": str(error), "type": "json_invalid"}
                raise Refused(400, "the body is not valid JSON", [problem]) from None
            return body, scope["headers"]
        files = await _files(headers, body, route)
        for name, content in files.items():
            if check := self.file_checks.get(name):
                check(content)
        return _form(files, route.media_types, scope["headers"])

    async def _refuse(self, scope, send, refused: Refused) -> None:
        level = logging.WARNING if refused.status in (413, 503) else logging.INFO
        logger.log(level, "%s %s %s: %s", refused.status, scope["method"], scope["path"], refused.summary())
        body = refused.body()
        headers = [*refused.headers(), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": refused.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _not_completed_is_a_conflict(send):
    """BentoML answers /get of a task still running with a 400, as if the request were wrong; with a
    task id given, that is its only 400. It is a 409: the request is right, the result not there yet."""

    async def sending(message):
        if message["type"] == "http.response.start" and message["status"] == 400:
            message = {**message, "status": 409}
        await send(message)

    return sending


async def _read(receive, headers: Headers, limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Refused(413, f"the body is larger than {limit:,} bytes")
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"the body is larger than {limit:,} bytes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _files(headers: Headers, body: bytes, route: Route) -> dict[str, bytes]:
    """The route's files from a multipart form: each present once, as a file; nothing else."""

    async def stream():
        yield body

    try:
        form = await MultiPartParser(
            headers, stream(), max_files=len(route.files) + 1, max_fields=1, max_part_size=1024
        ).parse()
    except MultiPartException as error:
        raise Refused(400, f"the body is not a valid multipart form: {error.message}") from None
    try:
        problems = []
        for name in sorted({key for key, _ in form.multi_items()} - set(route.files)):
            problems.append({"loc": [name], "msg": "not a field of this request", "type": "extra_forbidden"})
        files = {}
        for name in route.files:
            values = form.getlist(name)
            if not values:
                problems.append({"loc": [name], "msg": "a file is required", "type": "missing"})
            elif len(values) > 1:
                problems.append({"loc": [name], "msg": "one file, not several", "type": "too_long"})
            elif not isinstance(values[0], UploadFile):
                problems.append(
                    {"loc": [name], "msg": "must be a file upload, not text", "type": "file_type"}
                )
            else:
                files[name] = await values[0].read()
        if problems:
            raise Refused(400, "the form does not match the request schema", problems)
        return files
    finally:
        await form.close()


def _form(files: Mapping[str, bytes], media_types: Mapping[str, str], headers: list) -> tuple[bytes, list]:
    """The files as a fresh multipart body, and the request's headers for it."""
    boundary = secrets.token_hex(16)
    parts = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}"\r\n'
            f"Content-Type: {media_types[name]}\r\n\r\n"
        ).encode()
        + content
        + b"\r\n"
        for name, content in files.items()
    ]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    kept = [(k, v) for k, v in headers if k not in (b"content-type", b"content-length", b"transfer-encoding")]
    return body, [
        *kept,
        (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
        (b"content-length", str(len(body)).encode()),
    ]
