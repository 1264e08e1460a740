"""A Bento for the model in production, built and archived the same way for every service.

The Bento lands in the local BentoML store (a pod's store is gone with the pod), so its archive is
also written to the namespace's lake (``bentos/<name>/<version>.bento``), from which images are built
(deploy/docker/bento.md). A reused Bento whose archive is already there is not exported again.
"""

from pathlib import Path

import dagster as dg
import pandas as pd

from keel_core import bentos
from keel_core.provenance import code_version
from platform_assets.provenance import recorded
from resources.lake import Lake
from resources.registry import ModelRegistry, ModelVersion


def build_and_archive(
    context: dg.AssetExecutionContext,
    registry: ModelRegistry,
    lake: Lake,
    champion: ModelVersion,
    name: str,
    bentofile: Path,
) -> dg.MaterializeResult:
    """Build (or reuse) the Bento ``name`` serving ``champion``, archive it, and say so."""
    registry.load(champion.tag)  # into the local BentoML store, from the lake if it is not there
    code = code_version()
    build = bentos.build(
        champion.tag,
        name,
        bentofile,
        labels={"git_commit": str(code["git_commit"]), "git_dirty": str(code["git_dirty"]).lower()},
    )
    archive = bentos.export_path(build.bento.tag)
    if not (build.reused and archive in lake.list_files(archive.rpartition("/")[0])):
        lake.write_file(archive, bentos.export(build.bento.tag))
    history = bentos.built(name)
    context.log.info(f"{'reused' if build.reused else 'built'} {build.bento.tag} in {build.seconds:.1f} s")
    return dg.MaterializeResult(
        metadata={
            **recorded(context),
            "bento": build.bento.tag,
            "model_version": champion.tag,
            "reused": build.reused,
            "build_seconds": round(build.seconds, 2),
            "size_mb": round(build.bento.size_bytes / 1e6, 2),
            "path": dg.MetadataValue.path(build.bento.path),
            "archive": dg.MetadataValue.url(lake.public_url(archive)),
            "serve": dg.MetadataValue.md(f"`make serve BENTO={build.bento.tag}`"),
            "bentos": dg.MetadataValue.md(
                pd.DataFrame(
                    [{"bento": b.tag, "model": b.model_tag, "built": b.created.isoformat()} for b in history]
                ).to_markdown(index=False)
            ),
        }
    )
