"""Check Helm values for the official Dagster chart offline, against the chart's own values schema.

Helm validates the *merged* values (the chart's ``values.yaml`` with each ``-f`` file merged over it in
order) against ``values.schema.json``, and each sub-chart's section against the sub-chart's schema. This
module does the same without Helm or a network:

- ``helm_merge`` merges like Helm: maps key by key, lists and scalars replaced whole, ``null`` deletes a key.
- The chart's schemas ``$ref`` Kubernetes objects (resources, volumes, probes, security contexts...) in
  remote copies of the Kubernetes JSON schema (1.18/1.19). ``localise_kubernetes_refs`` points them at
  the Kubernetes 1.31 definitions shipped in the ``kubernetes-validate`` wheel, which Keel targets
  (contract: Kubernetes 1.31). A reference whose target is missing there becomes permissive (the
  ``$ref`` is dropped, i.e. ``{}``) and is counted, so a test can insist that there are none.
  The non-strict definitions are used on purpose: the chart adds an ``enabled`` key to its probes,
  which the strict variant (``additionalProperties: false``) would reject in the chart's own defaults.

Nothing here reads the environment; paths come in, dicts and messages come out.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator, Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

KUBERNETES_VERSION = "1.31.0"
# The remote definitions the chart's schemas point at: yannh's copy (main chart) and kubernetesjsonschema.dev
# (user-deployments sub-chart), each followed by a JSON pointer under `definitions`.
REMOTE_KUBERNETES_REF = re.compile(
    r"^https://(?:raw\.githubusercontent\.com/yannh/kubernetes-json-schema/master|kubernetesjsonschema\.dev)"
    r"/v[0-9.]+/_definitions\.json#/definitions/(?P<pointer>.+)$"
)


def load_yaml(path: Path) -> dict[str, Any]:
    with open(path) as stream:
        return yaml.safe_load(stream) or {}


def helm_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` merged over ``base`` as Helm coalesces values files (neither argument is changed)."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def merged_values(chart_values: Mapping[str, Any], *overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The values Helm renders with: the chart's defaults, then each ``-f`` file in order."""
    merged = copy.deepcopy(dict(chart_values))
    for override in overrides:
        merged = helm_merge(merged, override)
    return merged


def subchart_values(
    parent_values: Mapping[str, Any], subchart_defaults: Mapping[str, Any], name: str
) -> dict[str, Any]:
    """The values a sub-chart sees: its defaults, the parent's section ``name`` and ``global``."""
    section = dict(parent_values.get(name) or {})
    section["global"] = helm_merge(subchart_defaults.get("global") or {}, parent_values.get("global") or {})
    return helm_merge(subchart_defaults, section)


def kubernetes_definitions(version: str = KUBERNETES_VERSION) -> dict[str, Any]:
    """The Kubernetes JSON schema definitions shipped in ``kubernetes-validate`` (JSON Schema 2020-12,
    definitions under ``$defs``, ``$id`` https://kubernetes.io/api/_definitions.json)."""
    path = files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local" / "_definitions.json"
    return json.loads(path.read_text())


@dataclass
class RefMapping:
    """Where the remote Kubernetes references of a schema went."""

    local: list[str] = field(default_factory=list)  # rewritten to the shipped definitions
    permissive: list[str] = field(default_factory=list)  # target missing: made `{}`


def _resolve_pointer(document: Any, pointer: str) -> bool:
    node = document
    for part in pointer.split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def localise_kubernetes_refs(schema: Any, definitions: Mapping[str, Any]) -> tuple[Any, RefMapping]:
    """A copy of ``schema`` whose remote Kubernetes ``$ref``s point into ``definitions``."""
    base = definitions["$id"]
    mapping = RefMapping()

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, Mapping):
            return node
        out = {key: walk(value) for key, value in node.items() if key != "$ref"}
        ref = node.get("$ref")
        if not isinstance(ref, str):
            if ref is not None:
                out["$ref"] = ref
            return out
        match = REMOTE_KUBERNETES_REF.match(ref)
        if match is None:
            out["$ref"] = ref  # a reference inside the chart's own schema
        elif _resolve_pointer(definitions["$defs"], match["pointer"]):
            out["$ref"] = f"{base}#/$defs/{match['pointer']}"
            mapping.local.append(ref)
        else:
            mapping.permissive.append(ref)  # no such definition in this Kubernetes version: `{}`
        return out

    return walk(schema), mapping


@dataclass
class ChartSchema:
    """A validator for one chart's values, with the record of how its remote references were mapped."""

    validator: Draft202012Validator | Draft7Validator
    refs: RefMapping

    @classmethod
    def load(cls, schema_path: Path, definitions: Mapping[str, Any]) -> ChartSchema:
        raw = json.loads(schema_path.read_text())
        schema, refs = localise_kubernetes_refs(raw, definitions)
        # The main chart's schema has `$defs` and no `$schema` (2020-12); the sub-chart's is draft-07.
        validator_class = Draft7Validator if "definitions" in raw else Draft202012Validator
        registry = Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))
        return cls(validator=validator_class(schema, registry=registry), refs=refs)

    def errors(self, values: Mapping[str, Any]) -> list[str]:
        """Every violation, as ``<JSON path>: <message>``; empty when the values are valid."""
        return [_describe(error) for error in _sorted(self.validator.iter_errors(values))]


def _sorted(errors: Iterator[ValidationError]) -> list[ValidationError]:
    return sorted(errors, key=lambda error: [str(part) for part in error.absolute_path])


def _leaves(error: ValidationError) -> Iterator[ValidationError]:
    if not error.context:
        yield error
    for branch in error.context or ():
        yield from _leaves(branch)


def _short(message: str, limit: int = 240) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _describe(error: ValidationError) -> str:
    if not error.context:
        return f"{error.json_path}: {_short(error.message)}"
    # anyOf / oneOf (most keys also allow null): report the deepest failure among the branches, which
    # is where the value actually went wrong, rather than "is not of type 'null'".
    deepest = max(_leaves(error), key=lambda leaf: len(leaf.absolute_path))
    return f"{deepest.json_path}: {_short(deepest.message)} (no allowed shape of {error.json_path} matches)"
