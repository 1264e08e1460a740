"""The scoring service under overload and failures, over HTTP on loopback.

API keys (a rotation), backpressure (503 overloaded, at once) and request time limits (504), the
online store going down (503 naming why, and a circuit breaker), and SIGTERM in the middle of traffic
(every request accepted gets its answer, every 200 is in the prediction log). No assert here is on
elapsed time: the suite passes on a busy machine; the timings are measured in benchmarks/.
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
from bento_server import private_redis, serving
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
    log = secured.wait_for_log(lambda text: "401 POST /score" in text)  # written when the worker gets to it
    assert not any(key in log for key in KEYS) and "keel-test-key-that-is-not-ours" not in log


def load(url: str, path: str, body, clients: int, requests_each: int, headers=None):
    """``clients`` threads each sending ``requests_each`` requests; the responses."""

    def client(_):
        with httpx.Client(base_url=url, timeout=120, headers=headers) as http:
            return [http.post(path, json=body) for _ in range(requests_each)]

    with ThreadPoolExecutor(clients) as pool:
        return [answer for answers in pool.map(client, range(clients)) for answer in answers]


def test_overload_is_refused_with_a_503_naming_it_while_liveness_answers(
    champion_bento, store_of_the_day_before, offline, tmp_path
):
    batch = (as_json(offline) * 3)[:1000]  # each request keeps the model busy for a while
    env = env_for(
        store_of_the_day_before, tmp_path, KEEL_MAX_IN_FLIGHT="2", BENTOML_CONFIG_OPTIONS=ONE_WORKER
    )
    with serving(champion_bento["bento"], env, tmp_path / "serve.log") as server:
        liveness = []

        def probe():
            while not done.is_set():
                liveness.append(httpx.get(f"{server.url}/livez", timeout=120).status_code)
                time.sleep(0.05)

        done = threading.Event()
        prober = threading.Thread(target=probe)
        prober.start()
        try:
            answers = load(server.url, "/score_batch", batch, clients=16, requests_each=6)
        finally:
            done.set()
            prober.join()
        with server.client() as client:
            after = client.post("/score_batch", json=batch[:10])

    statuses = pd.Series([answer.status_code for answer in answers]).value_counts().to_dict()
    assert set(statuses) == {200, 503}, statuses
    refused = [answer for answer in answers if answer.status_code == 503]
    assert all(answer.json()["error"].startswith("overloaded") for answer in refused)
    assert all(answer.headers["retry-after"] == "1" for answer in refused)
    assert liveness and set(liveness) == {200}
    assert after.status_code == 200


def test_a_request_over_the_time_limit_gets_a_504_not_a_hang(
    champion_bento, store_of_the_day_before, offline, tmp_path
):
    batch = (as_json(offline) * 3)[:1000]
    env = env_for(
        store_of_the_day_before,
        tmp_path,
        BENTOML_CONFIG_OPTIONS=f"{ONE_WORKER} services.fraud_scorer.traffic.timeout=0.05",
    )
    with serving(champion_bento["bento"], env, tmp_path / "serve.log") as server:
        answers = load(server.url, "/score_batch", batch, clients=24, requests_each=3)
    statuses = {answer.status_code for answer in answers}
    assert statuses <= {200, 504} and 504 in statuses, statuses


def test_when_redis_hangs_or_dies_scoring_answers_503_naming_why_and_recovers(
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
            assert client.post("/score", json=payment).status_code == 200

            os.kill(redis.pid, signal.SIGSTOP)  # Redis hangs: connections open, no answers
            hung = [client.post("/score", json=payment) for _ in range(3)]  # each waits the timeout
            tripped = [client.post("/score", json=payment) for _ in range(5)]  # the breaker is open
            not_ready = client.get("/readyz")

            os.kill(redis.pid, signal.SIGCONT)
            recovered = None
            for _ in range(600):  # the breaker's pause, then one trial call, which succeeds
                if (recovered := client.post("/score", json=payment)).status_code == 200:
                    break
                time.sleep(0.2)
            ready_again = client.get("/readyz")

            redis.kill()  # Redis gone: connection refused
            redis.wait()
            dead = [client.post("/score", json=payment) for _ in range(4)]
            log = server.wait_for_log(lambda text: "not called" in text)

    assert [answer.status_code for answer in hung] == [503] * 3
    assert {answer.json()["error"] for answer in hung} == {"the online feature store is not reachable"}
    assert [answer.status_code for answer in tripped] == [503] * 5
    paused = "the online feature store failed repeatedly; calls to it are paused"
    assert {answer.json()["error"] for answer in tripped} == {paused}
    assert all(answer.headers["retry-after"] == "2" for answer in hung + tripped)
    assert not_ready.status_code == 503
    assert recovered.status_code == 200 and ready_again.status_code == 200
    assert [answer.status_code for answer in dead] == [503] * 4
    assert "not called" in log and "Traceback" not in log  # the breaker's reason, one line each


def test_sigterm_under_load_answers_every_accepted_request_and_logs_every_200(
    champion_bento, store_of_the_day_before, offline, tmp_path
):
    """64 clients post /score on keep-alive connections, one more holds an idle connection, and the
    server gets SIGTERM. Each request is answered, or its connection is refused (nothing was sent):
    none is sent and then cut off. The idle connection's next request is answered too."""
    spool = tmp_path / "spool"
    payments = as_json(offline)
    ids = count(10**12)  # transaction ids no other test (nor the simulator) uses
    outcomes, lock = [], threading.Lock()  # (response or "refused" or the transport error, after SIGTERM)
    signalled = threading.Event()

    def payment() -> dict:
        with lock:
            transaction_id = next(ids)
        return {**payments[transaction_id % len(payments)], "transaction_id": transaction_id}

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            while True:
                late = signalled.is_set()
                try:
                    outcome = http.post("/score", json=payment())
                except httpx.ConnectError:  # refused: the server stopped accepting; nothing was sent
                    outcome = "refused"
                except httpx.TransportError as error:  # sent, then the connection closed unanswered
                    outcome = error
                with lock:
                    outcomes.append((outcome, late))
                if late and not isinstance(outcome, httpx.Response):
                    return  # a real client would go to another replica

    def idle_then_send() -> tuple[httpx.Response, httpx.Response]:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            before = http.post("/score", json=payment())
            server.wait_for_log(lambda text: "SIGTERM: stopped accepting" in text)
            return before, http.post("/score", json=payment())  # on the connection kept alive

    with (
        serving(
            champion_bento["bento"], env_for(store_of_the_day_before, tmp_path), tmp_path / "serve.log"
        ) as server,
        ThreadPoolExecutor(65) as pool,
    ):
        idle = pool.submit(idle_then_send)
        clients = [pool.submit(client) for _ in range(64)]
        while len(outcomes) < 640:  # full load: ten answers a client on average
            time.sleep(0.1)
        signalled.set()
        exit_code = server.stop()  # SIGTERM to bentoml serve's main process, in the middle of it
        for finished in clients:
            finished.result()
        before, after = idle.result()

    cut_off = [outcome for outcome, _ in outcomes if isinstance(outcome, httpx.TransportError)]
    assert not cut_off, cut_off[:5]
    assert before.status_code == 200 and after.status_code == 200
    assert after.headers["connection"] == "close"
    answered = [(outcome, late) for outcome, late in outcomes if isinstance(outcome, httpx.Response)]
    assert any(outcome == "refused" for outcome, _ in outcomes)  # it did stop accepting under load
    assert exit_code == 0
    statuses = pd.Series([answer.status_code for answer, _ in answered]).value_counts().to_dict()
    assert set(statuses) <= {200, 503}, statuses  # a refusal while stopping at worst, never a 500
    ok = {
        answer.json()["transaction_id"]: answer.json()["fraud_probability"]
        for answer, _ in [*answered, (before, False), (after, True)]
        if answer.status_code == 200
    }
    assert len(ok) > 640
    assert any(late for answer, late in answered if answer.status_code == 200)  # drained, not cut
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
