"""The Helm values of staging and prod, checked offline.

First against the official Dagster chart's own values schema, as Helm checks them on install: the chart's
``values.yaml`` with our file merged over it, the code location's section also against the
user-deployments sub-chart's schema. Then against Keel's production contract: what those files must say
about the database, Secrets, runs, logs, limits and the code location.

The chart's schemas are copied in ``deploy/helm/dagster-chart`` (its SOURCE.md says from where);
its Kubernetes references are resolved in the Kubernetes 1.31 schemas of ``kubernetes-validate``.
"""

import copy
import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
HELM = REPO / "deploy" / "helm"
SCHEMAS = HELM / "dagster-chart"
SUBCHART = "dagster-user-deployments"

ENVIRONMENTS = ("staging", "prod")
# From the production contract.
IMAGE = "ghcr.io/keel-platform/keel"
MODULE = "platform_assets.definitions"
GRPC_PORT = 3030
CODE_LOCATION_SECRETS = {"keel-aws", "keel-alerts", "keel-redis", "keel-mlflow", "keel-warehouse"}
POSTGRES_SECRET = "keel-postgresql"
REGION = "eu-west-1"
WORKLOAD_LIMITS = {
    ("keel/workload", "ingestion", 4),
    ("keel/workload", "warehouse", 4),
    ("keel/workload", "training", 2),
}
WEBSERVER_URLS = {
    "staging": "https://dagster.staging.keel.example.com",
    "prod": "https://dagster.keel.example.com",
}
# Variables that come from Secrets (envFrom or the chart's secretKeyRef), so never as values in a file.
SECRET_VARIABLES = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "KEEL_ALERT_WEBHOOK_URL",
    "KEEL_ONLINE_STORE_URL",
    "DAGSTER_PG_PASSWORD",
}


# --- loading -------------------------------------------------------------------------------------------


