"""Admission of requests (serving/admission.py), on a small BentoML service's routes and a bare ASGI app:
bounds, content types, the request schema, forms with exactly their files, overload, and the log."""

import logging
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import bentoml
import pytest
from bentoml.validators import ContentType
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from platform_assets.defs.fraud.scorer.schemas import Transaction, Transactions
from serving.admission import Admission, Refused
from serving.settings import MAX_JSON_BYTES

PARQUET = "application/vnd.apache.parquet"
GOOD = {
    "transaction_id": 1,
    "transacted_at": "2026-02-04T10:00:00",
    "customer_id": 1,
    "terminal_id": 1,
    "amount": 5.0,
}


@bentoml.service
class Scorer:
    @bentoml.api(route="/score")
    async def score(self, transaction: Transaction, /) -> dict:
        return {}

    @bentoml.api(route="/score_batch")
    async def score_batch(self, transactions: Transactions, /) -> list:
        return []

    @bentoml.task(route="/score_file")
    async def score_file(self, payments: Annotated[Path, ContentType(PARQUET)]) -> bytes:
        return b""


async def echo(request: Request):
    if request.headers.get("content-type", "").startswith("multipart/"):
        form = await request.form()
        files = {
            name: (value.filename, value.content_type, (await value.read()).decode())
            for name, value in form.items()
        }
        return JSONResponse({"files": files})
    return JSONResponse({"body": (await request.body()).decode()})


async def unfinished(request: Request):
    return JSONResponse({"error": "task x is not completed yet"}, status_code=400)


def refuse_big(content: bytes) -> None:
    if content == b"too big":
        raise Refused(413, "payments: too many rows")


def client(max_in_flight: int = 10, zone: str = "UTC") -> TestClient:
    app = Starlette(
        routes=[
            Route(path, echo, methods=["POST"])
            for path in ("/score", "/score_batch", "/score_file", "/score_file/submit")
        ]
        + [Route("/score_file/get", unfinished)]
    )
    admitted = Admission(
        app,
        service=Scorer,
        file_checks={"payments": refuse_big},
        media_types={"payments": PARQUET},
        max_in_flight=max_in_flight,
        context={"zone": ZoneInfo(zone)},
    )
    return TestClient(admitted)


def test_a_valid_body_reaches_the_endpoint_unchanged():
    body = b'{"transaction_id": 1, "transacted_at": "2026-02-04T10:00:00", "customer_id": 1, '
    answer = client().post("/score", content=body + b'"terminal_id": 1, "amount": 5}')
    assert answer.status_code == 200 and '"amount": 5}' in answer.json()["body"]


@pytest.mark.parametrize(
    "body",
    [b"\x00", b'{"amount": ', b"\xff\xfe", b"", b"[" * 1000 + b"]" * 1000, b'{"amount": NaN}'],
    ids=["nul", "truncated", "not utf-8", "empty", "a thousand deep", "NaN"],
)
def test_a_body_that_is_not_json_is_a_400_saying_so(body):
    answer = client().post("/score", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["detail"][0]["type"] == "json_invalid"


def test_every_field_in_error_is_named_with_its_place():
    answer = client().post("/score_batch", json=[GOOD, {**GOOD, "amount": -1, "customer_id": "7"}])
    assert answer.status_code == 400
    assert sorted(tuple(problem["loc"]) for problem in answer.json()["detail"]) == [
        (1, "amount"),
        (1, "customer_id"),
    ]


def test_a_wall_time_that_the_platforms_zone_skips_is_refused_there_only():
    gap = {**GOOD, "transacted_at": "2026-03-29T02:30:00"}
    assert client(zone="Europe/Paris").post("/score", json=gap).status_code == 400
    assert client(zone="UTC").post("/score", json=gap).status_code == 200


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/score", "text/plain"),
        ("/score", "multipart/form-data; boundary=x"),
        ("/score_file", "application/json"),
    ],
)
def test_a_body_in_another_content_type_than_the_routes_is_a_415(path, content_type):
    answer = client().post(path, content=b"{}", headers={"content-type": content_type})
    assert answer.status_code == 415 and "not accepted here" in answer.json()["error"]


def test_a_body_over_the_limit_is_a_413_whether_declared_or_not():
    big = b"[" + b" " * MAX_JSON_BYTES + b"]"
    declared = client().post("/score", content=big, headers={"content-type": "application/json"})

    def chunks():
        yield big[: len(big) // 2]
        yield big[len(big) // 2 :]

    streamed = client().post("/score", content=chunks(), headers={"content-type": "application/json"})
    assert declared.status_code == 413 and streamed.status_code == 413


def test_a_form_reaches_the_endpoint_with_its_file_alone_under_a_neutral_name_and_its_media_type():
    answer = client().post(
        "/score_file", files={"payments": ("../../etc/x" * 40, b"PAR1", "application/octet-stream")}
    )
    assert answer.status_code == 200
    assert answer.json() == {"files": {"payments": ["payments", PARQUET, "PAR1"]}}


@pytest.mark.parametrize(
    ("files", "data", "problems"),
    [
        ({"other": ("p", b"PAR1")}, None, {("other",): "extra_forbidden", ("payments",): "missing"}),
        ([("payments", (None, "http://169.254.169.254/"))], None, {("payments",): "file_type"}),
        ([("payments", ("a", b"1")), ("payments", ("b", b"2"))], None, {("payments",): "too_long"}),
    ],
    ids=["another field", "text, not a file", "two files"],
)
def test_a_form_without_exactly_its_file_is_a_400_naming_each_field(files, data, problems):
    for path in ("/score_file", "/score_file/submit"):
        answer = client().post(path, files=files, data=data)
        assert answer.status_code == 400
        assert {tuple(p["loc"]): p["type"] for p in answer.json()["detail"]} == problems


def test_a_file_its_check_refuses_gets_the_checks_status():
    answer = client().post("/score_file", files={"payments": ("p", b"too big")})
    assert answer.status_code == 413 and answer.json()["error"] == "payments: too many rows"


def test_past_its_in_flight_limit_a_worker_answers_503_overloaded_with_retry_after():
    answer = client(max_in_flight=0).post("/score", json=GOOD)
    assert answer.status_code == 503 and answer.json()["error"].startswith("overloaded")
    assert answer.headers["retry-after"] == "1"


def test_task_cancellation_and_retry_are_not_offered_and_an_unfinished_result_is_a_conflict():
    http = client()
    assert http.put("/score_file/cancel", params={"task_id": "x"}).status_code == 404
    assert http.post("/score_file/retry", params={"task_id": "x"}).status_code == 404
    assert http.get("/score_file/get", params={"task_id": "x"}).status_code == 409
    assert http.get("/score_file/get").status_code == 400  # no task id: the request is wrong


def test_a_refusal_is_one_log_line_without_the_values_or_the_names_a_caller_made_up(caplog):
    secret = "4111111111111111"
    with caplog.at_level(logging.INFO, logger="keel.serving.admission"):
        client().post("/score", json={**GOOD, "customer_id": secret, secret: 1})
        client().post("/score_file", files={secret: ("p", b"PAR1")})
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith(
        "400 POST /score: customer_id: int_type; (a field not in the schema): extra_forbidden"
    )
    assert all(secret not in line for line in lines)
    assert not any(record.exc_info for record in caplog.records)
