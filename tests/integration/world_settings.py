"""The namespace the test worlds run in, and where a namespace's lake is under a world's lake root."""

from pathlib import Path

NAMESPACE = "test"


def namespace_lake(lake_root: str | Path, namespace: str = NAMESPACE) -> Path:
    """``<KEEL_LAKE_ROOT>/namespaces/<namespace>`` (resources/environments.py)."""
    return Path(lake_root, "namespaces", namespace)
