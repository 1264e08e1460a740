"""The scoring service over HTTP: the Bento the main job built, served by `bentoml serve` on loopback.

The service reads the online snapshot of day D-1's close and scores payments of day D; the batch
pipeline scored the same payments offline. Replayed in order after the payments of D-1 (so that each
payment's velocity windows hold the payments before it, as they would live), they must agree.
"""

import io
import tarfile
import time
from datetime import timedelta

import bentoml
import pandas as pd
import pytest
import yaml
from bento_server import serving
from serving_world import BENTO, FACTS, ONLINE_FEATURES, as_json, metadata_of, publish_snapshot
from world_settings import NAMESPACE

from keel_core import bentos
from keel_core.prediction_log import SPOOL
from platform_assets.defs.fraud.scorer.schemas import MAX_BATCH
from tests import fraud
from tests.fraud import EVALUATION, PRODUCTION_MODEL
from tests.fraud import MODEL as FRAUD_MODEL

SERVICE = fraud.plan().serving.service  # the payment scorer, as the folder declares it

pytestmark = pytest.mark.slow

# Bounds on waits for events, far above what a busy two-core machine needs (`bentoml serve` is
# ready in about ten seconds on a quiet one, a 250-row file is scored in well under a second).
START_SECONDS = 600  # until the server answers its readiness probe
TASK_SECONDS = 300  # until a submitted file's task is no longer in progress
LOG_SECONDS = 300  # until a worker has written the expected line to the server's log
REDIS_TIMEOUT_SECONDS = 30  # the service's timeout on Redis calls, in the test with a real Redis


@pytest.fixture(scope="module")
def spool(tmp_path_factory):
    return tmp_path_factory.mktemp("lake") / SPOOL


@pytest.fixture(scope="module")
def server(champion_bento, definitions, instance, day, spool, tmp_path_factory):
    """The service on a store of its own: no other module's payments in its event windows."""
    url = f"sqlite:///{tmp_path_factory.mktemp('online') / 'online_features.sqlite'}"
    assert publish_snapshot(definitions, instance, url, day - timedelta(days=1))["published"]
    env = {"KEEL_ONLINE_STORE_URL": url, "KEEL_PREDICTION_LOG_URI": str(spool)}
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serving(champion_bento["bento"], env, log, timeout=START_SECONDS) as running:
        yield running


def replay(client, definitions, day) -> pd.DataFrame:
    """Days D-1 and D's payments through /score_batch in their order, as they would come live: the
    scores of D's."""
    with definitions.resources["warehouse"].connect() as connection:
        payments = connection.execute(
            f"select {', '.join(FACTS)}, transaction_date from transactions "
            "where transaction_date between ? and ? order by transacted_at, transaction_id",
            [day - timedelta(days=1), day],
        ).df()
    scores = []
    for start in range(0, len(payments), MAX_BATCH):
        answered = client.post("/score_batch", json=as_json(payments.iloc[start : start + MAX_BATCH]))
        assert answered.status_code == 200, answered.text
        scores += answered.json()
    on_day = (payments["transaction_date"] == pd.Timestamp(day)).to_numpy()
    return pd.DataFrame(scores)[on_day].reset_index(drop=True)


@pytest.fixture(scope="module")
def replayed(server, definitions, day) -> pd.DataFrame:
    with server.client() as client:
        return replay(client, definitions, day)


def batch_scores(definitions, day) -> pd.DataFrame:
    with definitions.resources["warehouse"].connect() as connection:
        return connection.execute(
            "select transaction_id, fraud_probability, model_version from ml.transaction_scores "
            "where transaction_date = ?",
            [day],
        ).df()


def test_the_main_job_built_a_bento_of_the_promoted_model_and_published_the_last_day(backfill, world):
    bento = metadata_of(backfill, BENTO)
    promoted = metadata_of(backfill, PRODUCTION_MODEL)
    online = metadata_of(backfill, ONLINE_FEATURES)

    assert bento["model_version"] == promoted["model_tag"]
    assert bento["bento"].startswith(f"fraud_scorer_{NAMESPACE}:{promoted['model_tag'].split(':')[1]}-")
    assert bentoml.bentos.get(bento["bento"]).info.labels["model_tag"] == promoted["model_tag"]
    assert online["published"] and online["closed_day"] == world.last_day.isoformat()
    assert online["customer_rows"] > 1000 and online["terminal_rows"] > 1000


