"""The dbt project as Dagster sees it. Kept free of relative imports: `dagster-dbt project
prepare-and-package --file resources/dbt.py` loads this file on its own to build the manifest."""

from pathlib import Path

from dagster_dbt import DbtProject

REPO_ROOT = Path(__file__).resolve().parents[1]

dbt_project = DbtProject(
    project_dir=REPO_ROOT / "dbt_project",
    profiles_dir=REPO_ROOT / "dbt_project",
    # Generated state stays out of the source tree, under the git-ignored .keel/ folder.
    target_path=REPO_ROOT / ".keel" / "dbt" / "target",
)
