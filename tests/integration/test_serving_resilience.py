"""The scoring service under hostile callers, overload and failures, over HTTP on loopback.

API keys, a fuzz test against the service's own OpenAPI document, backpressure (429) and request time
limits (504), the online store going down (503 and a circuit breaker, never a hang), and SIGTERM in
the middle of traffic (every 200 is in the prediction log).
"""

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from itertools import count

import httpx
import pandas as pd
import pytest
import schemathesis
from bento_server import private_redis, serving
from hypothesis import HealthCheck, given, settings, strategies
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from serving_world import as_json, publish_snapshot

pytestmark = pytest.mark.slow

KEYS = ["keel-test-key-current-0123456789", "keel-test-key-next-9876543210"]
ONE_WORKER = "services.fraud_scorer.workers=1"


def env_for(store_url: str, tmp_path, **extra) -> dict[str, str]:
    return {"KEEL_ONLINE_STORE_URL": store_url, "KEEL_PREDICTION_LOG_URI": str(tmp_path / "spool"), **extra}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def secured(champion_bento, store_of_the_day_before, tmp_path_factory):
    """The service with two API keys (a rotation in progress)."""
    folder = tmp_path_factory.mktemp("secured")
    secret = folder / "api-keys"  # as a mounted Kubernetes secret: one key per line
    secret.write_text(f"# rotated 2026-11\n{KEYS[1]}\n")
    env = env_for(store_of_the_day_before, folder, KEEL_API_KEYS=KEYS[0], KEEL_API_KEYS_FILE=str(secret))
    with serving(champion_bento["bento"], env, folder / "serve.log") as running:
        yield running


def test_with_api_keys_scoring_needs_one_and_probes_stay_open(secured, offline):
    payment = as_json(offline.iloc[:1])[0]
    with secured.client() as client:
        missing = client.post("/score", json=payment)
        wrong = client.post("/score", json=payment, headers=bearer("keel-test-key-that-is-not-ours"))
        basic = client.post("/score", json=payment, headers={"Authorization": f"Basic {KEYS[0]}"})
        task = client.post("/score_file/submit", files={"payments": b"PAR1"})
        answers = [client.post("/score", json=payment, headers=bearer(key)) for key in KEYS]
        probes = {
            path: client.get(path).status_code for path in ("/livez", "/readyz", "/metrics", "/docs.json")
        }

    assert missing.status_code == 401 and "Authorization" in missing.json()["error"]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid API key"
    assert basic.status_code == 401 and task.status_code == 401
    assert [answer.status_code for answer in answers] == [200, 200]  # both keys of the rotation
    assert probes == {"/livez": 200, "/readyz": 200, "/metrics": 200, "/docs.json": 200}
    log = secured.log.read_text()
    assert "401 POST /score" in log
    assert not any(key in log for key in KEYS) and "keel-test-key-that-is-not-ours" not in log


def test_production_refuses_to_start_without_api_keys(champion_bento, store_of_the_day_before, tmp_path):
    env = env_for(store_of_the_day_before, tmp_path, KEEL_ENV="prod")
    with (
        pytest.raises(TimeoutError, match="not ready"),
        serving(champion_bento["bento"], env, tmp_path / "serve.log", ready="/livez", timeout=20),
    ):
        pass  # never live: every worker stops at its first line (a container's worker is not respawned)
    message = "KEEL_ENV=prod: the scoring service does not start without API keys"
    assert message in (tmp_path / "serve.log").read_text()


def test_fuzzing_the_openapi_document_finds_no_5xx_and_no_answer_outside_the_schema(secured):
    """Property-based: schemathesis generates valid and invalid bodies, query strings and files for
    every operation of the service's /docs.json (40 examples each, deterministic). Nothing may answer
    5xx, or a status, content type or body the document does not declare."""
    schema = schemathesis.openapi.from_url(f"{secured.url}/docs.json")
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    fuzzed = []
    for result in schema.get_all_operations():
        operation = result.ok()
        cases = strategies.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )

        @given(case=cases)
        @settings(
            max_examples=40,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case):
            case.call_and_validate(base_url=secured.url, headers=bearer(KEYS[0]), checks=checks, timeout=30)

        call()
        fuzzed.append(operation.label)
    assert {"POST /score", "POST /score_batch", "POST /score_file/submit"} <= set(fuzzed), fuzzed


