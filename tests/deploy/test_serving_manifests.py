"""The Kubernetes manifests (deploy/k8s): each overlay rendered offline as `kubectl apply -k` builds it.

Every rendered object must be valid Kubernetes 1.31, and the scoring service's objects must hold
the hardening and wiring the service needs: the Bento's non-root user, a read-only root with a
volume for every path BentoML writes, the probes BentoML answers, the contract's secrets, settings
and names, a network policy that lets in only the scoring clients, and replicas that survive a
drain. The renderer itself (deploy/k8s/render.py) is held to kustomize's behaviour, and to failing
loudly on what it does not implement.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"


def _load_renderer():
    # deploy/ is not a package: load render.py from its path, as `python deploy/k8s/render.py` runs it.
    spec = importlib.util.spec_from_file_location("keel_k8s_render", K8S / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


renderer = _load_renderer()

# The production contract (shared by deploy/helm, deploy/k8s, deploy/docker and docs/deploy.md).
NAMESPACES = {"staging": "keel-staging", "prod": "keel-prod"}
REPLICAS = {"staging": (1, 3), "prod": (3, 20)}  # the autoscaler's min and max
IMAGE = re.compile(
    r"^ghcr\.io/keel-platform/(keel|fraud-scorer)"
    r":(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})(@sha256:[0-9a-f]{64})?$"
)
CONTRACT_SECRETS = {
    "keel-postgresql": {"postgresql-password"},
    "keel-aws": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
    "keel-alerts": {"KEEL_ALERT_WEBHOOK_URL"},
    "keel-redis": {"KEEL_ONLINE_STORE_URL"},
    "keel-api-keys": {"api-keys"},
}
SCORING_SECRETS = {"keel-redis", "keel-aws", "keel-api-keys"}
API_KEYS_FILE = "/var/run/secrets/keel/api-keys"
SCORING_LABELS = {"app.kubernetes.io/name": "fraud-scorer", "app.kubernetes.io/component": "scoring"}
HTTP_PORT = 3000

RENDERED = {environment: renderer.render(K8S / "overlays" / environment) for environment in NAMESPACES}


def _id(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def _one(environment: str, kind: str, name: str) -> dict:
    found = [o for o in RENDERED[environment] if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{environment}: expected one {kind} {name}, found {len(found)}"
    return found[0]


def _deployment(environment: str) -> dict:
    return _one(environment, "Deployment", "fraud-scorer")


def _pod_spec(environment: str) -> dict:
    return _deployment(environment)["spec"]["template"]["spec"]


def _scorer(environment: str) -> dict:
    return next(c for c in _pod_spec(environment)["containers"] if c["name"] == "fraud-scorer")


def _workload_containers():
    for environment, objects in RENDERED.items():
        for obj in objects:
            template = obj.get("spec", {}).get("template")
            if template is None:
                continue
            for field in ("initContainers", "containers"):
                for container in template["spec"].get(field, []):
                    yield pytest.param(
                        environment, obj, container, id=f"{environment}-{_id(obj)}-{container['name']}"
                    )


CONTAINERS = list(_workload_containers())
OBJECTS = [
    pytest.param(environment, obj, id=f"{environment}-{_id(obj)}")
    for environment, objects in RENDERED.items()
    for obj in objects
]
ENVIRONMENTS = pytest.mark.parametrize("environment", list(NAMESPACES))


def _quantity(value) -> float:
    units = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)", str(value))
    assert match and match[2] in units, f"not a Kubernetes quantity: {value!r}"
    return float(match[1]) * units[match[2]]


def _bento_image_defaults():
    # What `bentoml containerize` builds with (bentoml 1.4's Dockerfile generator): user, UID/GID, paths.
    from bentoml._internal.container import generate

    return generate


# --- every object -------------------------------------------------------------------------------


@pytest.mark.parametrize(("environment", "obj"), OBJECTS)
def test_every_rendered_object_is_valid_kubernetes_1_31(environment, obj):
    try:
        kubernetes_validate.validate(obj, "1.31", strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{environment} {_id(obj)}: {'.'.join(map(str, error.path))}: {error.message}")


@ENVIRONMENTS
def test_each_overlay_renders_the_scoring_service_and_the_shared_platform_objects(environment):
    assert sorted(_id(obj) for obj in RENDERED[environment]) == sorted(
        [
            f"Namespace/{NAMESPACES[environment]}",
            "ServiceAccount/fraud-scorer",
            "Deployment/fraud-scorer",
            "Service/fraud-scorer",
            "HorizontalPodAutoscaler/fraud-scorer",
            "PodDisruptionBudget/fraud-scorer",
            "NetworkPolicy/fraud-scorer",
        ]
    )


@pytest.mark.parametrize(("environment", "obj"), OBJECTS)
def test_every_object_carries_its_overlays_namespace_and_environment_label(environment, obj):
    if obj["kind"] == "Namespace":
        assert obj["metadata"]["name"] == NAMESPACES[environment]
        assert "namespace" not in obj["metadata"]
    else:
        assert obj["metadata"]["namespace"] == NAMESPACES[environment]
    expected = {"keel.dev/environment": environment, "app.kubernetes.io/part-of": "keel"}
    assert expected.items() <= obj["metadata"]["labels"].items()
    if "template" in obj.get("spec", {}):  # and the pods it creates
        assert expected.items() <= obj["spec"]["template"]["metadata"]["labels"].items()


@ENVIRONMENTS
def test_no_secret_value_is_rendered_and_every_referenced_secret_is_in_the_contract(environment):
    assert not [_id(o) for o in RENDERED[environment] if o["kind"] in ("Secret", "ConfigMap")]
    references = list(_secret_references(RENDERED[environment]))
    assert {name for name, _ in references} == SCORING_SECRETS
    for name, key in references:
        assert name in CONTRACT_SECRETS, f"{name} is not a Secret of the contract"
        assert key is None or key in CONTRACT_SECRETS[name], f"{name} has no key {key} in the contract"


def _secret_references(node):
    """(secret name, key or None) for every reference to a Secret anywhere below ``node``."""
    if isinstance(node, list):
        for item in node:
            yield from _secret_references(item)
        return
    if not isinstance(node, dict):
        return
    for field, value in node.items():
        if field == "secretKeyRef":
            yield value["name"], value["key"]
        elif field == "secretRef":  # envFrom
            yield value["name"], None
        elif field == "secret" and isinstance(value, dict):  # a volume or a projected source
            name = value.get("secretName") or value.get("name")
            items = value.get("items") or [{"key": None}]
            for item in items:
                yield name, item["key"]
        elif field == "imagePullSecrets":
            for item in value:
                yield item["name"], None
        else:
            yield from _secret_references(value)


# --- the scoring pods ---------------------------------------------------------------------------


@pytest.mark.parametrize(("environment", "workload", "container"), CONTAINERS)
def test_containers_run_as_the_bento_user_without_privileges(environment, workload, container):
    pod = workload["spec"]["template"]["spec"]
    bento = _bento_image_defaults()
    pod_context, context = pod["securityContext"], container["securityContext"]
    # The image's USER is a name (`bentoml`): the kubelet enforces runAsNonRoot only with a numeric UID.
    for security in (pod_context, context):
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] == bento.BENTO_UID_GID
        assert security["runAsGroup"] == bento.BENTO_UID_GID
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert not context.get("privileged", False)
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "fraud-scorer"
    account = _one(environment, "ServiceAccount", "fraud-scorer")
    assert account["automountServiceAccountToken"] is False


@pytest.mark.parametrize(("environment", "workload", "container"), CONTAINERS)
def test_containers_have_a_read_only_root_and_a_volume_for_every_path_bentoml_writes(
    environment, workload, container
):
    pod = workload["spec"]["template"]["spec"]
    bento = _bento_image_defaults()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    scratch = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    writable = {m["mountPath"] for m in container["volumeMounts"] if m["name"] in scratch}
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    # tempfile (uploads, /score_file results, the server's Unix sockets), and BentoML's home: its
    # store folders, Prometheus multiprocess files and task results.
    assert "/tmp" in writable
    assert env.get("BENTOML_HOME") in writable
    # A volume at or above the Bento's folder would hide the Bento (code and model) in the image.
    mounted = [m["mountPath"].rstrip("/") + "/" for m in container["volumeMounts"]]
    hiding = [path for path in mounted if (bento.BENTO_PATH.rstrip("/") + "/").startswith(path)]
    assert not hiding, f"{hiding} would hide the Bento at {bento.BENTO_PATH}"
    for volume in pod["volumes"]:
        if "emptyDir" in volume:  # a full disk evicts the pod instead of filling the node
            assert _quantity(volume["emptyDir"]["sizeLimit"]) > 0


@pytest.mark.parametrize(("environment", "workload", "container"), CONTAINERS)
def test_containers_are_probed_on_livez_and_readyz_of_the_http_port(environment, workload, container):
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": HTTP_PORT}

    def probed(probe: dict) -> tuple[str, int]:
        port = probe["httpGet"]["port"]
        return probe["httpGet"]["path"], ports.get(port, port)

    assert probed(container["livenessProbe"]) == ("/livez", HTTP_PORT)
    assert probed(container["readinessProbe"]) == ("/readyz", HTTP_PORT)
    startup = container["startupProbe"]
    assert probed(startup) == ("/livez", HTTP_PORT)
    # Loading the model takes tens of seconds: the liveness probe waits for the startup probe,
    # which allows far more than that.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


@pytest.mark.parametrize(("environment", "workload", "container"), CONTAINERS)
def test_containers_request_and_limit_cpu_and_memory(environment, workload, container):
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    for resource in ("cpu", "memory"):
        assert _quantity(requests[resource]) > 0
        assert _quantity(requests[resource]) <= _quantity(limits[resource])
    # Memory is not overcommitted: a pod under node pressure is not OOM-killed within its request.
    assert _quantity(requests["memory"]) == _quantity(limits["memory"])


@pytest.mark.parametrize(("environment", "workload", "container"), CONTAINERS)
def test_containers_run_an_image_pinned_to_a_tag_of_the_contract_registry(environment, workload, container):
    match = IMAGE.match(container["image"])
    assert match, f"{container['image']} is not a tagged image of ghcr.io/keel-platform"
    assert match["tag"] != "latest"


@ENVIRONMENTS
def test_the_scoring_service_gets_the_contract_settings_of_its_environment(environment):
    env = {e["name"]: e for e in _scorer(environment)["env"]}
    assert len(env) == len(_scorer(environment)["env"]), "a variable is set twice"
    values = {name: e.get("value") for name, e in env.items()}
    assert values["KEEL_ENV"] == environment
    assert values["KEEL_NAMESPACE"] == "prod"
    assert (
        values["KEEL_PREDICTION_LOG_URI"]
        == f"s3://keel-lake-{environment}/lake/namespaces/prod/prediction_log_spool"
    )
    assert values["KEEL_API_KEYS_FILE"] == API_KEYS_FILE
    assert values["AWS_REGION"] == "eu-west-1"
    assert values["BENTOML_DO_NOT_TRACK"] == "true"

    def secret(name):
        return env[name]["valueFrom"]["secretKeyRef"]

    assert secret("KEEL_ONLINE_STORE_URL") == {"name": "keel-redis", "key": "KEEL_ONLINE_STORE_URL"}
    assert secret("AWS_ACCESS_KEY_ID") == {"name": "keel-aws", "key": "AWS_ACCESS_KEY_ID"}
    assert secret("AWS_SECRET_ACCESS_KEY") == {"name": "keel-aws", "key": "AWS_SECRET_ACCESS_KEY"}


@ENVIRONMENTS
def test_the_api_keys_secret_is_mounted_read_only_where_the_service_reads_it(environment):
    pod, container = _pod_spec(environment), _scorer(environment)
    volume = next(v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "keel-api-keys")
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True
    files = {f"{mount['mountPath']}/{item['path']}": item["key"] for item in volume["secret"]["items"]}
    assert files == {API_KEYS_FILE: "api-keys"}
    # Readable by the service's group only (fsGroup), not by every user of the node.
    assert volume["secret"]["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] == _bento_image_defaults().BENTO_UID_GID


@ENVIRONMENTS
def test_rollouts_keep_capacity_drain_gracefully_and_spread_pods_across_nodes(environment):
    deployment = _deployment(environment)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = deployment["spec"]["template"]["spec"]
    pre_stop = _scorer(environment)["lifecycle"]["preStop"]["sleep"]["seconds"]
    # endpoint removal + requests in flight (10 s timeout) + the prediction log's last write
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + 30
    spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    by_node = spread["kubernetes.io/hostname"]
    assert by_node["whenUnsatisfiable"] == "DoNotSchedule"
    assert by_node["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(HTTP_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"


@ENVIRONMENTS
def test_the_service_sends_port_80_to_the_pods_http_port(environment):
    service = _one(environment, "Service", "fraud-scorer")
    deployment = _deployment(environment)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert SCORING_LABELS.items() <= pod_labels.items()
    [port] = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (80, "http")
    assert {p["name"]: p["containerPort"] for p in _scorer(environment)["ports"]}["http"] == HTTP_PORT


# --- scaling and disruptions ------------------------------------------------------------------------


@ENVIRONMENTS
def test_the_autoscaler_scales_the_deployment_on_cpu_within_the_environments_bounds(environment):
    hpa = _one(environment, "HorizontalPodAutoscaler", "fraud-scorer")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fraud-scorer"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == REPLICAS[environment]
    [metric] = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 0 < metric["resource"]["target"]["averageUtilization"] < 100
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60


@ENVIRONMENTS
def test_the_disruption_budget_covers_the_scoring_pods_and_never_blocks_a_drain(environment):
    pdb = _one(environment, "PodDisruptionBudget", "fraud-scorer")["spec"]
    pod_labels = _deployment(environment)["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    assert ("minAvailable" in pdb) != ("maxUnavailable" in pdb), "exactly one of them (the API refuses both)"
    minimum = REPLICAS[environment][0]
    # At the autoscaler's minimum, a drain may still evict one pod.
    assert _pods_kept_through_a_drain(pdb, minimum) < minimum


def _pods_kept_through_a_drain(pdb: dict, replicas: int) -> int:
    if "minAvailable" in pdb:
        assert isinstance(pdb["minAvailable"], int), "a percentage would round with the replica count"
        return pdb["minAvailable"]
    assert isinstance(pdb["maxUnavailable"], int), "a percentage would round with the replica count"
    return replicas - pdb["maxUnavailable"]


def test_prod_runs_at_least_three_scoring_pods_and_keeps_two_through_a_drain():
    hpa = _one("prod", "HorizontalPodAutoscaler", "fraud-scorer")["spec"]
    pdb = _one("prod", "PodDisruptionBudget", "fraud-scorer")["spec"]
    assert hpa["minReplicas"] >= 3
    assert _pods_kept_through_a_drain(pdb, hpa["minReplicas"]) >= 2


# --- network policy -------------------------------------------------------------------------------


def _network_policy(environment: str) -> dict:
    return _one(environment, "NetworkPolicy", "fraud-scorer")["spec"]


@ENVIRONMENTS
def test_the_network_policy_selects_the_scoring_pods_for_both_directions(environment):
    policy = _network_policy(environment)
    pod_labels = _deployment(environment)["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["podSelector"]["matchLabels"].items() >= SCORING_LABELS.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]


def _rules(rules: list[dict], peers_field: str) -> set[tuple[str, int, str]]:
    """(peer, port, protocol) for every rule: a rule without ports or peers would allow all of them."""
    allowed = set()
    for rule in rules:
        assert rule.get("ports"), f"a rule without ports allows every port: {rule}"
        peers = rule.get(peers_field)
        for peer in peers if peers is not None else ["anywhere"]:
            assert peer != {}, "an empty peer matches everything"
            assert not (isinstance(peer, dict) and "ipBlock" in peer), f"no address ranges: {peer}"
            for port in rule["ports"]:
                allowed.add((json.dumps(peer, sort_keys=True), port["port"], port.get("protocol", "TCP")))
    return allowed


def _namespace(name: str) -> str:
    return json.dumps({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}})


@ENVIRONMENTS
def test_the_network_policy_lets_in_only_scoring_clients_ingress_and_prometheus_on_port_3000(environment):
    clients = json.dumps({"podSelector": {"matchLabels": {"keel.dev/scoring-client": "true"}}})
    assert _rules(_network_policy(environment)["ingress"], "from") == {
        (clients, HTTP_PORT, "TCP"),
        (_namespace("ingress-nginx"), HTTP_PORT, "TCP"),
        (_namespace("monitoring"), HTTP_PORT, "TCP"),
    }


@ENVIRONMENTS
def test_the_network_policy_lets_out_only_dns_redis_and_https(environment):
    assert _rules(_network_policy(environment)["egress"], "to") == {
        (_namespace("kube-system"), 53, "UDP"),
        (_namespace("kube-system"), 53, "TCP"),
        ('"anywhere"', 6379, "TCP"),
        ('"anywhere"', 443, "TCP"),
    }


# --- shared platform objects ------------------------------------------------------------------------


@ENVIRONMENTS
def test_the_namespace_enforces_a_pod_security_level(environment):
    labels = _one(environment, "Namespace", NAMESPACES[environment])["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] in ("baseline", "restricted")
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"


# --- the renderer -----------------------------------------------------------------------------------


def _write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


KUSTOMIZATION = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
ACCOUNT = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n"
SMALL_BUNDLE = {
    "base/kustomization.yaml": KUSTOMIZATION
    + "resources: [objects.yaml]\nlabels:\n  - pairs: {team: t}\n    includeTemplates: true\n",
    "base/objects.yaml": """\
