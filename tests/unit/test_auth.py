"""API keys of the scoring service, through a bare ASGI app (no BentoML)."""

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving.auth import ApiKeyAuth
from serving.settings import SettingsError, api_keys_from_env

KEY = "a-key-long-enough-0001"


def app(keys):
    async def ok(request):
        return PlainTextResponse("scored")

    inner = Starlette(
        routes=[Route(path, ok, methods=["GET", "POST"]) for path in ("/score", "/livez", "/metrics")]
    )
    return TestClient(ApiKeyAuth(inner, keys=keys))


def test_keys_come_from_the_variable_and_the_mounted_secret(tmp_path):
    secret = tmp_path / "keys"
    secret.write_text("# comment\n\nfrom-the-secret-0000001\n  \n")
    keys = api_keys_from_env({"KEEL_API_KEYS": f" {KEY} ,", "KEEL_API_KEYS_FILE": str(secret)})
    assert keys == [KEY, "from-the-secret-0000001"]


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"KEEL_ENV": "prod"}, "KEEL_ENV=prod: the scoring service does not start without API keys"),
        ({"KEEL_ENV": "staging", "KEEL_API_KEYS": ""}, "KEEL_ENV=staging"),
        ({"KEEL_API_KEYS": "short"}, "shorter than 16 characters"),
        ({"KEEL_API_KEYS_FILE": "/nonexistent/keys"}, "KEEL_API_KEYS_FILE=/nonexistent/keys: cannot read it"),
    ],
)
def test_a_missing_or_weak_key_configuration_refuses_to_start(environ, message):
    with pytest.raises(SettingsError, match=message):
        api_keys_from_env(environ)


def test_local_may_run_without_keys():
    assert api_keys_from_env({}) == [] and api_keys_from_env({"KEEL_ENV": "local"}) == []


def test_scoring_needs_a_configured_key_and_the_probes_do_not():
    client = app([KEY, "the-next-key-000000002"])
    assert client.post("/score", headers={"Authorization": f"Bearer {KEY}"}).text == "scored"
    assert (
        client.post("/score", headers={"Authorization": "bearer the-next-key-000000002"}).status_code == 200
    )
    for headers, error in (
        ({}, "missing Authorization header"),
        ({"Authorization": f"Basic {KEY}"}, "is not 'Bearer <API key>'"),
        ({"Authorization": "Bearer "}, "is not 'Bearer <API key>'"),
        ({"Authorization": "Bearer a-key-long-enough-0002"}, "invalid API key"),
    ):
        refused = client.post("/score", headers=headers)
        assert refused.status_code == 401 and error in refused.json()["error"]
        assert refused.headers["www-authenticate"].startswith('Bearer realm="keel"')
    assert client.get("/livez").status_code == 200 and client.get("/metrics").status_code == 200


def test_without_keys_everything_is_open():
    assert app([]).post("/score").status_code == 200
