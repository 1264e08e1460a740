"""Step declarations (platform_assets/steps.py): what reaches the pod, and retries that work."""

import urllib.error
from pathlib import Path

import botocore.exceptions
import dagster as dg
import duckdb
import pytest
import redis.exceptions

from platform_assets.steps import INGESTION, Step, is_transient
from resources.lake import LocalLake
from resources.sources import LandingZone
from tests.payments import SimulatorSource, asset


def test_requests_and_limits_are_kubernetes_quantities_with_room_to_burst_on_cpu_only():
    resources = Step(cpu=0.5, memory_gib=1.5, scratch_gib=2).resources()
    assert resources["requests"] == {"cpu": "500m", "memory": "1536Mi", "ephemeral-storage": "2048Mi"}
    assert resources["limits"] == {"cpu": "1000m", "memory": "1536Mi", "ephemeral-storage": "2048Mi"}


def test_a_step_without_retries_has_no_retry_policy_and_one_with_them_backs_off_exponentially():
    assert Step(cpu=1, memory_gib=1).retry_policy is None
    policy = Step(cpu=1, memory_gib=1, retries=3, retry_delay_seconds=2).retry_policy
    assert (policy.max_retries, policy.delay, policy.backoff) == (3, 2, dg.Backoff.EXPONENTIAL)


def test_a_deadline_and_a_gpu_are_only_asked_for_when_declared():
    plain = Step(cpu=1, memory_gib=1).op_tags("x")["dagster-k8s/config"]
    assert "job_spec_config" not in plain and "pod_spec_config" not in plain
    gpu = Step(cpu=1, memory_gib=1, gpus=2, deadline_seconds=60).op_tags("x")["dagster-k8s/config"]
    assert gpu["job_spec_config"] == {"active_deadline_seconds": 60}
    assert gpu["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "2"


@pytest.mark.parametrize("field", ["cpu", "memory_gib", "scratch_gib"])
def test_a_step_asking_for_nothing_is_refused(field):
    with pytest.raises(ValueError, match="must be positive"):
        Step(**{"cpu": 1, "memory_gib": 1, field: 0})


class FlakyLanding(LandingZone):
    """A landing zone whose first read fails as a dropped S3 connection would."""

    failed_once: str  # a file: the step's retry runs in a fresh copy of the resource

    def read(self, feed, day=None):
        marker = Path(self.failed_once)
        if not marker.exists():
            marker.write_text("failed")
            raise ConnectionError("connection reset by peer while reading landing/customers (injected)")
        return super().read(feed, day)


def test_an_ingestion_step_that_fails_on_a_transient_error_succeeds_on_its_retry(tmp_path):
    lake = LocalLake(root=str(tmp_path / "lake"))
    LandingZone(lake=lake).deliver_reference(SimulatorSource(n_customers=50, n_terminals=100))

    result = dg.materialize(
        [asset("customers")],
        resources={"lake": lake, "landing": FlakyLanding(lake=lake, failed_once=str(tmp_path / "failed"))},
        raise_on_error=False,
    )

    assert result.success
    retried = [
        event for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert len(retried) == 1 and INGESTION.retries >= 1
    assert "connection reset by peer" in str(retried[0].event_specific_data.error)
    assert len(lake.read_table("customers")) == 50


def _caused_by(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionResetError("reset by peer"), True),
        (TimeoutError("read timed out"), True),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://s3"), True),
        (botocore.exceptions.ClientError({"Error": {"Code": "SlowDown"}}, "GetObject"), True),
        (botocore.exceptions.ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject"), False),
        (redis.exceptions.ConnectionError("Connection refused"), True),
        (urllib.error.URLError(ConnectionRefusedError()), True),
        (urllib.error.HTTPError("http://hook", 503, "unavailable", {}, None), True),
        (urllib.error.HTTPError("http://hook", 404, "not found", {}, None), False),
        (duckdb.IOException("IO Error: Could not establish connection error for HTTP GET to 'x'"), True),
        (duckdb.IOException("IO Error: No files found that match the pattern 'x'"), False),
        (ValueError("cannot parse"), False),
        (KeyError("a bug"), False),
        (_caused_by(RuntimeError("write failed"), ConnectionResetError()), True),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_only_errors_of_the_network_and_its_services_count_as_transient(error, transient):
    assert is_transient(error) is transient


class BrokenLanding(LandingZone):
    """A landing zone whose reference table has a bug that no retry can fix."""

    def read(self, feed, day=None):
        raise KeyError("customer_id")


def test_an_ingestion_step_that_fails_for_a_reason_a_retry_cannot_cure_fails_at_once(tmp_path):
    lake = LocalLake(root=str(tmp_path / "lake"))
    result = dg.materialize(
        [asset("customers")],
        resources={"lake": lake, "landing": BrokenLanding(lake=lake)},
        raise_on_error=False,
    )

    assert not result.success
    types = [event.event_type for event in result.all_events]
    assert dg.DagsterEventType.STEP_UP_FOR_RETRY not in types
    assert types.count(dg.DagsterEventType.STEP_FAILURE) == 1
