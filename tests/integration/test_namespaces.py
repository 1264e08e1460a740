"""Two namespaces side by side on one machine: the test world's (``test``, the backfill) and an
experiment's, on the same lake root and warehouse folder. The experiment ingests production's
deliveries, builds its own warehouse and features, and registers and promotes a model of its own;
afterwards neither namespace sees the other's data or models, and nothing of ``test`` changed."""

import hashlib
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from sklearn.linear_model import LogisticRegression
from world_settings import NAMESPACE, namespace_lake

from keel import client
from platform_assets.defs.fraud.transaction_features import FEATURE_NAMES
from resources.registry import APPROVED, PRODUCTION, RegistryError
from tests.fraud import FEATURES, MODEL_NAME

pytestmark = pytest.mark.slow

EXPERIMENT = "experiment"
DAYS = 3


def tree(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``folder``: size and content digest."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def side_by_side(backfill, definitions, keel_state, world, tmp_path_factory):
    """The test namespace as the backfill left it, then the experiment's own run and model."""
    assert backfill.success
    lake_root, warehouse_dir = keel_state / "lake", keel_state / "warehouse"
    before = {
        "lake": tree(namespace_lake(lake_root)),
        "warehouse": tree(warehouse_dir)[f"{NAMESPACE}.duckdb"],
        "versions": [(v.tag, v.stage) for v in definitions.resources["registry"].of(MODEL_NAME).versions()],
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KEEL_NAMESPACE", EXPERIMENT)
        patch.setenv("KEEL_ONLINE_STORE_URL", f"sqlite:///{keel_state / f'{EXPERIMENT}.sqlite'}")
        from platform_assets.definitions import defs

        experiment = defs()
        last = world.first_day + timedelta(days=DAYS - 1)
        selection = [
            key
            for key in experiment.resolve_asset_graph().get_all_asset_keys()
            if key.path[0] in ("lake", "warehouse") or key == FEATURES
        ]
        with dg.instance_for_test() as instance:  # a namespace has its own instance
            run = experiment.resolve_job_def("keel_pipeline").execute_in_process(
                instance=instance,
                tags={
                    "dagster/asset_partition_range_start": world.first_day.isoformat(),
                    "dagster/asset_partition_range_end": last.isoformat(),
                },
                asset_selection=selection,
            )
        registry = experiment.resources["registry"].of(MODEL_NAME)
        with experiment.resources["warehouse"].connect() as connection:
            rows = connection.execute(f"select {', '.join(FEATURE_NAMES)} from ml.transaction_features").df()
        model = LogisticRegression().fit(rows, (rows["amount"] > rows["amount"].median()).astype(int))
        # Recorded like a trained version (the model card needs its window and metrics).
        tag = registry.register(model, definitions.resources["registry"].of(MODEL_NAME).latest().record)
        verdict = (
            definitions.resources["registry"].of(MODEL_NAME).champion().approval().details
        )  # the gate's record
        registry.record(tag, APPROVED, reason="the experiment's own gate", details=verdict)
        registry.promote(tag, reason="try it")
    yield {"before": before, "run": run, "experiment": experiment, "tag": tag}
    # The module's changes stay in the experiment's namespace; the session's env is restored.


def test_the_experiment_ingests_the_shared_deliveries_into_its_own_lake_and_warehouse(
    side_by_side, keel_state, world
):
    assert side_by_side["run"].success
    experiment = side_by_side["experiment"]
    assert experiment.resources["lake"].uri == str(namespace_lake(keel_state / "lake", EXPERIMENT))
    assert experiment.resources["warehouse"].path == str(keel_state / "warehouse" / f"{EXPERIMENT}.duckdb")
    days = sorted(
        path.name for path in (namespace_lake(keel_state / "lake", EXPERIMENT) / "raw_transactions").iterdir()
    )
    assert days == [f"date={(world.first_day + timedelta(days=i)).isoformat()}" for i in range(DAYS)]
    with experiment.resources["warehouse"].connect() as connection:
        (count,) = connection.execute(
            "select count(distinct transaction_date) from main.transactions"
        ).fetchone()
    assert count == DAYS  # its own warehouse: the test namespace's has every day of the world


def test_nothing_of_the_other_namespace_was_written_or_changed(side_by_side, keel_state, definitions):
    before = side_by_side["before"]
    assert tree(namespace_lake(keel_state / "lake")) == before["lake"]
    assert tree(keel_state / "warehouse")[f"{NAMESPACE}.duckdb"] == before["warehouse"]
    assert [(v.tag, v.stage) for v in definitions.resources["registry"].of(MODEL_NAME).versions()] == before[
        "versions"
    ]


def test_each_registry_lists_only_its_own_versions_and_stages(side_by_side, definitions):
    tag = side_by_side["tag"]
    theirs = side_by_side["experiment"].resources["registry"].of(MODEL_NAME)
    ours = definitions.resources["registry"].of(MODEL_NAME)
    assert [(v.tag, v.stage) for v in theirs.versions()] == [(tag, PRODUCTION)]
    assert tag not in {v.tag for v in ours.versions()}
    assert ours.champion() is not None and ours.champion().tag != tag


def test_a_model_of_the_experiment_cannot_be_promoted_in_another_namespace(side_by_side, definitions):
    """Production takes only what its own gate approved: the experiment's approval does not count."""
    with pytest.raises(RegistryError, match="no version"):
        definitions.resources["registry"].of(MODEL_NAME).promote(side_by_side["tag"], reason="skip the gate")
    with pytest.raises(RegistryError, match="no version"):
        definitions.resources["registry"].of(MODEL_NAME).load(side_by_side["tag"])


def test_the_client_of_each_namespace_sees_only_that_namespace(side_by_side, keel_state, world):
    theirs = client.connect(namespace=EXPERIMENT)
    ours = client.connect(namespace=NAMESPACE)
    assert list(theirs.models()["tag"]) == [side_by_side["tag"]]
    assert side_by_side["tag"] not in set(ours.models()["tag"])
    last_day = world.first_day + timedelta(days=world.n_days - 1)
    assert len(ours.load("lake/raw_transactions", last_day)) > 0
    with pytest.raises(Exception, match="not in the lake"):
        theirs.load("lake/raw_transactions", last_day)  # the experiment ingested three days only