def _load_helper() -> ModuleType:
    # deploy/ is not a package: load schema.py from its path.
    spec = importlib.util.spec_from_file_location("keel_helm_schema", HELM / "schema.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


helm = _load_helper()


@cache
def _definitions() -> dict[str, Any]:
    return helm.kubernetes_definitions()


@cache
def _schema(name: str):
    return helm.ChartSchema.load(SCHEMAS / name, _definitions())


def chart_schema():
    return _schema("values.schema.json")


def subchart_schema():
    return _schema("user-deployments.values.schema.json")


@cache
def _yaml(path: Path) -> dict[str, Any]:
    return helm.load_yaml(path)


def override(environment: str) -> dict[str, Any]:
    """The values file as committed."""
    return copy.deepcopy(_yaml(HELM / f"values-{environment}.yaml"))


def values(environment: str) -> dict[str, Any]:
    """What Helm renders with: the chart's values.yaml, then our file (a fresh copy each time)."""
    return helm.merged_values(_yaml(SCHEMAS / "values.yaml"), _yaml(HELM / f"values-{environment}.yaml"))


def subchart(merged: dict[str, Any]) -> dict[str, Any]:
    return helm.subchart_values(merged, _yaml(SCHEMAS / "user-deployments.values.yaml"), SUBCHART)


def code_location(merged: dict[str, Any]) -> dict[str, Any]:
    (deployment,) = merged[SUBCHART]["deployments"]
    return deployment


def run_launcher(merged: dict[str, Any]) -> dict[str, Any]:
    return merged["runLauncher"]["config"]["k8sRunLauncher"]


def env_values(entries: list[dict[str, Any]]) -> dict[str, str]:
    return {entry["name"]: entry.get("value") for entry in entries}


def names(entries: list[dict[str, Any]]) -> set[str]:
    return {entry["name"] for entry in entries}


def walk(node: Any, path: str = "$"):
    """Every (path, key, value) of a nested document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from walk(item, f"{path}[{index}]")


def flatten(node: Any, path: str = "") -> dict[str, Any]:
    """Leaf values by path; lists of named objects (env, Secrets, volumes) keyed by name, not position."""
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in flatten(value, f"{path}.{key}").items()}
    if isinstance(node, list) and node and all(isinstance(item, dict) and "name" in item for item in node):
        return {k: v for item in node for k, v in flatten(item, f"{path}[{item['name']}]").items()}
    return {path: node}


env_param = pytest.mark.parametrize("environment", ENVIRONMENTS)


# --- the chart's schemas -------------------------------------------------------------------------------


@env_param
def test_merged_values_validate_against_the_official_chart_schema(environment):
    errors = chart_schema().errors(values(environment))
    assert not errors, f"values-{environment}.yaml breaks the chart's schema:\n" + "\n".join(errors)


@env_param
def test_code_location_section_validates_against_the_user_deployments_subchart_schema(environment):
    errors = subchart_schema().errors(subchart(values(environment)))
    assert not errors, (
        f"{SUBCHART} of values-{environment}.yaml breaks the sub-chart's schema:\n" + "\n".join(errors)
    )


@pytest.mark.parametrize("schema", [chart_schema, subchart_schema], ids=["chart", "subchart"])
def test_every_remote_kubernetes_reference_resolves_in_the_local_1_31_schemas(schema):
    refs = schema().refs
    assert refs.local, "no remote Kubernetes reference was found: the schema's format changed"
    assert not refs.permissive, f"made permissive, so unchecked: {refs.permissive}"


def _set(path: list[Any], value: Any):
    def mutate(document: dict[str, Any]) -> None:
        node = document
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return mutate


BROKEN_VALUES = {
    # The chart's own structure (additionalProperties: false, types).
    "misspelt webserver key": (
        _set(["dagsterWebserver", "replicaCont"], 2),
        "$.dagsterWebserver: Additional properties are not allowed ('replicaCont' was unexpected)",
    ),
    "webserver replicas as text": (
        _set(["dagsterWebserver", "replicaCount"], "two"),
        "$.dagsterWebserver.replicaCount: 'two' is not of type 'integer'",
    ),
    # Inside Kubernetes objects: caught only because the remote references resolve to real definitions.
    "volume mount path as a number": (
        _set(
            ["runLauncher", "config", "k8sRunLauncher", "volumeMounts"],
            [{"name": "scratch", "mountPath": 42}],
        ),
        "$.runLauncher.config.k8sRunLauncher.volumeMounts[0].mountPath",
    ),
    "runAsNonRoot as text": (
        _set(["dagsterWebserver", "podSecurityContext", "runAsNonRoot"], "yes"),
        "$.dagsterWebserver.podSecurityContext.runAsNonRoot",
    ),
    "resource requests as a list": (
        _set([SUBCHART, "deployments", 0, "resources", "requests"], ["1Gi"]),
        "$['dagster-user-deployments'].deployments[0].resources.requests",
    ),
}


@pytest.mark.parametrize("mutation, where", BROKEN_VALUES.values(), ids=BROKEN_VALUES.keys())
def test_a_broken_value_is_rejected_by_the_chart_schema(mutation, where):
    broken = copy.deepcopy(values("prod"))
    mutation(broken)
    errors = chart_schema().errors(broken)
    assert any(where in error for error in errors), f"expected an error at {where}, got {errors}"


def test_a_broken_code_location_is_rejected_by_the_subchart_schema():
    broken = copy.deepcopy(values("prod"))
    code_location(broken)["envSecrets"][0]["name"] = 7  # a Kubernetes SecretEnvSource: name is a string
    errors = subchart_schema().errors(subchart(broken))
    assert any("$.deployments[0].envSecrets[0].name" in error for error in errors), errors


# --- the production contract ---------------------------------------------------------------------------


@env_param
def test_the_instance_database_is_an_external_postgresql_reached_through_psycopg2(environment):
    postgresql = values(environment)["postgresql"]
    assert postgresql["enabled"] is False
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which dagster-postgres does not install.
    assert postgresql["postgresqlScheme"] == "postgresql+psycopg2"
    assert postgresql["postgresqlHost"] == f"keel-postgresql.keel-{environment}.svc"
    assert (postgresql["postgresqlUsername"], postgresql["postgresqlDatabase"]) == ("keel", "dagster")


@env_param
def test_the_database_password_comes_only_from_the_contract_secret(environment):
    merged = values(environment)
    assert merged["global"]["postgresqlSecretName"] == POSTGRES_SECRET
    assert merged["generatePostgresqlPasswordSecret"] is False  # else the chart makes that Secret itself
    assert merged["postgresql"]["postgresqlPassword"] == ""  # not even the chart's placeholder
    committed = override(environment)
    for path, key, value in walk(committed):
        if "password" in key.lower():
            assert not value, f"{path}.{key} holds a password"
        assert key != "secretName" or not value, f"{path}.{key}: TLS Secrets are not committed"
        if key == "env" and isinstance(value, list):
            assert not SECRET_VARIABLES & names(value), f"{path}: secret variables come from Secrets"
    assert merged["ingress"]["enabled"] is False


@env_param
def test_runs_are_kubernetes_jobs_with_the_code_location_secrets_and_volumes(environment):
    merged = values(environment)
    launcher, deployment = run_launcher(merged), code_location(merged)
    assert merged["runLauncher"]["type"] == "K8sRunLauncher"
    assert names(launcher["envSecrets"]) == names(deployment["envSecrets"]) == CODE_LOCATION_SECRETS
    # Written identically, Dagster merges the two into one volume; different, the pod has two volumes
    # of one name and Kubernetes rejects it.
    assert launcher["volumes"] == deployment["volumes"]
    assert launcher["volumeMounts"] == deployment["volumeMounts"]


@env_param
def test_run_pods_get_the_code_location_configuration_and_its_resources(environment):
    merged = values(environment)
    deployment = code_location(merged)
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    # The code location forwards its `resources` to the runs it launches, and they win over the run
    # launcher's: the two are kept equal so that the file says what the run worker gets.
    run_resources = run_launcher(merged)["runK8sConfig"]["containerConfig"]["resources"]
    assert run_resources == deployment["resources"]
    assert run_resources["requests"] and run_resources["limits"]


@env_param
def test_compute_logs_go_to_the_environment_bucket_on_s3(environment):
    logs = values(environment)["computeLogManager"]
    assert logs["type"] == "S3ComputeLogManager"
    s3 = logs["config"]["s3ComputeLogManager"]
    assert (s3["bucket"], s3["prefix"], s3["region"]) == (
        f"keel-dagster-logs-{environment}",
        "compute-logs",
        REGION,
    )


@env_param
def test_runs_are_queued_under_the_contract_tag_limits(environment):
    merged = values(environment)
    coordinator = merged["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] is True and coordinator["type"] == "QueuedRunCoordinator"
    runs = merged["concurrency"]["runs"]
    assert merged["concurrency"]["enabled"] is True
    assert {
        (limit["key"], limit["value"], limit["limit"]) for limit in runs["tagConcurrencyLimits"]
    } == WORKLOAD_LIMITS
    assert runs["maxConcurrentRuns"] >= sum(limit for _, _, limit in WORKLOAD_LIMITS)


def _rendered_concurrency(merged: dict[str, Any]) -> dict[str, Any]:
    """The run_coordinator and concurrency parts of the dagster.yaml the chart renders from ``merged``
    (helm/dagster/templates/helpers/instance/_run-coordinator.tpl and _concurrency.tpl): a key is only
    written when its value is set."""
    queued = merged["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    concurrency = merged["concurrency"]

    def present(section: dict[str, Any], keys: dict[str, str]) -> dict[str, Any]:
        return {key: section[name] for name, key in keys.items() if section.get(name) not in (None, [])}

    instance: dict[str, Any] = {
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": present(
                queued,
                {
                    "maxConcurrentRuns": "max_concurrent_runs",
                    "tagConcurrencyLimits": "tag_concurrency_limits",
                },
            ),
        }
    }
    if concurrency["enabled"]:
        pools = present(
            concurrency["pools"],
            {
                "defaultLimit": "default_limit",
                "granularity": "granularity",
                "opGranularityRunBuffer": "op_granularity_run_buffer",
            },
        )
        runs = present(
            concurrency["runs"],
            {"maxConcurrentRuns": "max_concurrent_runs", "tagConcurrencyLimits": "tag_concurrency_limits"},
        )
        instance["concurrency"] = {name: part for name, part in (("pools", pools), ("runs", runs)) if part}
    return instance


def _check_instance_concurrency(instance: dict[str, Any]) -> None:
    """Dagster's own checks of an instance's concurrency settings (what the daemon runs at start-up)."""
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config_schema, validate_concurrency_config

    validate_concurrency_config(instance)
    result = validate_config(dagster_instance_config_schema(), instance)
    assert result.success, [error.message for error in result.errors]


@env_param
def test_dagster_accepts_the_concurrency_settings_the_chart_renders(environment):
    _check_instance_concurrency(_rendered_concurrency(values(environment)))


def test_run_limits_in_the_run_coordinator_as_well_would_stop_dagster_from_starting():
    from dagster._core.errors import DagsterInvalidConfigError

    merged = copy.deepcopy(values("prod"))
    queued = merged["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    queued["tagConcurrencyLimits"] = merged["concurrency"]["runs"]["tagConcurrencyLimits"]
    with pytest.raises(DagsterInvalidConfigError, match="incompatible"):
        _check_instance_concurrency(_rendered_concurrency(merged))


@env_param
def test_pools_without_their_own_limit_get_one_slot_so_payments_are_ingested_one_day_at_a_time(environment):
    pools = values(environment)["concurrency"]["pools"]
    assert pools["defaultLimit"] == 1
    assert pools["granularity"] == "op"


@env_param
def test_run_monitoring_and_run_retries_are_on(environment):
    daemon = values(environment)["dagsterDaemon"]
    monitoring, retries = daemon["runMonitoring"], daemon["runRetries"]
    assert monitoring["enabled"] is True
    assert monitoring["startTimeoutSeconds"] > 0 and monitoring["pollIntervalSeconds"] > 0
    assert "maxRuntimeSeconds" not in monitoring  # training sets its own (tag dagster/max_runtime)
    assert monitoring["maxResumeRunAttempts"] == 0
    assert retries == {"enabled": True, "maxRetries": 2, "retryOnAssetOrOpFailure": False}


@env_param
def test_the_code_location_serves_the_contract_module_from_a_pinned_image(environment):
    merged = values(environment)
    assert merged[SUBCHART]["enabled"] is True
    deployment = code_location(merged)
    assert deployment["name"] == "keel"
    image = deployment["image"]
    assert image["repository"] == IMAGE
    assert isinstance(image["tag"], str) and image["tag"] not in ("", "latest")
    assert image["pullPolicy"] == "IfNotPresent"
    assert deployment["dagsterApiGrpcArgs"] == ["-m", MODULE]
    assert deployment["port"] == GRPC_PORT


@env_param
def test_the_warehouse_is_a_ducklake_in_postgresql_and_no_volume_is_shared(environment):
    deployment = code_location(values(environment))
    assert deployment["volumes"] == deployment["volumeMounts"] == []
    catalog = env_values(deployment["env"])["KEEL_WAREHOUSE_CATALOG"]
    assert catalog.startswith("postgres:") and "dbname=keel_warehouse" in catalog
    assert "password" not in catalog  # PGPASSWORD, from the Secret keel-warehouse
    assert "KEEL_WAREHOUSE_DIR" not in env_values(deployment["env"])


@env_param
def test_the_code_location_environment_is_the_contract_one(environment):
    env = env_values(code_location(values(environment))["env"])
    assert env["KEEL_ENV"] == environment
    assert env["KEEL_LAKE_ROOT"] == f"s3://keel-lake-{environment}/lake"
    assert env["KEEL_NAMESPACE"] == "prod"  # the deployment runs the production pipeline
    assert env["AWS_REGION"] == REGION
    assert env["DAGSTER_WEBSERVER_URL"] == WEBSERVER_URLS[environment]


@env_param
def test_every_pod_runs_as_a_non_root_user_without_privilege_escalation(environment):
    merged = values(environment)
    launcher = run_launcher(merged)
    pods = {
        "webserver": (
            merged["dagsterWebserver"]["podSecurityContext"],
            merged["dagsterWebserver"]["securityContext"],
        ),
        "daemon": (merged["dagsterDaemon"]["podSecurityContext"], merged["dagsterDaemon"]["securityContext"]),
        "code location": (
            code_location(merged)["podSecurityContext"],
            code_location(merged)["securityContext"],
        ),
        "runs": (launcher["runK8sConfig"]["podSpecConfig"]["securityContext"], launcher["securityContext"]),
    }
    for pod, (pod_context, container_context) in pods.items():
        assert pod_context["runAsNonRoot"] is True and pod_context["runAsUser"] > 0, pod
        assert container_context["allowPrivilegeEscalation"] is False, pod
        assert container_context["capabilities"]["drop"] == ["ALL"], pod


@env_param
def test_every_pod_carries_the_contract_labels(environment):
    merged = values(environment)
    expected = {"app.kubernetes.io/part-of": "keel", "keel.dev/environment": environment}
    for where, labels in {
        "webserver": merged["dagsterWebserver"]["labels"],
        "daemon": merged["dagsterDaemon"]["labels"],
        "code location": code_location(merged)["labels"],
        "runs": run_launcher(merged)["labels"],
    }.items():
        assert labels == expected, where


@env_param
def test_the_webserver_is_probed_on_the_port_it_serves(environment):
    webserver = values(environment)["dagsterWebserver"]
    assert webserver["readinessProbe"]["httpGet"]["port"] == webserver["service"]["port"]
    assert webserver["service"]["port"] >= 1024  # a non-root process may not bind below 1024
    assert webserver["resources"]["requests"] and webserver["resources"]["limits"]


def test_prod_serves_the_ui_from_two_replicas():
    assert values("prod")["dagsterWebserver"]["replicaCount"] == 2


@env_param
def test_ticks_are_purged_and_telemetry_is_off(environment):
    merged = values(environment)
    assert merged["telemetry"]["enabled"] is False
    retention = merged["retention"]
    assert retention["enabled"] is True
    for ticks in ("schedule", "sensor"):
        purge = retention[ticks]["purgeAfterDays"]
        assert 0 < purge["skipped"] <= purge["success"] <= purge["failure"], ticks


def test_staging_and_prod_differ_only_in_environment_specific_values():
    staging, prod = flatten(override("staging")), flatten(override("prod"))
    differing = {path for path in staging.keys() | prod.keys() if staging.get(path) != prod.get(path)}
    code_location_env = f".{SUBCHART}.deployments[keel].env"
    expected = {
        f"{code_location_env}[KEEL_ENV].value",
        f"{code_location_env}[KEEL_LAKE_ROOT].value",
        f"{code_location_env}[KEEL_WAREHOUSE_CATALOG].value",  # the environment's database host
        f"{code_location_env}[DAGSTER_WEBSERVER_URL].value",
        ".postgresql.postgresqlHost",
        ".computeLogManager.config.s3ComputeLogManager.bucket",
        ".dagsterWebserver.replicaCount",
    }
    labels = {path for path in differing if path.endswith(".labels.keel.dev/environment")}
    assert len(labels) == 4  # webserver, daemon, code location, runs
    assert differing - labels == expected
