"""The Kubernetes Jobs that the prod code location's executor creates, one per step, built offline.

``k8s_job_executor`` turns each step into a Job with dagster-k8s's own ``construct_dagster_k8s_job``,
from the run launcher's settings, the executor's and the step's op tags. This builds that Job for
every step of the prod definitions as the executor does, validates it against the Kubernetes 1.31
schema in strict mode (unknown fields rejected), and checks what Keel declares: each step's
requests and limits, its labels, the training deadline.
"""

import json
import types

import dagster as dg
import kubernetes_validate
import pytest
from dagster_k8s import construct_dagster_k8s_job
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import get_user_defined_k8s_config
from kubernetes.client import ApiClient

from platform_assets import steps
from resources.environments import k8s_executor_config

KUBERNETES_VERSION = "1.31"
IMAGE = "ghcr.io/keel-platform/keel:0.1.0"
# What the official chart's K8sRunLauncher passes on (deploy/helm): the instance's ConfigMap, the
# PostgreSQL password Secret, Dagster's home in the image.
RUN_LAUNCHER = types.SimpleNamespace(
    job_image=None,
    dagster_home="/opt/dagster/dagster_home",
    instance_config_map="dagster-instance",
    postgres_password_secret="keel-postgresql",
)
# The steps that are not retried: features (DuckDB's httpfs retries S3 itself; a DuckLake commit that
# conflicts is retried in the step) and training (too costly to repeat). dbt's steps are retried when
# their commit lost to another run's (platform_assets/defs/warehouse/assets.py).
NOT_RETRIED = {
    "fraud__features",
    "fraud__model",
    "terminal_volume__features",
    "terminal_volume__model",
}


@pytest.fixture(scope="module")
def prod_definitions() -> dg.Definitions:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KEEL_ENV", "prod")
        patch.setenv("KEEL_LAKE_ROOT", "s3://keel-lake-prod/lake")
        patch.setenv("KEEL_ONLINE_STORE_URL", "redis://keel-redis:6379/0")
        patch.setenv("KEEL_MLFLOW_TRACKING_URI", "postgresql+psycopg2://keel@postgres:5432/mlflow")
        patch.setenv("KEEL_WAREHOUSE_CATALOG", "postgres:dbname=keel_warehouse host=postgres user=keel")
        patch.setenv("KEEL_ALERT_WEBHOOK_URL", "https://hooks.example.com/keel")
        from platform_assets.definitions import defs

        yield defs()


@pytest.fixture(scope="module")
def ops(prod_definitions) -> dict[str, dg.OpDefinition]:
    """Every op a run of the code location can execute: the assets' and the op jobs'."""
    found = {
        assets_def.op.name: assets_def.op
        for assets_def in prod_definitions.resolve_asset_graph().assets_defs
        if assets_def.is_executable
    }
    for job in prod_definitions.resolve_all_job_defs():
        for op in job.graph.node_defs:
            found.setdefault(op.name, op)
    return found


def step_job(op: dg.OpDefinition, environment: str = "prod") -> dict:
    """The Job manifest the executor creates for ``op`` (its ``launch_step``, without a cluster)."""
    context = K8sContainerContext(
        namespace=f"keel-{environment}", labels=k8s_executor_config(environment)["labels"]
    ).merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(op.tags)))
    name = f"dagster-step-{op.name.replace('_', '-')}"
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(IMAGE, RUN_LAUNCHER),
        args=["dagster", "api", "execute_step", "{}"],
        job_name=name,
        pod_name=name,
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": "keel_pipeline", "dagster/op": op.name, "dagster/run-id": "0" * 36},
        env_vars=[{"name": "DAGSTER_RUN_STEP_KEY", "value": op.name}],
    )
    return ApiClient().sanitize_for_serialization(job)


# Op names: an asset's op is named after its key (``lake__customers``), a multi-asset's by itself.
STEP_NAMES = [
    "lake__customers",
    "lake__terminals",
    "raw_transactions",
    "raw_fraud_labels",
    "warehouse_models",
    "warehouse_daily_models",
    "warehouse_housekeeping",
    "deliver_day",
    # The use cases, each declared by its folder (keel.UseCase): steps labelled <use case>_<step>.
    "fraud__features",
    "fraud__model",
    "fraud__evaluation",
    "fraud__production_model",
    "fraud__scores",
    "fraud__drift",
    "fraud__live_performance",
    "fraud__online_features",
    "fraud__bento",
    "fraud__prediction_log",
    "terminal_volume__features",
    "terminal_volume__model",
    "terminal_volume__evaluation",
    "terminal_volume__production_model",
    "terminal_volume__scores",
    "terminal_volume__drift",
    "terminal_volume__live_performance",
    "terminal_volume__online_features",
    "terminal_volume__bento",
    "terminal_volume__prediction_log",
]
USE_CASES = ("fraud", "terminal_volume")