apiVersion: v1
kind: Namespace
metadata: {name: placeholder}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      initContainers: [{name: init, image: "localhost:5000/tools:1"}]
      containers:
        - name: web
          image: ghcr.io/x/web:1
          env: [{name: A, value: "1"}, {name: B, value: "2"}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80}]}
""",
    "overlay/kustomization.yaml": KUSTOMIZATION
    + """\
namespace: ns1
resources: [../base]
patches: [{path: patch.yaml}]
labels: [{pairs: {env: e}, includeSelectors: false}]
images:
  - {name: ghcr.io/x/web, newTag: "2"}
  - {name: "localhost:5000/tools", newName: reg.example/tools, digest: "sha256:abc"}
""",
    "overlay/patch.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: null
  template:
    spec:
      containers:
        - name: web
          env: [{name: C, value: "3"}, {name: A, value: null}]
""",
}


def test_the_renderer_applies_patches_namespace_labels_and_images_as_kustomize_does(tmp_path):
    # The expected objects are what `kubectl kustomize` (kustomize v5.5) builds from SMALL_BUNDLE.
    # In kustomize's order: Namespace, Service, Deployment.
    namespace, service, deployment = renderer.render(_write(tmp_path, SMALL_BUNDLE) / "overlay")
    assert namespace["metadata"] == {"name": "ns1", "labels": {"team": "t", "env": "e"}}
    assert (deployment["metadata"]["namespace"], service["metadata"]["namespace"]) == ("ns1", "ns1")
    spec = deployment["spec"]
    assert "replicas" not in spec  # null deletes
    # The patch's items first, in its order; `value: null` drops the value, not the variable.
    assert spec["template"]["spec"]["containers"][0]["env"] == [
        {"name": "C", "value": "3"},
        {"name": "A"},
        {"name": "B", "value": "2"},
    ]
    assert spec["template"]["spec"]["containers"][0]["image"] == "ghcr.io/x/web:2"
    assert spec["template"]["spec"]["initContainers"][0]["image"] == "reg.example/tools@sha256:abc"
    assert deployment["metadata"]["labels"] == {"team": "t", "env": "e"}
    assert spec["template"]["metadata"]["labels"] == {"app": "web", "team": "t"}  # includeTemplates
    assert spec["selector"] == {"matchLabels": {"app": "web"}}  # selectors are never touched
    assert service["spec"]["selector"] == {"app": "web"}