def load(url: str, path: str, body, clients: int, requests_each: int, headers=None):
    """``clients`` threads each sending ``requests_each`` requests; (status, seconds) per request."""

    def client(_):
        results = []
        with httpx.Client(base_url=url, timeout=30, headers=headers) as http:
            for _ in range(requests_each):
                started = time.perf_counter()
                status = http.post(path, json=body).status_code
                results.append((status, time.perf_counter() - started))
        return results

    with ThreadPoolExecutor(clients) as pool:
        return [result for results in pool.map(client, range(clients)) for result in results]


def test_overload_is_refused_fast_with_429_while_liveness_answers(
    champion_bento, store_of_the_day_before, offline, tmp_path
):
    batch = (as_json(offline) * 3)[:1000]  # each request keeps the model busy for a while
    env = env_for(
        store_of_the_day_before,
        tmp_path,
        BENTOML_CONFIG_OPTIONS=f"{ONE_WORKER} services.fraud_scorer.traffic.max_concurrency=2",
    )
    with serving(champion_bento["bento"], env, tmp_path / "serve.log") as server:
        liveness = []

        def probe():
            while not done.is_set():
                started = time.perf_counter()
                status = httpx.get(f"{server.url}/livez", timeout=10).status_code
                liveness.append((status, time.perf_counter() - started))
                time.sleep(0.05)

        done = threading.Event()
        prober = threading.Thread(target=probe)
        prober.start()
        try:
            results = load(server.url, "/score_batch", batch, clients=16, requests_each=6)
        finally:
            done.set()
            prober.join()
        with server.client() as client:
            after = client.post("/score_batch", json=batch[:10])

    statuses = pd.Series([status for status, _ in results]).value_counts().to_dict()
    refused = [seconds for status, seconds in results if status == 429]
    assert set(statuses) == {200, 429}, statuses
    assert max(refused) < 0.5  # refused at once, not queued
    assert all(status == 200 for status, _ in liveness) and max(seconds for _, seconds in liveness) < 1.0
    assert after.status_code == 200


def test_a_request_over_the_time_limit_gets_a_504_not_a_hang(
    champion_bento, store_of_the_day_before, offline, tmp_path
):
    batch = (as_json(offline) * 3)[:1000]
    env = env_for(
        store_of_the_day_before,
        tmp_path,
        BENTOML_CONFIG_OPTIONS=f"{ONE_WORKER} services.fraud_scorer.traffic.timeout=0.25",
    )
    with serving(champion_bento["bento"], env, tmp_path / "serve.log") as server:
        results = load(server.url, "/score_batch", batch, clients=24, requests_each=3)
    statuses = {status for status, _ in results}
    assert statuses <= {200, 504} and 504 in statuses, statuses
    assert max(seconds for _, seconds in results) < 0.25 + 1.0


