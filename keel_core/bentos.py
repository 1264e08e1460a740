"""Bentos: a scoring service's immutable deployable, one per model version and serving code.

``build(model_tag, name, bentofile)`` runs ``bentoml build -f <bentofile> --arg model_tag=<tag>`` from
the repo root: ``serving/predictor.bentofile.yaml`` for a use case's prediction endpoint, or a use
case's own service's bentofile (in its folder). The Bento's version is ``<model version>-<digest of the files
it packs>``: the same model and code always give the same tag (a re-run reuses it), another model or
another line of serving code gives a new one, and an old tag keeps serving what it always served.
Rolling back is serving the previous tag (``make serve BENTO=<name>:<version>``). Each namespace has
its own Bento names, ``<service>_<namespace>``, so an experiment's Bento is never mistaken for
production's.

No Dagster here; ``bentoml`` is imported inside the functions (it is slow to import).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from keel_core.provenance import REPO_ROOT

PREDICTOR_BENTOFILE = REPO_ROOT / "serving" / "predictor.bentofile.yaml"


def bento_name(namespace: str, service: str) -> str:
    return f"{service}_{namespace}"


@dataclass(frozen=True)
class Bento:
    tag: str
    model_tag: str
    created: datetime
    path: str
    size_bytes: int


@dataclass(frozen=True)
class Build:
    bento: Bento
    reused: bool  # the same model and code were already built: nothing was built
    seconds: float


def packed_files(bentofile: Path) -> list[Path]:
    """The files a Bento packs from the repo: the bentofile's includes, its requirements, itself."""
    config = yaml.safe_load(bentofile.read_text())
    files = {bentofile, REPO_ROOT / config["python"]["requirements_txt"]}
    for pattern in config["include"]:
        files.update(REPO_ROOT.glob(pattern))
    return sorted(files)


def source_digest(bentofile: Path) -> str:
    digest = hashlib.sha256()
    for path in packed_files(bentofile):
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def bento_version(model_tag: str, bentofile: Path) -> str:
    model_version = model_tag.partition(":")[2]
    if not model_version:
        raise ValueError(f"model tag {model_tag!r}: expected name:version")
    return f"{model_version}-{source_digest(bentofile)[:10]}"


def _describe(bento) -> Bento:
    size = sum(path.stat().st_size for path in Path(bento.path).rglob("*") if path.is_file())
    return Bento(
        tag=str(bento.tag),
        model_tag=bento.info.labels.get("model_tag", ""),
        created=bento.info.creation_time,
        path=bento.path,
        size_bytes=size,
    )


def build(model_tag: str, name: str, bentofile: Path, labels: dict[str, str] | None = None) -> Build:
    """The Bento ``name`` serving ``model_tag`` (which must be in the local BentoML store), built
    from ``bentofile`` if new."""
    import bentoml

    started = time.monotonic()
    tag = f"{name}:{bento_version(model_tag, bentofile)}"
    try:
        return Build(_describe(bentoml.bentos.get(tag)), reused=True, seconds=time.monotonic() - started)
    except bentoml.exceptions.NotFound:
        pass
    command = [
        str(Path(sys.executable).with_name("bentoml")),
        "build",
        "--name",
        name,
        "--bentofile",
        str(bentofile),
        "--version",
        tag.partition(":")[2],
        "--arg",
        f"model_tag={model_tag}",
        "--label",
        f"model_tag={model_tag}",
        *(arg for key, value in (labels or {}).items() for arg in ("--label", f"{key}={value}")),
        "--output",
        "tag",
        str(REPO_ROOT),
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=os.environ.copy())
    if result.returncode != 0:
        raise RuntimeError(
            f"bentoml build failed (exit {result.returncode}) for {model_tag}:\n{result.stderr[-4000:]}"
        )
    return Build(_describe(bentoml.bentos.get(tag)), reused=False, seconds=time.monotonic() - started)


def built(name: str) -> list[Bento]:
    """Every Bento named ``name`` in the local store, oldest first."""
    import bentoml

    bentos = [bento for bento in bentoml.bentos.list(name) if bento.tag.name == name]
    return sorted((_describe(bento) for bento in bentos), key=lambda bento: bento.created)


def export(tag: str) -> bytes:
    """The Bento ``tag`` as one archive (``bentoml export``): what leaves the pod that built it, for
    ``bentoml import`` and ``bentoml containerize`` on a machine with Docker (deploy/docker/bento.md)."""
    import bentoml

    with tempfile.TemporaryDirectory() as folder:
        return Path(bentoml.bentos.export_bento(tag, str(Path(folder, "export.bento")))).read_bytes()


def export_path(tag: str) -> str:
    """Where a Bento's archive lives in the lake: ``bentos/<name>/<version>.bento``."""
    name, _, version = tag.partition(":")
    return f"bentos/{name}/{version}.bento"