def test_the_bento_s_archive_is_in_the_lake_for_image_builds(backfill, definitions, tmp_path):
    """What leaves a production pod: `bentoml import` of this file, then `bentoml containerize`."""
    tag = metadata_of(backfill, BENTO)["bento"]
    archive = tmp_path / "fraud_scorer.bento"
    archive.write_bytes(definitions.resources["lake"].read_file(bentos.export_path(tag)))
    with tarfile.open(archive) as packed:
        (manifest,) = [member for member in packed.getmembers() if member.name.lstrip("./") == "bento.yaml"]
        bento_yaml = yaml.safe_load(packed.extractfile(manifest))
    assert f"{bento_yaml['name']}:{bento_yaml['version']}" == tag


def test_a_day_replayed_in_order_gets_the_batch_scores_of_every_payment(replayed, definitions, day):
    offline = batch_scores(definitions, day).set_index("transaction_id").loc[replayed["transaction_id"]]
    assert len(replayed) > 1_000
    assert (replayed["fraud_probability"] - offline["fraud_probability"].to_numpy()).abs().max() < 1e-9
    assert set(replayed["model_version"]) == set(offline["model_version"])


def test_online_scores_equal_the_batch_scores_of_the_same_payments(
    server, replayed, offline, champion_bento, day
):
    # Scored again, singly or in a batch: each payment still sees the same payments before it.
    batch, singles = offline.iloc[:300], offline.iloc[300:]
    with server.client() as client:
        answered = client.post("/score_batch", json=as_json(batch))
        assert answered.status_code == 200, answered.text
        scores = answered.json()
        for payment in as_json(singles):
            single = client.post("/score", json=payment)
            assert single.status_code == 200, single.text
            scores.append(single.json())

    online = pd.DataFrame(scores)
    assert online["transaction_id"].tolist() == offline["transaction_id"].tolist()  # in order
    pd.testing.assert_series_equal(
        online["fraud_probability"], offline["fraud_probability"], check_names=False, rtol=0, atol=1e-9
    )
    assert online["customer_is_new"].tolist() == offline["customer_is_new"].tolist()
    assert online["terminal_is_new"].tolist() == offline["terminal_is_new"].tolist()
    assert set(online["model_version"]) == {champion_bento["model_version"]}
    assert set(online["feature_snapshot_date"]) == {(day - timedelta(days=1)).isoformat()}
    assert set(online["decision"]) <= {"approve", "decline"}
    assert (online["decision"] == "decline").tolist() == (online["fraud_probability"] >= 0.5).tolist()


def test_an_unknown_customer_and_terminal_get_the_defaults_and_are_flagged(server, day):
    payment = {
        "transaction_id": 1,
        "transacted_at": f"{day.isoformat()}T03:00:00",
        "customer_id": 10_000_000,
        "terminal_id": 10_000_000,
        "amount": 12.5,
    }
    with server.client() as client:
        answer = client.post("/score", json=payment)
    assert answer.status_code == 200, answer.text
    score = answer.json()
    assert score["customer_is_new"] and score["terminal_is_new"]
    assert 0 <= score["fraud_probability"] <= 1


GOOD = {
    "transaction_id": 1,
    "transacted_at": "2026-02-04T10:00:00",
    "customer_id": 1,
    "terminal_id": 1,
    "amount": 5.0,
}


