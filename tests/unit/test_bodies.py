"""Unreadable request bodies are a 4xx that says why (serving/bodies.py), through a bare ASGI app."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving.bodies import ReadableBodies


async def echo(request: Request):
    if request.headers.get("content-type", "").startswith("multipart/"):
        form = await request.form()
        return JSONResponse({"fields": sorted(form)})
    return JSONResponse({"body": (await request.body()).decode()})


client = TestClient(ReadableBodies(Starlette(routes=[Route("/score", echo, methods=["POST"])])))


def test_a_readable_body_reaches_the_endpoint_unchanged():
    assert client.post("/score", json={"amount": 5}).json() == {"body": '{"amount":5}'}
    assert client.post("/score", files={"payments": b"PAR1"}).json() == {"fields": ["payments"]}


def test_json_that_does_not_parse_is_a_400_naming_it():
    for body in (b"\x00", b'{"amount": ', b"\xff\xfe"):
        answer = client.post("/score", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 400 and "the body is not valid JSON" in answer.json()["error"]


def test_a_broken_multipart_form_is_a_400_and_plain_text_a_415():
    broken = client.post(
        "/score", content=b"True--b--\r\n", headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert broken.status_code == 400 and "not a valid multipart form" in broken.json()["error"]
    text = client.post("/score", content=b"amount=5", headers={"content-type": "text/plain"})
    assert text.status_code == 415 and "send application/json" in text.json()["error"]


def test_a_file_field_sent_as_text_is_a_400_naming_it_and_never_fetched_as_a_url():
    for value in ("-33051", "http://169.254.169.254/latest/meta-data/"):
        answer = client.post("/score", data={"payments": value}, files={"other": b"PAR1"})
        assert answer.status_code == 400
        assert answer.json()["error"] == "multipart fields must be file uploads, not text: 'payments'"