def declared(op: dg.OpDefinition) -> dict:
    """The op's Kubernetes config, as Dagster stores op tags: JSON text."""
    return json.loads(op.tags[steps.K8S_CONFIG_TAG])


def step_label(op_name: str) -> str:
    group, _, step = op_name.rpartition("__")
    return f"{group}_{step}" if group in USE_CASES else step


def test_the_prod_code_location_runs_each_step_in_a_kubernetes_pod(prod_definitions):
    assert prod_definitions.resolve_job_def("keel_pipeline").executor_def.name == "k8s"
    assert prod_definitions.resolve_implicit_global_asset_job_def().executor_def.name == "k8s"


def test_every_step_of_the_code_location_is_listed_here(ops):
    """A new asset must say what it needs: this list, and its op tags, are where it does."""
    assert sorted(ops) == sorted(STEP_NAMES)


@pytest.mark.parametrize("name", STEP_NAMES)
def test_every_step_declares_its_pod_resources_and_a_label_naming_it(ops, name):
    config = declared(ops[name])
    resources = config["container_config"]["resources"]
    for kind in ("cpu", "memory", "ephemeral-storage"):
        assert resources["requests"][kind] and resources["limits"][kind], kind
    assert config["pod_template_spec_metadata"]["labels"] == {steps.STEP_LABEL: step_label(name)}


@pytest.mark.parametrize("name", STEP_NAMES)
def test_every_step_that_talks_to_the_network_retries_with_exponential_backoff(ops, name):
    policy = ops[name].retry_policy
    if name in NOT_RETRIED:
        assert policy is None
    else:
        assert policy.max_retries >= 1
        assert policy.backoff == dg.Backoff.EXPONENTIAL and policy.jitter == dg.Jitter.PLUS_MINUS


@pytest.mark.parametrize("name", STEP_NAMES)
def test_the_job_of_every_step_validates_strictly_with_its_resources_and_labels(ops, name):
    manifest = step_job(ops[name])
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)

    pod = manifest["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["resources"] == declared(ops[name])["container_config"]["resources"]
    assert container["image"] == IMAGE
    assert (
        pod["metadata"]["labels"].items()
        >= {
            steps.STEP_LABEL: step_label(name),
            "keel.dev/environment": "prod",
            "app.kubernetes.io/part-of": "keel",
            "dagster/op": name,
        }.items()
    )


def test_a_training_pod_is_stopped_by_kubernetes_after_an_hour(ops):
    manifest = step_job(ops["fraud__model"])
    assert manifest["spec"]["activeDeadlineSeconds"] == 3600
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["memory"] == "8192Mi"


def test_a_step_that_asks_for_a_gpu_lands_on_a_gpu_node_and_still_validates():
    gpu_training = dg.op(name="gpu_training", tags=steps.Step(cpu=4, memory_gib=16, gpus=1).op_tags("t"))(
        lambda: None
    )
    manifest = step_job(gpu_training)
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    pod_spec = manifest["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == steps.GPU_NODE_SELECTOR
    assert pod_spec["containers"][0]["resources"]["limits"][steps.GPU_RESOURCE] == "1"


def test_staging_pods_carry_the_staging_label(ops):
    labels = step_job(ops["lake__customers"], "staging")["spec"]["template"]["metadata"]["labels"]
    assert labels["keel.dev/environment"] == "staging"


def test_training_runs_have_a_maximum_runtime_and_every_job_a_workload_for_the_queue(prod_definitions):
    training = prod_definitions.resolve_job_def("fraud_train_and_promote").tags
    assert int(training["dagster/max_runtime"]) == 7200
    workloads = {
        name: prod_definitions.resolve_job_def(name).tags.get(steps.WORKLOAD_TAG)
        for name in (
            "keel_pipeline",
            "fraud_train_and_promote",
            "terminal_volume_train_and_promote",
            "ingest_day",
            "ingest_reference",
            "fetch_from_source",
        )
    }
    assert workloads == {
        "keel_pipeline": "warehouse",
        "fraud_train_and_promote": "training",
        "terminal_volume_train_and_promote": "training",
        "ingest_day": "ingestion",
        "ingest_reference": "ingestion",
        "fetch_from_source": "ingestion",
    }
    automation = prod_definitions.resolve_sensor_def("keel_automation")
    assert automation.run_tags[steps.WORKLOAD_TAG] == "warehouse"
