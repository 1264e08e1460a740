"""Render a kustomization of ``deploy/k8s`` offline, as ``kubectl apply -k`` would build it.

Production applies the manifests with ``kubectl apply -k deploy/k8s/overlays/<env>``. This module
builds the same objects in plain Python (PyYAML only, no kubectl, no cluster), so that the tests
validate exactly what would be applied. It implements the part of kustomize this bundle uses, the
way kustomize implements it, and refuses everything else with an error naming the file and the key:
a renderer that skipped a field it does not understand would test other objects than the ones
kubectl applies.

Supported kustomization keys:

- ``resources``: YAML files (one or more documents) inside the kustomization's folder, and folders
  holding a kustomization (bases, anywhere), rendered first.
- ``patches``: strategic-merge patches from files (``path:``), each naming its object by
  apiVersion, kind and metadata.name. Lists are merged by their Kubernetes merge key, and only lists
  whose key is known (``MERGE_KEYS``, checked against the Kubernetes OpenAPI by the tests); ``null``
  deletes a field. Directives (``$patch``, ``$retainKeys``...) are refused.
- ``namespace``: set on every namespaced object; a ``v1`` Namespace object is renamed to it.
- ``labels``: ``pairs`` added to every object's metadata.labels and, with ``includeTemplates: true``,
  to pod templates. Selectors are never touched (``includeSelectors: true`` and the deprecated
  ``commonLabels``, which rewrite selectors, are refused).
- ``images``: ``name`` with ``newName``, ``newTag`` and/or ``digest``, on every container image.

Transformations run in kustomize's order (patches, namespace, labels, images) and the output is in
kustomize's default ("legacy") order: Namespace first, workloads after what they use.

    python deploy/k8s/render.py deploy/k8s/overlays/prod   # multi-document YAML on stdout
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
KUSTOMIZATION_KEYS = frozenset(
    {"apiVersion", "kind", "resources", "patches", "namespace", "labels", "images"}
)
KUSTOMIZE_API_VERSION = "kustomize.config.k8s.io/v1beta1"

# Kinds the renderer knows, and whether each is namespaced: the namespace transformer needs to know,
# and an object of an unknown kind is refused rather than guessed at.
NAMESPACED = {
    "Namespace": False,
    "ServiceAccount": True,
    "Service": True,
    "PersistentVolumeClaim": True,
    "Deployment": True,
    "HorizontalPodAutoscaler": True,
    "PodDisruptionBudget": True,
    "NetworkPolicy": True,
}
# Where `labels: [{includeTemplates: true}]` also writes (kustomize's templateLabels field specs,
# restricted to the kinds above).
TEMPLATE_LABELS = {"Deployment": ("spec", "template", "metadata", "labels")}

_POD_SPEC_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "imagePullSecrets": "name",
    "containers[].env": "name",
    "containers[].volumeMounts": "mountPath",
    "initContainers[].env": "name",
    "initContainers[].volumeMounts": "mountPath",
}
# (kind, path of a list) -> the one key strategic merge matches its items by. Only lists with a plain
# "merge" strategy and a single key belong here. Left out, so that a patch touching them fails
# rather than being merged differently from kustomize: atomic lists (a patch replaces them),
# `volumes` ("merge,retainKeys"), and lists keyed by several fields (`ports`: containerPort and
# protocol; `topologySpreadConstraints`: topologyKey and whenUnsatisfiable), which kustomize
# matches with heuristics for missing key fields and orders differently.
MERGE_KEYS = {("Deployment", f"spec.template.spec.{path}"): key for path, key in _POD_SPEC_MERGE_KEYS.items()}

# kustomize's legacy output order (api/internal/builtins/SortOrderTransformer.go).
ORDER_FIRST = (
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
)
ORDER_LAST = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


class RenderError(ValueError):
    """The kustomization uses something this renderer does not support, or is wrong."""


# --- YAML -----------------------------------------------------------------------------------------
# PyYAML reads YAML 1.1; kustomize's parser mostly YAML 1.2. Plain scalars whose type the two may
# read differently (`on`, `yes`, `0440`, `1:30`, `1e3`, `0o7`, unquoted dates) and duplicate keys (an
# error for kustomize, the last one wins for PyYAML) are refused, so both always see the same values.
_YAML12_BOOL = re.compile(r"^(true|True|TRUE|false|False|FALSE)$")
_YAML12_INT = re.compile(r"^[-+]?(0|[1-9][0-9]*)$")
_YAML12_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
# What YAML 1.2's core schema reads as a number although PyYAML reads a string.
_YAML12_NUMBER_STRING = re.compile(
    r"^([-+]?[0-9]+[eE][-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN))$"
)


class _StrictLoader(yaml.SafeLoader):
    def _ambiguous(self, node: yaml.Node, what: str) -> RenderError:
        mark = node.start_mark
        return RenderError(
            f"{mark.name}:{mark.line + 1}: {node.value!r} reads as {what} in YAML 1.1 but maybe not in "
            "kustomize's YAML 1.2: quote it, or write it the way both read alike"
        )

    def construct_yaml_bool(self, node: yaml.Node) -> bool:
        if not _YAML12_BOOL.match(node.value):
            raise self._ambiguous(node, "a boolean")
        return super().construct_yaml_bool(node)

    def construct_yaml_int(self, node: yaml.Node) -> int:
        if not _YAML12_INT.match(node.value):
            raise self._ambiguous(node, "an integer")
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: yaml.Node) -> float:
        if not _YAML12_FLOAT.match(node.value):
            raise self._ambiguous(node, "a float")
        return super().construct_yaml_float(node)

    def construct_yaml_timestamp(self, node: yaml.Node) -> Any:
        raise self._ambiguous(node, "a timestamp")

    def construct_yaml_str(self, node: yaml.Node) -> str:
        if node.style is None and _YAML12_NUMBER_STRING.match(node.value):
            mark = node.start_mark
            raise RenderError(
                f"{mark.name}:{mark.line + 1}: {node.value!r} reads as a string in YAML 1.1 but as a number "
                "in kustomize's YAML 1.2: quote it, or write the number plainly"
            )
        return super().construct_yaml_str(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                mark = key_node.start_mark
                raise RenderError(f"{mark.name}:{mark.line + 1}: key {key!r} appears twice in one mapping")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


for _tag, _method in (
    ("tag:yaml.org,2002:bool", _StrictLoader.construct_yaml_bool),
    ("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int),
    ("tag:yaml.org,2002:float", _StrictLoader.construct_yaml_float),
    ("tag:yaml.org,2002:timestamp", _StrictLoader.construct_yaml_timestamp),
    ("tag:yaml.org,2002:str", _StrictLoader.construct_yaml_str),
    ("tag:yaml.org,2002:map", _StrictLoader.construct_yaml_map),
):
    _StrictLoader.add_constructor(_tag, _method)


def load_documents(path: Path) -> list[Any]:
    """The non-empty YAML documents of a file, read as kustomize reads them."""
    with path.open(encoding="utf-8") as stream:
        loader = _StrictLoader(stream)  # marks (errors) name the file: PyYAML takes stream.name
        try:
            documents = []
            while loader.check_data():
                documents.append(loader.get_data())
        except yaml.YAMLError as error:
            raise RenderError(f"{path}: not valid YAML: {error}") from error
        finally:
            loader.dispose()
    return [document for document in documents if document is not None]


# --- kustomization --------------------------------------------------------------------------------


def _kustomization_file(directory: Path) -> Path:
    found = [directory / name for name in KUSTOMIZATION_FILES if (directory / name).is_file()]
    if not found:
        raise RenderError(f"{directory}: no kustomization file (one of {', '.join(KUSTOMIZATION_FILES)})")
    if len(found) > 1:
        raise RenderError(f"{directory}: several kustomization files ({', '.join(p.name for p in found)})")
    return found[0]


def _inside(path: Path, directory: Path, source: Path, key: str) -> Path:
    # kustomize's default load restrictor: files (not bases) must be in or below the kustomization.
    resolved = path.resolve()
    if not resolved.is_relative_to(directory):
        raise RenderError(f"{source}: {key}: {path} is outside {directory} (kustomize refuses it)")
    return resolved


def _object_id(obj: dict) -> tuple[str, str, str, str]:
    metadata = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], metadata.get("namespace") or "", metadata["name"])


def _describe(obj: dict) -> str:
    api_version, kind, namespace, name = _object_id(obj)
    return f"{kind} {namespace + '/' if namespace else ''}{name} ({api_version})"


def _check_object(obj: Any, source: Path) -> dict:
    if not isinstance(obj, dict):
        raise RenderError(f"{source}: a document is not a mapping: {obj!r}")
    for key in ("apiVersion", "kind"):
        if not isinstance(obj.get(key), str):
            raise RenderError(f"{source}: a document has no {key}")
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        raise RenderError(f"{source}: {obj['kind']} has no metadata.name")
    if obj["kind"] not in NAMESPACED:
        raise RenderError(
            f"{source}: kind {obj['kind']} is not one render.py knows ({', '.join(NAMESPACED)}); add it to "
            "NAMESPACED with its scope"
        )
    return obj


def _build(directory: Path, parents: tuple[Path, ...]) -> list[dict]:
    directory = directory.resolve()
    if directory in parents:
        raise RenderError(
            f"{directory}: kustomizations include each other ({' -> '.join(map(str, parents))})"
        )
    source = _kustomization_file(directory)
    documents = load_documents(source)
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise RenderError(f"{source}: expected one mapping")
    kustomization = documents[0]
    for key in kustomization:
        if key not in KUSTOMIZATION_KEYS:
            raise RenderError(
                f"{source}: key {key!r} is not supported by render.py (it supports "
                f"{', '.join(sorted(KUSTOMIZATION_KEYS))}); kubectl would apply it, so the rendered "
                "objects would not be the applied ones"
            )
    if kustomization.get("apiVersion", KUSTOMIZE_API_VERSION) != KUSTOMIZE_API_VERSION:
        raise RenderError(f"{source}: apiVersion: expected {KUSTOMIZE_API_VERSION}")
    if kustomization.get("kind", "Kustomization") != "Kustomization":
        raise RenderError(f"{source}: kind: expected Kustomization (components are not supported)")

    objects: list[dict] = []
    for entry in _list(kustomization, "resources", source):
        if not isinstance(entry, str) or "://" in entry or entry.startswith(("github.com/", "git@")):
            raise RenderError(f"{source}: resources: {entry!r}: only local files and folders are supported")
        path = directory / entry
        if path.is_dir():
            loaded = _build(path, (*parents, directory))
        elif path.is_file():
            path = _inside(path, directory, source, "resources")
            loaded = [_check_object(obj, path) for obj in load_documents(path)]
        else:
            raise RenderError(f"{source}: resources: {entry!r} does not exist")
        for obj in loaded:
            if any(_object_id(obj) == _object_id(other) for other in objects):
                raise RenderError(f"{source}: resources: {_describe(obj)} is defined twice")
            objects.append(obj)

    for number, entry in enumerate(_list(kustomization, "patches", source)):
        _apply_patch(objects, entry, directory, source, number)
    if "namespace" in kustomization:
        _set_namespace(objects, kustomization["namespace"], source)
    for number, entry in enumerate(_list(kustomization, "labels", source)):
        _add_labels(objects, entry, source, number)
    for number, entry in enumerate(_list(kustomization, "images", source)):
        _set_image(objects, entry, source, number)
    return objects


def _list(kustomization: dict, key: str, source: Path) -> list:
    value = kustomization.get(key, [])
    if not isinstance(value, list):
        raise RenderError(f"{source}: {key}: expected a list")
    return value


def _entry(entry: Any, allowed: set[str], source: Path, where: str) -> dict:
    if not isinstance(entry, dict):
        raise RenderError(f"{source}: {where}: expected a mapping")
    for key in entry:
        if key not in allowed:
            raise RenderError(
                f"{source}: {where}: key {key!r} is not supported by render.py (it supports "
                f"{', '.join(sorted(allowed))})"
            )
    return entry


def _string(entry: dict, key: str, source: Path, where: str) -> str:
    value = entry[key]
    if not isinstance(value, str) or not value:
        raise RenderError(f"{source}: {where}.{key}: expected a non-empty string, got {value!r}")
    return value


# --- patches --------------------------------------------------------------------------------------


def _apply_patch(objects: list[dict], entry: Any, directory: Path, source: Path, number: int) -> None:
    where = f"patches[{number}]"
    entry = _entry(entry, {"path"}, source, where)
    if "path" not in entry:
        raise RenderError(f"{source}: {where}: needs `path` (inline patches and targets are not supported)")
    path = _inside(directory / _string(entry, "path", source, where), directory, source, where)
    if not path.is_file():
        raise RenderError(f"{source}: {where}: {entry['path']} does not exist")
    documents = load_documents(path)
    if len(documents) != 1:
        raise RenderError(f"{path}: a patch file holds exactly one patch, found {len(documents)}")
    patch = documents[0]
    if not isinstance(patch, dict) or not all(isinstance(patch.get(k), str) for k in ("apiVersion", "kind")):
        raise RenderError(f"{path}: a patch needs apiVersion and kind")
    metadata = patch.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        raise RenderError(f"{path}: a patch needs metadata.name")
    if "namespace" in metadata:
        raise RenderError(f"{path}: metadata.namespace: patches match by name; leave the namespace out")
    targets = [
        obj
        for obj in objects
        if (obj["apiVersion"], obj["kind"], obj["metadata"]["name"])
        == (patch["apiVersion"], patch["kind"], metadata["name"])
    ]
    if len(targets) != 1:
        raise RenderError(
            f"{path}: {len(targets)} objects match {patch['kind']} {metadata['name']} "
            f"({patch['apiVersion']}); a patch needs exactly one"
        )
    target = targets[0]
    merged = _merge(target, patch, patch["kind"], "", path)
    target.clear()
    target.update(merged)


def _merge(original: Any, patch: Any, kind: str, path: str, source: Path) -> Any:
    """Strategic merge of ``patch`` into ``original`` (a new value; neither argument changes)."""
    if not isinstance(patch, dict):
        if isinstance(patch, list):
            raise RenderError(f"{source}: {path}: lists are merged only as fields of a mapping")
        return copy.deepcopy(patch)
    merged = copy.deepcopy(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        where = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and key.startswith("$"):
            raise RenderError(f"{source}: {where}: patch directives are not supported by render.py")
        if value is None:
            merged.pop(key, None)  # strategic merge: null deletes the field
        elif isinstance(value, list):
            merged[key] = _merge_list(merged.get(key), value, kind, where, source)
        else:
            merged[key] = _merge(merged.get(key), value, kind, where, source)
    return merged


def _merge_list(original: Any, patch: list, kind: str, path: str, source: Path) -> list:
    merge_key = MERGE_KEYS.get((kind, path))
    if merge_key is None:
        known = ", ".join(sorted(p for k, p in MERGE_KEYS if k == kind)) or "none"
        raise RenderError(
            f"{source}: {path}: render.py merges only lists whose Kubernetes merge key it knows "
            f"({kind}: {known}); kustomize may merge or replace this one, so render.py refuses to guess"
        )
    originals = original if isinstance(original, list) else []
    by_key = {old.get(merge_key): old for old in originals if isinstance(old, dict)}
    merged, patched = [], set()
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise RenderError(f"{source}: {path}: every item of the patch needs its merge key {merge_key!r}")
        if item[merge_key] in patched:
            raise RenderError(f"{source}: {path}: {merge_key} {item[merge_key]!r} appears twice in the patch")
        patched.add(item[merge_key])
        merged.append(_merge(by_key.get(item[merge_key], {}), item, kind, f"{path}[]", source))
    # kustomize's order (checked against `kubectl kustomize`): the patch's items first, in the
    # patch's order, then the original items the patch does not name, in their order.
    merged += [
        copy.deepcopy(old)
        for old in originals
        if not (isinstance(old, dict) and old.get(merge_key) in patched)
    ]
    return merged


# --- namespace, labels, images ----------------------------------------------------------------------


def _set_namespace(objects: list[dict], namespace: Any, source: Path) -> None:
    if not isinstance(namespace, str) or not namespace:
        raise RenderError(f"{source}: namespace: expected a non-empty string")
    for obj in objects:
        if obj["kind"] == "Namespace" and obj["apiVersion"] == "v1":
            obj["metadata"]["name"] = namespace  # kustomize renames the Namespace object itself
        elif NAMESPACED[obj["kind"]]:
            obj["metadata"]["namespace"] = namespace


def _add_labels(objects: list[dict], entry: Any, source: Path, number: int) -> None:
    where = f"labels[{number}]"
    entry = _entry(entry, {"pairs", "includeSelectors", "includeTemplates"}, source, where)
    pairs = entry.get("pairs")
    if not isinstance(pairs, dict) or not pairs:
        raise RenderError(f"{source}: {where}.pairs: expected a mapping of labels")
    for key, value in pairs.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise RenderError(
                f"{source}: {where}.pairs: {key!r}: {value!r}: label keys and values are strings"
            )
    for flag in ("includeSelectors", "includeTemplates"):
        if not isinstance(entry.get(flag, False), bool):
            raise RenderError(f"{source}: {where}.{flag}: expected true or false")
    if entry.get("includeSelectors", False):
        raise RenderError(
            f"{source}: {where}.includeSelectors: true is not supported by render.py: it rewrites the "
            "selectors of every kind (immutable on a Deployment, semantic in a NetworkPolicy)"
        )
    for obj in objects:
        obj["metadata"].setdefault("labels", {}).update(pairs)
        if entry.get("includeTemplates", False) and obj["kind"] in TEMPLATE_LABELS:
            node = obj
            for step in TEMPLATE_LABELS[obj["kind"]]:
                if node.get(step) is None:
                    node[step] = {}
                node = node[step]
            node.update(pairs)


def _split_image(image: str) -> tuple[str, str, str]:
    """name, tag, digest of an image reference (a registry's `host:port/` is part of the name)."""
    slash = image.find("/")
    start = slash if slash > 0 else 0
    rest = image[start:]
    at, colon = rest.find("@"), rest.find(":")
    name, tag, digest = image, "", ""
    if at >= 0:
        name, digest = image[: start + at], image[start + at + 1 :]
        rest = rest[:at]
        colon = rest.find(":")
    if colon >= 0:
        name, tag = image[: start + colon], rest[colon + 1 :]
    return name, tag, digest


def _set_image(objects: list[dict], entry: Any, source: Path, number: int) -> None:
    where = f"images[{number}]"
    entry = _entry(entry, {"name", "newName", "newTag", "digest"}, source, where)
    if "name" not in entry:
        raise RenderError(f"{source}: {where}: needs `name`")
    wanted = _string(entry, "name", source, where)
    new = {key: _string(entry, key, source, where) for key in ("newName", "newTag", "digest") if key in entry}

    def update(image: str) -> str:
        name, tag, digest = _split_image(image)
        if name != wanted:
            return image
        name = new.get("newName", name)
        if "newTag" in new or "digest" in new:  # either one replaces both the old tag and digest
            tag, digest = new.get("newTag", ""), new.get("digest", "")
        return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")

    def walk(node: Any) -> None:
        # Like kustomize's image transformer: every `containers`/`initContainers` list, at any depth.
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    for container in value:
                        if isinstance(container, dict) and isinstance(container.get("image"), str):
                            container["image"] = update(container["image"])
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(objects)


# --- output ---------------------------------------------------------------------------------------


def _legacy_order(obj: dict) -> tuple:
    api_version, kind, namespace, name = _object_id(obj)
    group, _, version = api_version.rpartition("/")
    if kind in ORDER_FIRST:
        rank = ORDER_FIRST.index(kind) - len(ORDER_FIRST)
    elif kind in ORDER_LAST:
        rank = 1 + ORDER_LAST.index(kind)
    else:
        rank = 0
    return (rank, f"{group or '~G'}_{version}_{kind}", namespace or "~X", name)


def render(overlay_dir: str | Path) -> list[dict]:
    """The objects ``kubectl apply -k overlay_dir`` would apply, in kustomize's output order."""
    return sorted(_build(Path(overlay_dir), ()), key=_legacy_order)


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) != 1:
        print("usage: python deploy/k8s/render.py <kustomization folder>", file=sys.stderr)
        return 2
    try:
        objects = render(arguments[0])
    except RenderError as error:
        print(f"render.py: {error}", file=sys.stderr)
        return 1
    yaml.safe_dump_all(objects, sys.stdout, sort_keys=False, explicit_start=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