def without(field):
    return {k: v for k, v in GOOD.items() if k != field}


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (without("transacted_at"), "transacted_at"),
        ({**GOOD, "amount": -3}, "amount"),
        ({**GOOD, "amount": 2e9}, "amount"),  # absurd: above the contract's maximum
        ({**GOOD, "is_fraud": 1}, "is_fraud"),  # extra fields are refused, not ignored
        ({**GOOD, "transacted_at": "2026-02-04T10:00:00+15:00"}, "transacted_at"),  # no such offset
        ({**GOOD, "transacted_at": "2026-02-30T10:00:00"}, "transacted_at"),  # no such day
        ({**GOOD, "transacted_at": "2026-02-04T10:00:00.1234567"}, "transacted_at"),  # finer than µs
        ({**GOOD, "transacted_at": "2999-01-01T00:00:00"}, "transacted_at"),  # after 2099
        ({**GOOD, "transacted_at": "1970-01-01T00:00:00"}, "transacted_at"),
        ({**GOOD, "transacted_at": "yesterday"}, "transacted_at"),
        ({**GOOD, "customer_id": "17"}, "customer_id"),  # strict: no coercion from strings
        ({**GOOD, "terminal_id": True}, "terminal_id"),
        ({**GOOD, "transaction_id": 2**64}, "transaction_id"),  # beyond int64
        ({**GOOD, "transaction_id": -1}, "transaction_id"),
        ([GOOD], "Transaction"),  # a list where one payment is expected
    ],
)
def test_a_bad_payment_is_a_400_naming_the_field(server, body, names):
    with server.client() as client:
        answer = client.post("/score", json=body)
    assert answer.status_code == 400, answer.text
    assert names in answer.text


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"transaction_id": 1, "transacted_at": ', "application/json"),  # malformed JSON
        (b"", "application/json"),
        (b"\xff\xfe not utf-8", "application/json"),
        (b"transaction_id=1&amount=5", "text/plain"),  # the wrong content type
        (b'{"transaction_id": 1, "amount": NaN}', "application/json"),
    ],
)
def test_a_body_that_is_not_a_payment_is_a_4xx_never_a_500(server, content, content_type):
    with server.client() as client:
        answer = client.post("/score", content=content, headers={"content-type": content_type})
    assert 400 <= answer.status_code < 500, answer.text


def test_score_batch_answers_in_order_and_refuses_an_oversized_batch(server, offline):
    payments = as_json(offline.iloc[:3])[::-1]
    with server.client() as client:
        answered = client.post("/score_batch", json=payments)
        oversized = client.post("/score_batch", json=as_json(offline.iloc[:1]) * (MAX_BATCH + 1))
        empty = client.post("/score_batch", json=[])
    assert [s["transaction_id"] for s in answered.json()] == [p["transaction_id"] for p in payments]
    assert oversized.status_code == 400 and str(MAX_BATCH) in oversized.text
    assert empty.status_code == 400


def test_health_metrics_and_openapi_are_served(server):
    with server.client() as client:
        assert client.get("/livez").status_code == 200
        assert client.get("/readyz").status_code == 200
        metrics = client.get("/metrics").text
        spec = client.get("/docs.json").json()
    assert 'keel_scored_payments_total{decision="approve",endpoint="score"}' in metrics
    assert "bentoml_service_request_duration_seconds" in metrics
    assert {"/score", "/score_batch", "/score_file/submit"} <= set(spec["paths"])
    assert "Transaction" in str(spec["components"])


def test_a_parquet_file_of_payments_is_scored_row_for_row_with_bad_rows_named(
    server, replayed, offline, tmp_path
):
    payments = offline[FACTS].iloc[:250].copy()
    payments.loc[payments.index[7], "amount"] = -1.0  # a row the contract refuses
    source = tmp_path / "payments.parquet"
    payments.to_parquet(source, index=False)

    with server.client() as client:  # the task protocol, as an application speaks it
        submitted = client.post(
            "/score_file/submit",
            files={"payments": ("payments.parquet", source.read_bytes(), "application/vnd.apache.parquet")},
        )
        assert submitted.status_code == 200, submitted.text
        task = {"task_id": submitted.json()["task_id"]}
        deadline = time.monotonic() + TASK_SECONDS
        while (status := client.get("/score_file/status", params=task).json()["status"]) == "in_progress":
            if time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert status == "completed", (status, client.get("/score_file/get", params=task).text)
        result = client.get("/score_file/get", params=task)
    scored = pd.read_parquet(io.BytesIO(result.content))

    assert scored["transaction_id"].tolist() == payments["transaction_id"].tolist()
    bad = scored.iloc[7]
    assert pd.isna(bad["fraud_probability"]) and "amount" in bad["error"]
    good = scored.drop(index=7)
    assert good["error"].isna().all()
    expected = offline["fraud_probability"].iloc[:250].drop(index=7)
    assert (good["fraud_probability"] - expected.to_numpy()).abs().max() < 1e-9


