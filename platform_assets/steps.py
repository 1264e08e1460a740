"""What each step needs, declared once on its asset: compute for its pod, retries, a deadline.

In staging and prod every step runs in a Kubernetes pod of its own (``k8s_job_executor``). What the
pod asks for travels as *op* tags (``dagster-k8s/config``), not job tags, because op tags are part of
the asset's definition: they reach the pod however the asset is launched (a job, a sensor,
automation, a backfill, the UI), while job tags only apply to runs of that job. The local executor
ignores them.

    @dg.asset(..., op_tags=TRAINING.op_tags("churn_model"), retry_policy=TRAINING.retry_policy)

Labels name the step (the asset, or the multi-asset's op) for cost attribution; the environment
label is added by the executor (``resources/environments.py``), the one place that knows it.
"""

import functools
import inspect
import urllib.error
from contextlib import contextmanager
from dataclasses import dataclass

import dagster as dg

from keel_core.warehouse_engine import is_transient_engine_error

K8S_CONFIG_TAG = "dagster-k8s/config"  # what dagster-k8s reads from op tags
STEP_LABEL = "keel.dev/step"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}  # NVIDIA GPU feature discovery's node label


@dataclass(frozen=True)
class Step:
    """A step's needs. CPU is a request with a limit twice as high (a step may burst; namespaces with
    quotas require limits); memory and scratch disk are requested at their limit, since running out
    of either kills the pod whatever was requested."""

    cpu: float  # cores
    memory_gib: float
    scratch_gib: float = 1  # ephemeral storage: dbt targets, model exports, Bento builds
    # Retries for steps that talk to the network (S3, Redis, a webhook): exponential backoff from
    # ``retry_delay_seconds`` with jitter, so retries of many steps do not land together. Only
    # transient errors use them: the step's function is wrapped in ``retry_only_transient``.
    retries: int = 0
    retry_delay_seconds: float = 5
    # Kubernetes kills the step's pod after this long (activeDeadlineSeconds): a hung step ends as
    # a failure instead of holding a node. The run-level limit is the `dagster/max_runtime` tag.
    deadline_seconds: int | None = None
    gpus: int = 0  # if set, the pod asks for GPUs and lands on a GPU node

    def __post_init__(self):
        if self.cpu <= 0 or self.memory_gib <= 0 or self.scratch_gib <= 0:
            raise ValueError(f"{self}: cpu, memory and scratch must be positive")

    @property
    def retry_policy(self) -> dg.RetryPolicy | None:
        if not self.retries:
            return None
        return dg.RetryPolicy(
            max_retries=self.retries,
            delay=self.retry_delay_seconds,
            backoff=dg.Backoff.EXPONENTIAL,
            jitter=dg.Jitter.PLUS_MINUS,
        )

    def resources(self) -> dict[str, dict[str, str]]:
        """Kubernetes requests and limits."""
        memory, scratch = f"{round(self.memory_gib * 1024)}Mi", f"{round(self.scratch_gib * 1024)}Mi"
        requests = {"cpu": f"{round(self.cpu * 1000)}m", "memory": memory, "ephemeral-storage": scratch}
        limits = {"cpu": f"{round(self.cpu * 2000)}m", "memory": memory, "ephemeral-storage": scratch}
        if self.gpus:
            limits[GPU_RESOURCE] = str(self.gpus)  # extended resources are requested by their limit
        return {"requests": requests, "limits": limits}

    def op_tags(self, name: str) -> dict[str, object]:
        """The op tags of the step ``name`` (the asset's name, or the op's for a multi-asset)."""
        config: dict[str, object] = {
            "container_config": {"resources": self.resources()},
            "pod_template_spec_metadata": {"labels": {STEP_LABEL: name}},
        }
        if self.gpus:
            config["pod_spec_config"] = {"node_selector": GPU_NODE_SELECTOR}
        if self.deadline_seconds:
            config["job_spec_config"] = {"active_deadline_seconds": self.deadline_seconds}
        return {K8S_CONFIG_TAG: config}


# What a retry can cure: the network and the services behind it, not the data or the code. Matched
# by name so that this module needs neither botocore nor redis (each library has its own classes).
_TRANSIENT_BUILTINS = (ConnectionError, TimeoutError)
_TRANSIENT_BY_NAME = {
    "botocore.exceptions": {
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionError",
        "HTTPClientError",
    },
    "redis.exceptions": {"ConnectionError", "TimeoutError", "BusyLoadingError"},
    "urllib3.exceptions": {"ProtocolError", "NewConnectionError", "ReadTimeoutError", "ConnectTimeoutError"},
    "keel_core.warehouse_engine": {"ConflictingCommit"},  # another writer committed first: do it again
}
# S3 answers these when it is busy or briefly broken; everything else it answers is final.
_TRANSIENT_S3_CODES = {
    "Throttling",
    "ThrottlingException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
}