def test_when_redis_hangs_or_dies_scoring_answers_503_fast_and_recovers(
    champion_bento, definitions, instance, offline, day, tmp_path, redis_server_program
):
    payment = as_json(offline.iloc[:1])[0]
    with private_redis(redis_server_program) as (url, redis):
        publish_snapshot(definitions, instance, url, day - timedelta(days=1))
        env = env_for(
            url,
            tmp_path,
            KEEL_ONLINE_STORE_TIMEOUT_SECONDS="0.3",
            KEEL_ONLINE_STORE_RETRY_SECONDS="2",
            BENTOML_CONFIG_OPTIONS=ONE_WORKER,
        )
        with (
            serving(champion_bento["bento"], env, tmp_path / "serve.log") as server,
            server.client() as client,
        ):

            def timed(method, path, **kwargs):
                started = time.perf_counter()
                answer = client.request(method, path, **kwargs)
                return answer.status_code, time.perf_counter() - started

            assert timed("POST", "/score", json=payment)[0] == 200

            os.kill(redis.pid, signal.SIGSTOP)  # Redis hangs: connections open, no answers
            hung = [timed("POST", "/score", json=payment) for _ in range(3)]  # each waits the timeout
            tripped = [timed("POST", "/score", json=payment) for _ in range(5)]  # breaker open: no wait
            not_ready = timed("GET", "/readyz")

            os.kill(redis.pid, signal.SIGCONT)
            time.sleep(2.2)  # the breaker's pause: then one trial call, which succeeds
            recovered = timed("POST", "/score", json=payment)
            ready_again = timed("GET", "/readyz")

            redis.kill()  # Redis gone: connection refused
            redis.wait()
            dead = [timed("POST", "/score", json=payment) for _ in range(4)]

    assert [status for status, _ in hung] == [503] * 3
    assert max(seconds for _, seconds in hung) < 2.0  # the store's timeout, not a hang
    assert [status for status, _ in tripped] == [503] * 5
    assert max(seconds for _, seconds in tripped) < 0.1  # refused without asking Redis
    assert not_ready[0] == 503 and not_ready[1] < 0.5
    assert recovered[0] == 200 and ready_again[0] == 200
    assert [status for status, _ in dead] == [503] * 4
    log = (tmp_path / "serve.log").read_text()
    assert "online feature store" in log and "not called" in log  # the breaker's reason, logged


def test_sigterm_under_load_drains_in_flight_requests_and_logs_every_200(
    champion_bento, store_of_the_day_before, offline, tmp_path
):
    spool = tmp_path / "spool"
    payments = as_json(offline)
    ids = count(10**12)  # transaction ids no other test (nor the simulator) uses
    answered, lock = [], threading.Lock()
    stopping = threading.Event()

    def client(number):
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while True:
                with lock:
                    transaction_id = next(ids)
                payment = {**payments[transaction_id % len(payments)], "transaction_id": transaction_id}
                try:
                    answer = http.post("/score", json=payment)
                except httpx.TransportError:  # the server stopped accepting: this client is done
                    return
                with lock:
                    answered.append((transaction_id, answer, stopping.is_set()))

    with (
        serving(
            champion_bento["bento"], env_for(store_of_the_day_before, tmp_path), tmp_path / "serve.log"
        ) as server,
        ThreadPoolExecutor(16) as pool,
    ):
        clients = [pool.submit(client, number) for number in range(16)]
        time.sleep(2.0)  # full load
        stopping.set()
        exit_code = server.stop()  # SIGTERM in the middle of it
        for finished in clients:
            finished.result(timeout=30)

    assert exit_code == 0
    statuses = pd.Series([answer.status_code for _, answer, _ in answered]).value_counts().to_dict()
    assert set(statuses) <= {200, 503}, statuses  # a refusal while stopping at worst, never a 500
    ok = {
        transaction_id: answer.json()["fraud_probability"]
        for transaction_id, answer, _ in answered
        if answer.status_code == 200
    }
    assert len(ok) > 100
    assert any(late for _, answer, late in answered if answer.status_code == 200)  # drained, not cut
    spooled = pd.concat(
        [pd.read_parquet(f) for f in spool.rglob("*.parquet") if not f.name.startswith("_")],
        ignore_index=True,
    )
    assert spooled["prediction_id"].is_unique
    logged = spooled.set_index("transaction_id")
    assert set(ok) <= set(logged.index)  # every 200 is in the log
    assert logged.loc[list(ok), "fraud_probability"].tolist() == list(ok.values())
    for column in (
        "amount",
        "customer_transactions_30d",
        "terminal_fraud_rate_7d",
        "latency_ms",
        "model_version",
    ):
        assert logged[column].notna().all(), column