@pytest.mark.parametrize(
    "overlay", [*[K8S / "overlays" / environment for environment in NAMESPACES], "small bundle"]
)
def test_the_renderer_builds_the_objects_kubectl_kustomize_builds(overlay, tmp_path):
    # A cross-check against the real thing where kubectl is installed; the renderer is what the
    # other tests rely on, so they run without it.
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: no cross-check against kustomize")
    if overlay == "small bundle":
        overlay = _write(tmp_path, SMALL_BUNDLE) / "overlay"
    built = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60, check=True
    )
    assert renderer.render(overlay) == [obj for obj in yaml.safe_load_all(built.stdout) if obj]


@pytest.mark.parametrize(
    "entry",
    [
        "commonLabels: {a: b}",
        "commonAnnotations: {a: b}",
        "namePrefix: x-",
        "replicas: [{name: a, count: 2}]",
        "patchesStrategicMerge: [p.yaml]",
        "configMapGenerator: [{name: c, literals: [a=b]}]",
        "components: [../c]",
    ],
)
def test_the_renderer_refuses_a_kustomization_key_it_does_not_support(tmp_path, entry):
    kustomization = tmp_path.resolve() / "kustomization.yaml"
    _write(
        tmp_path, {"kustomization.yaml": KUSTOMIZATION + "resources: [a.yaml]\n" + entry, "a.yaml": ACCOUNT}
    )
    key = entry.split(":")[0]
    with pytest.raises(
        renderer.RenderError, match=re.escape(f"{kustomization}: key '{key}' is not supported")
    ):
        renderer.render(tmp_path)


