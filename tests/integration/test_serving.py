"""The scoring service over HTTP: the Bento the main job built, served by `bentoml serve` on loopback.

The service reads the online snapshot of day D-1's close and scores payments of day D; the batch
pipeline scored the same payments offline. They must agree.
"""

import io
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import bentoml
import dagster as dg
import pandas as pd
import pytest
from bento_server import serving

from keel import bentos
from keel.features import FEATURE_TABLE
from platform_assets.defs.models.assets import EVALUATION, FRAUD_MODEL, PRODUCTION_MODEL
from platform_assets.defs.serving import assets as serving_assets
from resources.lake import LocalLake
from resources.online_store import OnlineFeatureStore
from serving.schemas import MAX_BATCH

pytestmark = pytest.mark.slow

BENTO = dg.AssetKey(["serving", "fraud_scorer_bento"])
ONLINE_FEATURES = dg.AssetKey(["serving", "online_features"])
SCORES = dg.AssetKey(["scores", "transaction_scores"])
FACTS = ["transaction_id", "transacted_at", "customer_id", "terminal_id", "amount"]


def metadata_of(run, key):
    """The metadata of the run's materialization of ``key`` (of its last partition, for a range)."""
    event = [e for e in run.get_asset_materialization_events() if e.asset_key == key][-1]
    return {name: value.value for name, value in event.materialization.metadata.items()}


def as_json(frame: pd.DataFrame) -> list[dict]:
    return [
        {**row, "transacted_at": row["transacted_at"].isoformat()} for row in frame[FACTS].to_dict("records")
    ]


@pytest.fixture(scope="module")
def day(world):
    return world.last_day


@pytest.fixture(scope="module")
def champion_bento(backfill, definitions, instance, world, day):
    """The Bento of the model in production now, and that model's batch scores of day D."""
    built = definitions.resolve_job_def("train_and_promote").execute_in_process(
        instance=instance, asset_selection=[BENTO]
    )
    rescored = definitions.resolve_job_def("keel_pipeline").execute_in_process(
        instance=instance, partition_key=day.isoformat(), asset_selection=[SCORES]
    )
    assert built.success and rescored.success
    return metadata_of(built, BENTO)


def publish_snapshot(definitions, instance, url: str, closed_day):
    run = dg.materialize(
        [serving_assets.online_features],
        partition_key=closed_day.isoformat(),
        resources={**definitions.resources, "online_store": OnlineFeatureStore(url=url)},
        instance=instance,
    )
    assert run.success
    return metadata_of(run, ONLINE_FEATURES)


@pytest.fixture(scope="module")
def store_of_the_day_before(definitions, instance, day, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('online') / 'online_features.sqlite'}"
    published = publish_snapshot(definitions, instance, url, day - timedelta(days=1))
    assert published["published"] and published["closed_day"] == (day - timedelta(days=1)).isoformat()
    return url


@pytest.fixture(scope="module")
def spool(tmp_path_factory):
    return tmp_path_factory.mktemp("lake") / serving_assets.SPOOL


@pytest.fixture(scope="module")
def server(champion_bento, store_of_the_day_before, spool, tmp_path_factory):
    env = {"KEEL_ONLINE_STORE_URL": store_of_the_day_before, "KEEL_PREDICTION_LOG_URI": str(spool)}
    with serving(champion_bento["bento"], env, tmp_path_factory.mktemp("serve") / "serve.log") as running:
        yield running


@pytest.fixture(scope="module")
def offline(definitions, champion_bento, day):
    """A sample of day D's payments with the batch pipeline's scores and new-entity flags."""
    with definitions.resources["warehouse"].connect() as connection:
        frame = connection.execute(
            f"select f.*, s.fraud_probability, s.model_version from {FEATURE_TABLE} f "
            "join ml.transaction_scores s using (transaction_id) "
            "where f.transaction_date = ? "
            "and (f.transaction_id % 13 = 0 or f.customer_is_new or f.terminal_is_new) "
            "order by f.transaction_id limit 400",
            [day],
        ).df()
    assert len(frame) >= 200
    assert set(frame["model_version"]) == {champion_bento["model_version"]}
    return frame


def test_the_main_job_built_a_bento_of_the_promoted_model_and_published_the_last_day(backfill, world):
    bento = metadata_of(backfill, BENTO)
    promoted = metadata_of(backfill, PRODUCTION_MODEL)
    online = metadata_of(backfill, ONLINE_FEATURES)

    assert bento["model_version"] == promoted["model_tag"]
    assert bento["bento"].startswith(f"fraud_scorer:{promoted['model_tag'].split(':')[1]}-")
    assert bentoml.bentos.get(bento["bento"]).info.labels["model_tag"] == promoted["model_tag"]
    assert online["published"] and online["closed_day"] == world.last_day.isoformat()
    assert online["customers"] > 1000 and online["terminals"] > 1000


def test_online_scores_equal_the_batch_scores_of_the_same_payments(server, offline, champion_bento, day):
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


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"transaction_id": 1, "customer_id": 1, "terminal_id": 1, "amount": 5.0}, "transacted_at"),
        (
            {
                "transaction_id": 1,
                "transacted_at": "2026-02-04T10:00:00",
                "customer_id": 1,
                "terminal_id": 1,
                "amount": -3,
            },
            "amount",
        ),
        (
            {
                "transaction_id": 1,
                "transacted_at": "2026-02-04T10:00:00",
                "customer_id": 1,
                "terminal_id": 1,
                "amount": 3,
                "is_fraud": 1,
            },
            "is_fraud",
        ),
        (
            {
                "transaction_id": 1,
                "transacted_at": "2026-02-04T10:00:00+02:00",
                "customer_id": 1,
                "terminal_id": 1,
                "amount": 3,
            },
            "transacted_at",
        ),
    ],
)
def test_a_bad_payment_is_a_400_naming_the_field(server, body, names):
    with server.client() as client:
        answer = client.post("/score", json=body)
    assert answer.status_code == 400
    assert names in answer.text


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


