"""An analyst's new dbt model becomes a Dagster asset, as docs/analysts.md says.

The repository is copied twice (the files git knows, as they are in the working tree): one copy as
it is, and one where the worked example of docs/analysts.md was added (its SQL and YAML entry are
read from the page). In each copy the dbt manifest is prepared the way `make` does it, and the code
location is loaded in a fresh Python process (what a reload in the UI does) with the copy first on
the import path. Then the two code locations are compared.

Cost: four subprocesses, about 55 s of CPU (per copy: ~17 s for the manifest, ~10 s to load), run
two at a time, so ~30 s of wall time on two idle cores. No dbt build, no lake.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from resources.dbt import REPO_ROOT

pytestmark = pytest.mark.slow

MARTS = Path("dbt_project", "models", "marts", "payments")
USE_CASE_FOLDER = Path("platform_assets", "defs", "terminal_volume")
MODEL = "area_daily_activity"
NEW_ASSET = f"warehouse/{MODEL}"


def worked_example() -> tuple[str, dict]:
    """The SQL and the YAML entry of the example in docs/analysts.md: the test adds what the page shows."""
    page = (REPO_ROOT / "docs" / "analysts.md").read_text()
    (sql,) = re.findall(r"```sql\n(.*?)```", page, re.DOTALL)
    (entry_yaml,) = re.findall(r"```yaml\n(.*?)```", page, re.DOTALL)
    (entry,) = yaml.safe_load(entry_yaml)
    return sql, entry


# Runs in the copy: loads the code location and writes what the UI shows of each asset.
DESCRIBE_CODE_LOCATION = """
import json, sys
from platform_assets.definitions import defs

graph = defs().resolve_asset_graph()
ours = ("keel", "platform_assets", "resources", "serving")
modules = {
    module.__file__ for name, module in list(sys.modules.items())
    if name.split(".")[0] in ours and getattr(module, "__file__", None)
}
assets = {
    node.key.to_user_string(): {
        "group": node.group_name,
        "parents": sorted(key.to_user_string() for key in node.parent_keys),
        "partitions": str(node.partitions_def) if node.partitions_def else None,
        "automation": node.automation_condition.get_label() if node.automation_condition else None,
        "description": node.description,
        "checks": sorted(key.name for key in node.check_keys),
    }
    for node in graph.asset_nodes
}
with open(sys.argv[1], "w") as out:
    json.dump({"modules": sorted(modules), "assets": assets}, out)
"""


def copy_repository(target: Path) -> Path:
    """The files git knows (tracked and new, not ignored), as they are in the working tree: no .keel/,
    no .venv/, so nothing generated in the original can leak into the copy."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.split(b"\0")):
        source = REPO_ROOT / os.fsdecode(name)
        if source.is_file():  # not a file deleted in the working tree and not yet in a commit
            (target / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / os.fsdecode(name))
    return target


def add_model(repo: Path) -> str:
    """What the analyst writes: the model's SQL, and its entry in the folder's one YAML. Returns its
    description."""
    sql, entry = worked_example()
    assert entry["name"] == MODEL
    (repo / MARTS / f"{MODEL}.sql").write_text(sql)
    models_yaml = repo / MARTS / "_payments__models.yml"
    document = yaml.safe_load(models_yaml.read_text())
    document["models"].append(entry)
    models_yaml.write_text(yaml.safe_dump(document, sort_keys=False))
    return entry["description"].strip()


@dataclass(frozen=True)
class CodeLocation:
    repo: Path
    assets: dict[str, dict]  # asset key -> what the UI shows of it
    modules: list[str]  # files of Keel's own modules the process imported


def _environment(repo: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])),
    }