def test_the_renderer_command_fails_with_the_file_and_key_it_does_not_support(tmp_path, capsys):
    _write(
        tmp_path,
        {"kustomization.yaml": KUSTOMIZATION + "resources: [a.yaml]\nnameSuffix: -x\n", "a.yaml": ACCOUNT},
    )
    assert renderer.main([str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{tmp_path.resolve() / 'kustomization.yaml'}: key 'nameSuffix' is not supported" in captured.err


def test_the_renderer_command_prints_the_overlay_as_multi_document_yaml(capsys):
    assert renderer.main([str(K8S / "overlays" / "prod")]) == 0
    assert list(yaml.safe_load_all(capsys.readouterr().out)) == RENDERED["prod"]


PATCH_HEAD = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (  # a list kustomize matches by two keys (containerPort, protocol), with its own heuristics
            PATCH_HEAD + "      containers: [{name: web, ports: [{containerPort: 81}]}]\n",
            "spec.template.spec.containers[].ports: render.py merges only lists whose Kubernetes merge key",
        ),
        (
            PATCH_HEAD + "      containers: [{name: web, $patch: delete}]\n",
            "spec.template.spec.containers[].$patch: patch directives are not supported",
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec: {}\n",
            "0 objects match Deployment api",
        ),
    ],
)
def test_the_renderer_refuses_a_patch_it_cannot_apply_as_kustomize_would(tmp_path, patch, message):
    bundle = {
        "kustomization.yaml": KUSTOMIZATION + "resources: [d.yaml]\npatches: [{path: p.yaml}]\n",
        "d.yaml": SMALL_BUNDLE["base/objects.yaml"].split("---\n")[1],
        "p.yaml": patch,
    }
    with pytest.raises(renderer.RenderError) as error:
        renderer.render(_write(tmp_path, bundle))
    assert str(error.value).startswith(f"{tmp_path.resolve() / 'p.yaml'}: {message}")


