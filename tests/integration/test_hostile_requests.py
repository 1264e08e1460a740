"""The scoring service against hostile callers, over HTTP on loopback: every bad request is a 4xx
naming the field (never a 500, never a hang), refusals are one log line without a value or a traceback,
a 503 names its reason with Retry-After, the service refuses to start unsafe, and the OpenAPI document
is exactly what the service does (schemathesis with all its default checks finds nothing).
"""

import io
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bento_server import serving
from serving_world import FACTS, as_json
from world_settings import NAMESPACE

pytestmark = pytest.mark.slow

KEY = "keel-test-key-hostile-0123456789"
MARKER = "SECRET-7Q4Z-MARKER"  # sent inside bad requests: must never reach the server's log
PARQUET = "application/vnd.apache.parquet"


def bearer(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def secured(champion_bento, store_of_the_day_before, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    env = {
        "KEEL_ONLINE_STORE_URL": store_of_the_day_before,
        "KEEL_PREDICTION_LOG_URI": str(folder / "spool"),
        "KEEL_API_KEYS": KEY,
    }
    with serving(champion_bento["bento"], env, folder / "serve.log") as running:
        yield running


def post(server, path, **kwargs) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=60, headers=bearer()) as client:
        return client.post(path, **kwargs)


def parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def payments_file(offline, rows: int = 5) -> bytes:
    return parquet(pa.Table.from_pandas(offline[FACTS].iloc[:rows], preserve_index=False))


def test_json_nested_a_thousand_deep_is_a_400(secured):
    for body in ("[" * 1000 + "]" * 1000, '{"a":' * 1000 + "1" + "}" * 1000):
        answer = post(secured, "/score", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 400, answer.text
        assert answer.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize(
    ("files", "data", "field"),
    [
        ({"other": ("p.parquet", b"PAR1", PARQUET)}, None, "other"),  # a Parquet file under another name
        ([("payments", (None, "http://169.254.169.254/latest/meta-data/"))], None, "payments"),  # text
        ({"payments": ("p.parquet", b"PAR1", PARQUET), "extra": ("e", b"x", "text/plain")}, None, "extra"),
    ],
    ids=["file under another field", "text instead of the file", "an extra file"],
)
@pytest.mark.parametrize("path", ["/score_file", "/score_file/submit"])
def test_a_form_without_exactly_its_file_is_a_400_naming_the_field(secured, path, files, data, field):
    answer = post(secured, path, files=files, data=data)
    assert answer.status_code == 400, answer.text
    assert field in {str(problem["loc"][0]) for problem in answer.json()["detail"]}


@pytest.mark.parametrize("path", ["/score_file", "/score_file/submit"])
def test_a_request_without_its_file_is_a_400_and_no_task_is_started(secured, path):
    empty_form = post(
        secured, path, files={}, data={}, headers={"content-type": "multipart/form-data; boundary=x"}
    )
    no_body = post(secured, path, content=b"", headers={"content-type": "multipart/form-data; boundary=x"})
    for answer in (empty_form, no_body):
        assert answer.status_code == 400, answer.text
        assert "task_id" not in answer.text


def test_a_file_that_is_not_parquet_or_lacks_columns_is_a_400(secured, offline):
    not_parquet = post(secured, "/score_file", files={"payments": ("p.parquet", b"not parquet", PARQUET)})
    lacking = parquet(pa.Table.from_pandas(offline[FACTS[:3]].iloc[:5], preserve_index=False))
    without = post(secured, "/score_file", files={"payments": ("p.parquet", lacking, PARQUET)})
    assert not_parquet.status_code == 400 and "not a readable Parquet file" in not_parquet.json()["error"]
    assert without.status_code == 400 and "lacks the columns" in without.json()["error"]


def test_a_small_file_of_three_million_rows_is_a_413_at_once(secured):
    rows = 3_000_000
    table = pa.table(
        {
            "transaction_id": pa.repeat(pa.scalar(1, pa.int64()), rows),  # compresses to almost nothing
            "transacted_at": pa.repeat(pa.scalar("2026-01-05 10:00:00"), rows),
            "customer_id": pa.repeat(pa.scalar(1, pa.int64()), rows),
            "terminal_id": pa.repeat(pa.scalar(1, pa.int64()), rows),
            "amount": pa.repeat(pa.scalar(5.0), rows),
        }
    )
    content = parquet(table)
    assert len(content) < 1_000_000
    for path in ("/score_file", "/score_file/submit"):
        answer = post(secured, path, files={"payments": ("p.parquet", content, PARQUET)})
        assert answer.status_code == 413, answer.text
        assert "3,000,000 rows" in answer.json()["error"]


def test_a_file_whose_columns_decompress_past_the_limit_is_a_413_whatever_columns_come_first(secured):
    """A nested column first shifts Parquet's leaf columns against Arrow's fields: the bound is on
    the payment columns by name, so a small file of long amounts is refused all the same."""
    rows, text = 6_000, "9" * 50_000  # 300 MB of amounts once decoded
    table = pa.table(
        {
            "nested": pa.array([{"a": 1, "b": 2}] * rows),
            "transaction_id": pa.array(["1"] * rows),
            "transacted_at": pa.array(["2026-01-05 10:00:00"] * rows),
            "customer_id": pa.array(["1"] * rows),
            "terminal_id": pa.array(["1"] * rows),
            "amount": pa.array([text] * rows),
        }
    )
    content = io.BytesIO()
    pq.write_table(table, content, compression="zstd", use_dictionary=False)
    answer = post(secured, "/score_file", files={"payments": ("p.parquet", content.getvalue(), PARQUET)})
    assert answer.status_code == 413, answer.text
    assert "decompress" in answer.json()["error"]


def test_a_file_that_repeats_a_column_is_a_400_naming_it(secured):
    repeated = pa.table([pa.array(["1"])] * 6, names=[*FACTS, "amount"])
    answer = post(secured, "/score_file", files={"payments": ("p.parquet", parquet(repeated), PARQUET)})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "payments: the file repeats the columns ['amount']"


def test_a_json_body_over_its_limit_is_a_413(secured, offline):
    payment = as_json(offline.iloc[:1])[0]
    padded = '{"pad": "' + "x" * (2 << 20) + '"}'
    answer = post(secured, "/score", content=padded, headers={"content-type": "application/json"})
    assert answer.status_code == 413
    assert post(secured, "/score", json=payment).status_code == 200  # and the worker is fine


def test_cancellation_and_retry_are_not_offered_nor_documented(secured):
    with httpx.Client(base_url=secured.url, timeout=60, headers=bearer()) as client:
        cancel = client.put("/score_file/cancel", params={"task_id": "x"})
        retry = client.post("/score_file/retry", params={"task_id": "x"})
        document = client.get("/docs.json").json()
    assert cancel.status_code == 404 and retry.status_code == 404
    assert not {"/score_file/cancel", "/score_file/retry"} & set(document["paths"])


def test_a_timestamp_with_z_or_an_offset_is_accepted_as_the_document_says(secured, offline, day):
    payment = as_json(offline.iloc[:1])[0]
    for stamp in (f"{day}T10:00:00Z", f"{day}T12:00:00+02:00", f"{day} 10:00:00.123456"):
        answer = post(secured, "/score", json={**payment, "transacted_at": stamp})
        assert answer.status_code == 200, (stamp, answer.text)


def test_a_refusal_is_a_json_object_naming_the_field_and_one_log_line_without_the_value(secured, offline):
    payment = as_json(offline.iloc[:1])[0]
    bad = [
        ("/score", {"json": {**payment, "customer_id": MARKER}}),
        ("/score", {"json": {**payment, MARKER: 1}}),
        ("/score", {"json": {**payment, "transacted_at": MARKER}}),
        ("/score_batch", {"json": [payment, {**payment, "amount": MARKER}]}),
        ("/score", {"content": MARKER.encode(), "headers": {"content-type": "application/json"}}),
        ("/score", {"content": MARKER.encode(), "headers": {"content-type": "text/plain"}}),
        ("/score_file", {"files": {MARKER: ("p.parquet", b"PAR1", PARQUET)}}),
    ]
    before = secured.log.read_text()
    answers = [post(secured, path, **kwargs) for path, kwargs in bad]
    assert [a.status_code for a in answers] == [400, 400, 400, 400, 400, 415, 400]
    for answer in answers:
        body = answer.json()
        assert isinstance(body, dict) and isinstance(body["error"], str)
    assert answers[0].json()["detail"][0]["loc"] == ["customer_id"]
    assert answers[3].json()["detail"][0]["loc"] == [1, "amount"]
    # Written by the workers: wait for the lines, then read them.
    logged = secured.wait_for_log(
        lambda text: text.count("POST /score") - before.count("POST /score") >= len(bad)
    )
    added = logged[len(before) :]
    assert MARKER not in added
    assert "Traceback" not in added and "[ERROR]" not in added
    assert added.count("[INFO]") >= len(bad)


def test_a_503_names_its_reason_and_says_when_to_try_again(champion_bento, tmp_path, day):
    env = {
        "KEEL_ONLINE_STORE_URL": f"sqlite:///{tmp_path / 'never_published.sqlite'}",
        "KEEL_PREDICTION_LOG_URI": str(tmp_path / "spool"),
        "KEEL_ONLINE_STORE_RETRY_SECONDS": "7",
    }
    payment = {
        "transaction_id": 1,
        "transacted_at": f"{day}T10:00:00",
        "customer_id": 1,
        "terminal_id": 1,
        "amount": 5.0,
    }
    with serving(champion_bento["bento"], env, tmp_path / "serve.log", ready="/livez") as server:
        with server.client() as client:
            answer = client.post("/score", json=payment)
            batch = client.post("/score_batch", json=[payment])
        log = server.wait_for_log(lambda text: text.count("503 POST") >= 2)
    for refused in (answer, batch):
        assert refused.status_code == 503
        assert refused.json() == {"error": "no online features are published"}
        assert refused.headers["retry-after"] == "7"
    assert "materialize fraud/online_features" in log and "Traceback" not in log


def unsafe_env(tmp_path, store: str, **extra) -> dict[str, str]:
    return {
        **os.environ,
        "BENTOML_RESULT_STORE": str(tmp_path / "tasks.db"),
        "KEEL_NAMESPACE": NAMESPACE,
        "KEEL_ONLINE_STORE_URL": store,
        "KEEL_PREDICTION_LOG_URI": str(tmp_path / "spool"),
        "KEEL_API_KEYS": "",
        "KEEL_API_KEYS_FILE": "",
        **extra,
    }


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"KEEL_ENV": "prod"}, "KEEL_ENV=prod: the scoring service does not start without API keys"),
        ({"KEEL_API_KEYS": "short"}, "shorter than 16 characters"),
        ({"KEEL_TIME_ZONE": "Mars/Olympus"}, "KEEL_TIME_ZONE"),
        ({"KEEL_DECISION_THRESHOLD": "2"}, "KEEL_DECISION_THRESHOLD"),
    ],
    ids=["prod without keys", "a weak key", "a bad time zone", "a bad threshold"],
)
def test_bentoml_serve_refuses_to_start_unsafe_and_exits_non_zero_with_the_reason(
    champion_bento, store_of_the_day_before, tmp_path, extra, reason
):
    """What the container runs (`bentoml serve`): it must exit, not serve 500s to its probes."""
    bentoml = Path(sys.executable).with_name("bentoml")
    started = subprocess.run(
        [bentoml, "serve", champion_bento["bento"], "--host", "127.0.0.1", "--port", "0"],
        env=unsafe_env(tmp_path, store_of_the_day_before, **extra),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert started.returncode != 0
    assert reason in started.stdout + started.stderr


def test_keel_serve_refuses_to_start_in_prod_without_keys(tmp_path, store_of_the_day_before):
    keel = Path(sys.executable).with_name("keel")
    started = subprocess.run(
        [keel, "serve", "--port", "0"],
        env=unsafe_env(tmp_path, store_of_the_day_before, KEEL_ENV="prod", KEEL_LAKE_ROOT="s3://b/lake"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert started.returncode == 2
    assert "does not start without API keys" in started.stderr


def test_the_openapi_document_is_exactly_what_the_service_does(secured, tmp_path):
    """schemathesis, every default check and phase (examples, coverage, fuzzing, stateful), seeded:
    no 5xx, no status, content type, header or body outside the document, every body the document
    admits accepted, every body it does not admit refused, no operation open without a key."""
    hooks = Path(__file__).with_name("schemathesis_hooks.py")
    st = Path(sys.executable).with_name("st")
    run = subprocess.run(
        [st, "run", f"{secured.url}/docs.json", "--header", f"Authorization: Bearer {KEY}"]
        + ["--max-examples", "40", "--seed", "19", "--workers", "1", "--request-timeout", "60"],
        env={**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks", "PYTHONPATH": str(hooks.parent)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert run.returncode == 0, run.stdout[-6000:]
    assert "No issues found" in run.stdout
