"""The dbt project as Dagster sees it. Kept free of relative imports: `dagster-dbt project
prepare-and-package --file resources/dbt.py` loads this file on its own to build the manifest."""

import shutil
from collections.abc import Mapping, Sequence
from functools import cached_property
from importlib import metadata
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject
from packaging import version

REPO_ROOT = Path(__file__).resolve().parents[1]

dbt_project = DbtProject(
    project_dir=REPO_ROOT / "dbt_project",
    profiles_dir=REPO_ROOT / "dbt_project",
    # Generated state stays out of the source tree, under the git-ignored .keel/ folder.
    target_path=REPO_ROOT / ".keel" / "dbt" / "target",
)


class DbtCli(DbtCliResource):
    """dagster-dbt's dbt CLI, without two start-up costs Keel does not use (~3-6 s a run here).

    * It asks the dbt executable for its version in a subprocess (a second Python start that
      imports dbt). The executable is this environment's dbt-core, whose package knows it.
    * It opens a dbt adapter inside the Dagster process, used only by ``fetch_row_counts()`` and
      ``fetch_column_metadata()``, which Keel does not call (DuckDB's file is dbt's to write).

    Both override private methods: if dagster-dbt renames them, the overrides are simply unused.

    dbt also gets an environment of its own: ``environment`` (the namespace's lake and warehouse, which
    dbt_project/profiles.yml reads) and a call's ``env`` (a partition window). ``DbtCliResource.cli``
    starts dbt with a copy of this process's environment and takes none of its own, so dbt is started
    through ``env NAME=value ... dbt``: nothing is written into this process's ``os.environ``.
    """

    environment: dict[str, str] = {}

    def cli(self, args: Sequence[str], *, env: Mapping[str, str] | None = None, **kwargs):
        values = {**self.environment, **(env or {})}
        if not values:
            return super().cli(args, **kwargs)
        launcher = self.model_copy(
            update={
                "dbt_executable": shutil.which("env") or "/usr/bin/env",
                "global_config_flags": [
                    *(f"{name}={value}" for name, value in values.items()),
                    self.dbt_executable,
                    *self.global_config_flags,
                ],
            }
        )
        return DbtCliResource.cli(launcher, args, **kwargs)

    @cached_property
    def _cli_version(self) -> version.Version:
        return version.parse(metadata.version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args):
        return None
