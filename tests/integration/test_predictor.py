"""A use case's prediction endpoint over HTTP (serving/predictor.py): terminal_volume's Bento, built by
the main job from the use case's folder alone, served by `bentoml serve` on loopback.

The endpoint reads the online snapshot the job published for the last day's close; the job's batch
scores of that day used the same features and the same model. They must agree."""

import time
from pathlib import Path

import bentoml
import dagster as dg
import pandas as pd
import pytest
from bento_server import serving
from serving_world import metadata_of

pytestmark = pytest.mark.slow

START_SECONDS = 600  # a bound on `bentoml serve` becoming ready, far above a busy machine's need
LOG_SECONDS = 300  # a bound on the prediction log's background writer
USE_CASE = "terminal_volume"


@pytest.fixture(scope="module")
def predictor(backfill, definitions, tmp_path_factory):
    assert backfill.success
    bento = metadata_of(backfill, dg.AssetKey([USE_CASE, "bento"]))
    spool = tmp_path_factory.mktemp("spool")
    env = {
        "KEEL_ONLINE_STORE_URL": definitions.resources["online_store"].url,
        "KEEL_PREDICTION_LOG_URI": str(spool),
    }
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serving(bento["bento"], env, log, timeout=START_SECONDS) as server, server.client() as client:
        yield client, spool, bento


@pytest.fixture(scope="module")
def batch_scores(definitions, world) -> pd.DataFrame:
    with definitions.resources["warehouse"].connect() as connection:
        return connection.execute(
            f"select terminal_id, prediction, model_version from ml.{USE_CASE}_scores "
            "where as_of_date = ? order by terminal_id limit 50",
            [world.last_day],
        ).df()


def test_the_job_built_the_endpoint_of_the_promoted_version_and_published_the_last_day(backfill, world):
    bento, promoted = (
        metadata_of(backfill, dg.AssetKey([USE_CASE, a])) for a in ("bento", "production_model")
    )
    online = metadata_of(backfill, dg.AssetKey([USE_CASE, "online_features"]))
    assert bento["model_version"] == promoted["model_tag"] and bento["bento"].startswith(f"{USE_CASE}_")
    assert online["published"] and online["closed_day"] == world.last_day.isoformat()


def test_the_endpoint_forecasts_each_terminal_as_the_batch_scores_did(predictor, batch_scores, world):
    client, _, bento = predictor
    answered = client.post(
        "/predict_batch", json=[{"terminal_id": int(t)} for t in batch_scores["terminal_id"]]
    )
    assert answered.status_code == 200, answered.text
    online = pd.DataFrame(answered.json())
    assert online["terminal_id"].tolist() == batch_scores["terminal_id"].tolist()  # in the order asked
    assert (online["forecast_payments"] - batch_scores["prediction"]).abs().max() < 1e-9
    assert set(online["model_version"]) == {bento["model_version"]} == set(batch_scores["model_version"])
    assert set(online["feature_snapshot_date"]) == {world.last_day.isoformat()}
    assert not online["terminal_is_new"].any()
    one = client.post("/predict", json={"terminal_id": int(batch_scores["terminal_id"].iloc[0])})
    assert one.status_code == 200 and one.json()["forecast_payments"] == online["forecast_payments"].iloc[0]


def test_a_terminal_the_snapshot_lacks_gets_the_declared_defaults_and_says_so(predictor):
    client, _, _ = predictor
    answered = client.post("/predict", json={"terminal_id": 9_000_000_000})
    assert answered.status_code == 200, answered.text
    assert answered.json()["terminal_is_new"] is True and answered.json()["forecast_payments"] >= 0


@pytest.mark.parametrize(
    "body, field",
    [
        ({"terminal_id": "17"}, "terminal_id"),  # a number in a string is not an id
        ({"terminal_id": 1.0}, "terminal_id"),
        ({"terminal_id": True}, "terminal_id"),
        ({"terminal_id": -1}, "terminal_id"),
        ({"terminal_id": 2**63}, "terminal_id"),
        ({}, "terminal_id"),
        ({"terminal_id": 1, "amount": 3}, "amount"),  # nothing else is accepted
    ],
)
def test_a_bad_request_is_a_400_naming_the_field_and_never_echoing_it(predictor, body, field):
    client, _, _ = predictor
    answered = client.post("/predict", json=body)
    assert answered.status_code == 400, answered.text
    assert [field] in [problem["loc"] for problem in answered.json()["detail"]]
    assert "17" not in answered.text  # the refusal names the field, never the value sent


def test_a_batch_is_bounded(predictor):
    client, _, _ = predictor
    assert client.post("/predict_batch", json=[]).status_code == 400
    assert client.post("/predict_batch", json=[{"terminal_id": 1}] * 1001).status_code == 400


def test_the_openapi_document_states_the_use_cases_own_request(predictor):
    client, _, _ = predictor
    document = client.get("/docs.json").json()
    assert {"/predict", "/predict_batch"} <= set(document["paths"])
    request = document["components"]["schemas"][f"{USE_CASE}_request"]
    assert request["required"] == ["terminal_id"] and request["additionalProperties"] is False


def test_every_answer_is_in_the_prediction_log(predictor):
    client, spool, _ = predictor
    assert client.post("/predict", json={"terminal_id": 424242}).status_code == 200
    deadline = time.monotonic() + LOG_SECONDS
    while True:
        files = [f for f in (spool / USE_CASE).rglob("*.parquet") if not f.name.startswith("_")]
        logged = pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame()
        if len(logged) and 424242 in set(logged["terminal_id"]):
            break
        if time.monotonic() > deadline:  # a bound on the writer's event, far above its 2 s period
            raise TimeoutError(f"the answer was not in the prediction log after {LOG_SECONDS} s")
        time.sleep(0.5)
    assert {"forecast_payments", "model_version", "prediction_id", "scored_at"} <= set(logged.columns)


def test_the_endpoint_needs_no_dagster(predictor):
    """The Bento packs serving/ and the pure library only (serving/predictor.bentofile.yaml)."""
    _, _, bento = predictor
    root = Path(bentoml.bentos.get(bento["bento"]).path)
    packed = {path.relative_to(root).as_posix() for path in root.rglob("*.py")}
    assert any(path.endswith("serving/predictor.py") for path in packed), sorted(packed)
    assert not [path for path in packed if "/platform_assets/" in path or "/resources/" in path]