def prepare_and_load(repo: Path) -> CodeLocation:
    """`make`'s manifest step, then the code location loaded in a fresh process, both from ``repo``."""
    env = _environment(repo)
    dagster_dbt = Path(sys.executable).with_name("dagster-dbt")
    prepared = subprocess.run(
        [dagster_dbt, "project", "prepare-and-package", "--file", "resources/dbt.py"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    assert prepared.returncode == 0, prepared.stdout[-3000:] + prepared.stderr[-3000:]
    assert (repo / ".keel" / "dbt" / "target" / "manifest.json").is_file()
    return load(repo)


def load(repo: Path) -> CodeLocation:
    """The code location of ``repo`` (its dbt manifest prepared), loaded in a fresh process."""
    described = repo / "code_location.json"
    loaded = subprocess.run(
        [sys.executable, "-c", DESCRIBE_CODE_LOCATION, described],
        cwd=repo,
        env=_environment(repo),
        capture_output=True,
        text=True,
    )
    assert loaded.returncode == 0, loaded.stdout[-3000:] + loaded.stderr[-3000:]
    return CodeLocation(repo, **json.loads(described.read_text()))


@dataclass(frozen=True)
class Change:
    before: CodeLocation
    after: CodeLocation
    description: str  # the new model's, from its YAML
    without_use_case: CodeLocation  # the code location as it is, without the terminal_volume folder


@pytest.fixture(scope="module")
def change(keel_state, tmp_path_factory) -> Change:
    """The code location as it is and with the analyst's model, each from its own copy (prepared side
    by side: the two are independent and each is mostly one single-threaded process)."""
    root = tmp_path_factory.mktemp("analyst")
    as_is = copy_repository(root / "as_is")
    with_model = copy_repository(root / "with_model")
    description = add_model(with_model)
    with ThreadPoolExecutor(max_workers=2) as pool:
        before, after = pool.map(prepare_and_load, [as_is, with_model])
    # A use case is its folder: without it, the same dbt project (the manifest as prepared) and code.
    without = copy_repository(root / "without_use_case")
    shutil.rmtree(without / USE_CASE_FOLDER)
    shutil.copytree(as_is / ".keel", without / ".keel")
    return Change(before, after, description, load(without))


def test_each_copy_loads_its_own_modules_and_not_the_installed_checkout(change):
    for location in (change.before, change.after):
        assert str(location.repo / "platform_assets" / "definitions.py") in location.modules
        assert [module for module in location.modules if not Path(module).is_relative_to(location.repo)] == []


def test_a_new_mart_becomes_a_warehouse_asset_downstream_of_exactly_the_models_it_refs(change):
    assert NEW_ASSET not in change.before.assets
    asset = change.after.assets[NEW_ASSET]
    assert asset["group"] == "warehouse"
    assert asset["parents"] == ["warehouse/terminals", "warehouse/transactions"]
    assert asset["description"].startswith(change.description)  # then dagster-dbt's copy of the SQL
    # Tagged `daily`: partitioned like the marts it reads, and it follows them by itself.
    transactions = change.after.assets["warehouse/transactions"]
    assert asset["partitions"] is not None
    assert (asset["partitions"], asset["automation"]) == (
        transactions["partitions"],
        transactions["automation"],
    )


def test_the_models_dbt_tests_become_asset_checks_on_it(change):
    assert change.after.assets[NEW_ASSET]["checks"] == [
        "accepted_values_area_daily_activity_area__north_east__north_west__south_east__south_west",
        "not_null_area_daily_activity_activity_date",
        "not_null_area_daily_activity_area",
        "unique_area_daily_activity_area_activity_date",
    ]


def test_the_new_asset_is_reachable_from_the_lake_in_the_asset_graph(change):
    children: dict[str, set[str]] = {}
    for key, asset in change.after.assets.items():
        for parent in asset["parents"]:
            children.setdefault(parent, set()).add(key)
    for source in ("lake/raw_transactions", "lake/terminals"):
        reached, queue = set(), deque([source])
        while queue:
            for child in children.get(queue.popleft(), ()):
                if child not in reached:
                    reached.add(child)
                    queue.append(child)
        assert NEW_ASSET in reached, source


def test_nothing_else_in_the_code_location_changes(change):
    before, after = change.before.assets, change.after.assets
    assert set(after) - set(before) == {NEW_ASSET}
    assert {key: asset for key, asset in after.items() if key != NEW_ASSET} == before


def test_a_use_case_is_its_folder_and_needs_nothing_else_in_the_platform(change):
    """The second use case was added as a folder alone: the code location without that folder is the
    same code location, less exactly that use case's assets."""
    full, without = change.before.assets, change.without_use_case.assets
    assert sorted(set(full) - set(without)) == [
        f"terminal_volume/{step}"
        for step in (
            "bento",
            "drift",
            "evaluation",
            "features",
            "live_performance",
            "model",
            "online_features",
            "prediction_log",
            "production_model",
            "scores",
        )
    ]
    assert set(without) <= set(full)
    assert {key: asset for key, asset in full.items() if key in without} == without
    assert {full[key]["group"] for key in set(full) - set(without)} == {"terminal_volume"}