def test_a_parquet_file_of_payments_is_scored_row_for_row_with_bad_rows_named(server, offline, tmp_path):
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
        for _ in range(240):
            status = client.get("/score_file/status", params=task).json()["status"]
            if status != "in_progress":
                break
            time.sleep(0.25)
        assert status == "completed", client.get("/score_file/get", params=task).text
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
        serving(champion_bento["bento"], env, tmp_path / "serve.log", ready="/livez") as server,
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
    # BentoML answers every 5xx with a generic body; the reason goes to the server's log.
    assert answer.status_code == 503
    assert "materialize serving/online_features" in (tmp_path / "serve.log").read_text()


@pytest.mark.redis
def test_the_service_gives_the_same_scores_from_a_real_redis(
    redis_url, champion_bento, definitions, instance, offline, day, tmp_path
):
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()  # database 15 is the tests' own
    try:
        published = publish_snapshot(definitions, instance, redis_url, day - timedelta(days=1))
        assert published["published"]
        env = {"KEEL_ONLINE_STORE_URL": redis_url, "KEEL_PREDICTION_LOG_URI": str(tmp_path / "spool")}
        with serving(champion_bento["bento"], env, tmp_path / "serve.log") as server, server.client() as http:
            answered = http.post("/score_batch", json=as_json(offline))
        assert answered.status_code == 200, answered.text
        online = pd.DataFrame(answered.json())
        assert (online["fraud_probability"] - offline["fraud_probability"]).abs().max() < 1e-9
        assert set(online["feature_snapshot_date"]) == {(day - timedelta(days=1)).isoformat()}
    finally:
        client.flushdb()
        client.close()


def test_every_scored_payment_is_in_the_prediction_log_after_a_sigterm(
    server, spool, offline, definitions, instance, day
):
    """Stops the module's server: keep this after every test that uses it."""
    first_id = 10**12  # transaction ids no other test (nor the simulator) uses
    payments = [
        {**payment, "transaction_id": first_id + i}
        for i, payment in enumerate(as_json(offline.iloc[:50]) * 4)
    ]

    def score(payment):
        with server.client() as client:
            return client.post("/score", json=payment)

    with ThreadPoolExecutor(max_workers=4) as pool:  # concurrent, so the model batches them
        answers = list(pool.map(score, payments))
    assert server.stop() == 0  # right away: the last rows are still in the buffer

    spooled = pd.concat(
        [pd.read_parquet(f) for f in spool.rglob("*.parquet") if not f.name.startswith("_")],
        ignore_index=True,
    )
    assert spooled["prediction_id"].is_unique
    # Every payment that got a 200 is logged once, with the score it got; nothing else is.
    scored = {
        p["transaction_id"]: a.json()["fraud_probability"]
        for p, a in zip(payments, answers, strict=True)
        if a.status_code == 200
    }
    assert len(scored) > len(payments) / 2
    ours = spooled[spooled["transaction_id"] >= first_id]
    assert sorted(ours["transaction_id"]) == sorted(scored)
    logged = ours.set_index("transaction_id").loc[list(scored)]
    assert logged["fraud_probability"].tolist() == list(scored.values())
    for column in (
        "amount",
        "customer_transactions_30d",
        "terminal_fraud_rate_7d",
        "latency_ms",
        "model_version",
    ):
        assert logged[column].notna().all(), column

    lake = LocalLake(root=str(spool.parent))  # the spool is a folder of this lake
    collected = dg.materialize(
        [serving_assets.prediction_log],
        partition_key=day.isoformat(),
        resources={**definitions.resources, "lake": lake},
        instance=instance,
    )
    assert collected.success
    log = lake.read_partition(serving_assets.PREDICTION_LOG, day)
    assert len(log) == (spooled["transacted_at"].dt.date == day).sum()


def test_a_promotion_builds_a_new_bento_and_the_previous_one_still_serves_its_model(
    champion_bento, definitions, instance, store_of_the_day_before, offline, tmp_path
):
    run = definitions.resolve_job_def("train_and_promote").execute_in_process(
        instance=instance, asset_selection=[FRAUD_MODEL, EVALUATION, PRODUCTION_MODEL, BENTO]
    )
    assert run.success
    promoted, rebuilt = metadata_of(run, PRODUCTION_MODEL), metadata_of(run, BENTO)

    assert rebuilt["model_version"] == promoted["model_tag"] != champion_bento["model_version"]
    assert rebuilt["bento"] != champion_bento["bento"] and not rebuilt["reused"]
    assert {champion_bento["bento"], rebuilt["bento"]} <= {b.tag for b in bentos.built()}

    env = {
        "KEEL_ONLINE_STORE_URL": store_of_the_day_before,
        "KEEL_PREDICTION_LOG_URI": str(tmp_path / "spool"),
    }
    with (
        serving(champion_bento["bento"], env, tmp_path / "serve.log") as previous,
        previous.client() as client,
    ):
        answer = client.post("/score", json=as_json(offline.iloc[:1])[0])
    assert answer.status_code == 200
    assert answer.json()["model_version"] == champion_bento["model_version"]