def test_without_its_online_store_the_service_is_live_but_not_ready_and_says_why(
    champion_bento, tmp_path, day
):
    env = {
        "KEEL_ONLINE_STORE_URL": f"sqlite:///{tmp_path / 'never_published.sqlite'}",
        "KEEL_PREDICTION_LOG_URI": str(tmp_path / "spool"),
    }
    with (
        serving(
            champion_bento["bento"], env, tmp_path / "serve.log", ready="/livez", timeout=START_SECONDS
        ) as server,
        server.client() as client,
    ):
        ready = client.get("/readyz")
        answer = client.post(
            "/score",
            json={
                "transaction_id": 1,
                "transacted_at": f"{day.isoformat()}T10:00:00",
                "customer_id": 1,
                "terminal_id": 1,
                "amount": 5.0,
            },
        )
    assert ready.status_code == 503
    assert answer.status_code == 503 and answer.json() == {"error": "no online features are published"}
    assert "retry-after" in answer.headers
    assert "materialize fraud/online_features" in server.wait_for_log(
        lambda text: "503 POST" in text, timeout=LOG_SECONDS
    )


@pytest.mark.redis
def test_the_service_gives_the_same_scores_from_a_real_redis(
    redis_url, champion_bento, definitions, instance, day, tmp_path
):
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()  # database 15 is the tests' own
    try:
        published = publish_snapshot(definitions, instance, redis_url, day - timedelta(days=1))
        assert published["published"]
        env = {
            "KEEL_ONLINE_STORE_URL": redis_url,
            "KEEL_PREDICTION_LOG_URI": str(tmp_path / "spool"),
            # The service's 0.5 s is a production choice, not a bound a busy test machine keeps.
            "KEEL_ONLINE_STORE_TIMEOUT_SECONDS": str(REDIS_TIMEOUT_SECONDS),
        }
        with (
            serving(champion_bento["bento"], env, tmp_path / "serve.log", timeout=START_SECONDS) as server,
            server.client() as http,
        ):
            online = replay(http, definitions, day)
        offline = batch_scores(definitions, day).set_index("transaction_id").loc[online["transaction_id"]]
        assert (online["fraud_probability"] - offline["fraud_probability"].to_numpy()).abs().max() < 1e-9
        assert set(online["feature_snapshot_date"]) == {(day - timedelta(days=1)).isoformat()}
    finally:
        client.flushdb()
        client.close()


def test_a_promotion_builds_a_new_bento_and_the_previous_one_still_serves_its_model(
    champion_bento, definitions, instance, store_of_the_day_before, offline, tmp_path
):
    run = definitions.resolve_job_def("fraud_train_and_promote").execute_in_process(
        instance=instance, asset_selection=[FRAUD_MODEL, EVALUATION, PRODUCTION_MODEL, BENTO]
    )
    assert run.success
    promoted, rebuilt = metadata_of(run, PRODUCTION_MODEL), metadata_of(run, BENTO)

    assert rebuilt["model_version"] == promoted["model_tag"] != champion_bento["model_version"]
    assert rebuilt["bento"] != champion_bento["bento"] and not rebuilt["reused"]
    history = bentos.built(bentos.bento_name(NAMESPACE, SERVICE))
    assert {champion_bento["bento"], rebuilt["bento"]} <= {b.tag for b in history}

    env = {
        "KEEL_ONLINE_STORE_URL": store_of_the_day_before,
        "KEEL_PREDICTION_LOG_URI": str(tmp_path / "spool"),
    }
    with (
        serving(champion_bento["bento"], env, tmp_path / "serve.log", timeout=START_SECONDS) as previous,
        previous.client() as client,
    ):
        answer = client.post("/score", json=as_json(offline.iloc[:1])[0])
    assert answer.status_code == 200
    assert answer.json()["model_version"] == champion_bento["model_version"]