def is_transient(error: BaseException) -> bool:
    """Whether ``error``, or any error that caused it, is one a retry can cure."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, _TRANSIENT_BUILTINS):
            return True
        if isinstance(error, urllib.error.HTTPError):
            if error.code == 429 or error.code >= 500:
                return True
        elif isinstance(error, urllib.error.URLError):  # the network (refused, DNS, reset), not an answer
            return True
        kind = type(error)
        if kind.__name__ in _TRANSIENT_BY_NAME.get(kind.__module__, ()):
            return True
        if is_transient_engine_error(error):  # DuckDB's own S3 reader: unreachable, throttled, 5xx
            return True
        s3_code = getattr(error, "response", None) and error.response.get("Error", {}).get("Code")
        if kind.__module__ == "botocore.exceptions" and s3_code in _TRANSIENT_S3_CODES:
            return True
        error = error.__cause__ or error.__context__
    return False


@contextmanager
def _final_unless_transient():
    try:
        yield
    except dg.Failure:
        raise
    except Exception as error:
        if is_transient(error):
            raise
        # The same inputs would fail the same way: fail now, without the retry policy's backoff.
        raise dg.Failure(description=f"{type(error).__name__}: {error}", allow_retries=False) from error


def retry_only_transient(function):
    """Let the step's retry policy retry transient errors only (``is_transient``): any other error,
    a contract refusing an extract, a file that cannot be parsed, a bug, fails the step at once.
    Dagster's ``RetryPolicy`` retries whatever is raised; ``Failure(allow_retries=False)`` is how a
    step says that retrying is pointless. Put it under the ``@dg.asset`` decorator."""
    if inspect.isgeneratorfunction(function):

        @functools.wraps(function)
        def generator(*args, **kwargs):
            with _final_unless_transient():
                yield from function(*args, **kwargs)

        return generator

    @functools.wraps(function)
    def call(*args, **kwargs):
        with _final_unless_transient():
            return function(*args, **kwargs)

    return call


# The steps of Keel, by kind of work. Sizes are for the default world (5,000 cards, ~1.7 M payments
# over six months) with room to grow; change them here, not on the assets.
INGESTION = Step(cpu=0.5, memory_gib=1, scratch_gib=1, retries=3)  # reads the landing zone (S3)
# dbt: reads the lake (S3) into the warehouse. Retried only when its commit lost to another run's
# (DuckLake's optimistic concurrency; the build is idempotent), with backoff: a failed dbt test or
# model fails at once, and DuckDB's httpfs retries S3's transient errors itself.
WAREHOUSE = Step(cpu=1, memory_gib=4, scratch_gib=4, retries=4, retry_delay_seconds=10)
FEATURES = Step(cpu=1, memory_gib=4, scratch_gib=2)  # DuckDB windows over the warehouse
# Training is not retried: a failure there is rarely transient, and an hour is a lot to repeat.
TRAINING = Step(cpu=2, memory_gib=8, scratch_gib=4, deadline_seconds=3600)
GATE = Step(cpu=1, memory_gib=4, scratch_gib=2, retries=1)  # loads models from the registry (S3)
SCORING = Step(cpu=1, memory_gib=2, scratch_gib=2, retries=1)
PUBLISHING = Step(cpu=0.5, memory_gib=1, scratch_gib=2, retries=3)  # Redis, the registry, Bento builds
MONITORING = Step(cpu=1, memory_gib=4, scratch_gib=2, retries=1)  # Evidently on samples of 50,000 rows


# Locally the warehouse is one DuckDB file with one writer at a time: every step that writes or reads
# it shares this pool, whose limit is 1 there (deploy/local/dagster.yaml). Staging and prod's DuckLake
# takes many writers: their pool is given room once per environment (docs/deploy.md, step 8).
WAREHOUSE_POOL = "warehouse"

# Run tags that the run queue limits (deploy/helm: concurrency.runs.tagConcurrencyLimits), so that heavy
# work cannot take every slot: training never starves ingestion, and warehouse builds are bounded.
# Set on the jobs and on automation's runs; the Helm values hold the limits.
WORKLOAD_TAG = "keel/workload"
INGESTION_RUNS = {WORKLOAD_TAG: "ingestion"}
WAREHOUSE_RUNS = {WORKLOAD_TAG: "warehouse"}
# A training run (train, gate, promote, Bento) that has not finished in two hours is stuck: run
# monitoring fails it (`dagster/max_runtime`, seconds) and frees its slot.
TRAINING_RUNS = {WORKLOAD_TAG: "training", "dagster/max_runtime": str(2 * 3600)}