@pytest.mark.parametrize(
    ("document", "line"),
    [
        (ACCOUNT + "automountServiceAccountToken: no\n", 5),  # a boolean only in YAML 1.1
        (ACCOUNT + "spec: {mode: 0440}\n", 5),  # octal in one, decimal in the other
        (ACCOUNT + "spec: {size: 1e3}\n", 5),  # a number only in YAML 1.2
        (ACCOUNT + "metadata: {name: b}\n", 5),  # a duplicate key: the last wins in PyYAML only
    ],
)
def test_the_renderer_refuses_yaml_that_kustomize_would_read_differently(tmp_path, document, line):
    _write(tmp_path, {"kustomization.yaml": KUSTOMIZATION + "resources: [a.yaml]\n", "a.yaml": document})
    with pytest.raises(renderer.RenderError, match=re.escape(f"{tmp_path.resolve() / 'a.yaml'}:{line}:")):
        renderer.render(tmp_path)


def test_the_merge_keys_the_renderer_knows_are_the_kubernetes_1_31_merge_keys():
    schemas = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / "v1.31.0-local-strict"
    definitions = json.loads((schemas / "_definitions.json").read_text())["$defs"]

    def resolve(schema: dict) -> dict:
        while "$ref" in schema:
            schema = definitions[schema["$ref"].split("#/$defs/")[1]]
        return schema

    assert renderer.MERGE_KEYS
    for (kind, path), key in renderer.MERGE_KEYS.items():
        schema = json.loads((schemas / f"{kind.lower()}-apps-v1.json").read_text())
        for step in path.split("."):
            name, is_item = step.removesuffix("[]"), step.endswith("[]")
            schema = resolve(resolve(schema)["properties"][name])
            if is_item:
                schema = resolve(schema["items"])
        assert schema["x-kubernetes-patch-strategy"] == "merge", f"{kind} {path}"
        assert schema["x-kubernetes-patch-merge-key"] == key, f"{kind} {path}"
        assert schema.get("x-kubernetes-list-map-keys", [key]) == [key], f"{kind} {path}: several keys"
