"""What every materialization records about where it came from, so any result can be traced and
re-made: the code (git commit, uncommitted changes), the locked dependencies and the dbt manifest.

The upstream data versions are Dagster's own: each materialization event carries the data version
of every input it was computed from (``dagster/input_data_version/<asset>`` tags), and the UI's
lineage shows them. Seeds are recorded by the assets that draw random numbers (training, drift
samples), beside the hyper-parameters they belong to.
"""

from functools import lru_cache
from typing import Any

import dagster as dg

from keel_core import provenance

GIT_COMMIT, GIT_DIRTY = "keel/git_commit", "keel/git_dirty"
LOCKFILE, DBT_MANIFEST = "keel/lockfile_sha256", "keel/dbt_manifest_sha256"


@lru_cache(maxsize=16)
def _of_run(run_id: str) -> dict[str, Any]:
    # Once per run: the code and lockfile cannot change under a running process.
    code = provenance.code_version()
    return {
        GIT_COMMIT: code["git_commit"],
        GIT_DIRTY: code["git_dirty"],
        LOCKFILE: provenance.lockfile_sha256(),
        DBT_MANIFEST: provenance.dbt_manifest_sha256(),
    }


def recorded(context: dg.AssetExecutionContext) -> dict[str, Any]:
    """The provenance entries of this run's materializations, for an asset's metadata."""
    return dict(_of_run(context.run.run_id))


def with_provenance(context: dg.AssetExecutionContext, event):
    """A dbt event with the run's provenance added, if it is a materialization."""
    if isinstance(event, dg.Output | dg.AssetMaterialization):
        return event.with_metadata({**event.metadata, **recorded(context)})
    return event
