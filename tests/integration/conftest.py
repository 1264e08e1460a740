"""A small Keel world, built once per session through the real job: lake -> warehouse -> features
-> model -> gate -> scores. Building it is the expensive part of the suite, so every integration
module reads the same world; tests that change state say so and keep what others rely on."""

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
from world_settings import NAMESPACE

from keel.demo import days_needed
from platform_assets.defs.payments.simulator import MALFORMED_KINDS
from platform_assets.defs.payments.system import SimulatorSource
from resources.dbt import REPO_ROOT


@dataclass(frozen=True)
class World:
    first_day: date = date(2026, 1, 1)
    # The shortest window the default training configuration accepts (two weeks of training, the
    # label delay as a gap, a week of test, and that week's flags a label delay later).
    n_days: int = field(default_factory=days_needed)
    # 2,000 cards (~4,000 payments a day), every kind of malformed row every day. Smaller worlds
    # give the model too few frauds to learn from in two weeks: it then fails the gate's floors.
    source: SimulatorSource = field(
        default_factory=lambda: SimulatorSource(
            n_customers=2_000, n_terminals=4_000, malformed_rows_per_day=len(MALFORMED_KINDS)
        )
    )

    @property
    def last_day(self) -> date:
        return self.first_day + timedelta(days=self.n_days - 1)

    @property
    def days(self) -> list[date]:
        return [self.first_day + timedelta(days=i) for i in range(self.n_days)]


@pytest.fixture(scope="session")
def world() -> World:
    return World()


def range_tags(first: date, last: date) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }


@pytest.fixture(scope="session")
def keel_state(tmp_path_factory, world):
    """KEEL_* settings for a fresh folder and the world's source: the code location binds its
    resources from them, so every run (and `dg check defs`) sees the same world."""
    root = tmp_path_factory.mktemp("keel")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KEEL_NAMESPACE", NAMESPACE)
        patch.setenv("KEEL_LAKE_ROOT", str(root / "lake"))
        patch.setenv("KEEL_WAREHOUSE_DIR", str(root / "warehouse"))
        patch.setenv("KEEL_ONLINE_STORE_URL", f"sqlite:///{root / 'online_features.sqlite'}")
        patch.setenv("KEEL_SIMULATOR_CUSTOMERS", str(world.source.n_customers))
        patch.setenv("KEEL_SIMULATOR_TERMINALS", str(world.source.n_terminals))
        patch.setenv("KEEL_SIMULATOR_MALFORMED_ROWS_PER_DAY", str(world.source.malformed_rows_per_day))
        yield root


@pytest.fixture(scope="session")
def definitions(keel_state, world):
    from platform_assets.definitions import defs

    definitions = defs()
    assert definitions.resources["upstream"] == world.source
    return definitions


@pytest.fixture(scope="session")
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture(scope="session")
def backfill(definitions, instance, world):
    """The world's days landed, then the main job over them as one run (what `make demo` does)."""
    definitions.resources["landing"].deliver(world.source, world.days)
    return definitions.resolve_job_def("keel_pipeline").execute_in_process(
        instance=instance,
        tags=range_tags(world.first_day, world.last_day),
    )


DEMO_DAYS = days_needed()  # the shortest window the demo's training accepts


@dataclass(frozen=True)
class DemoWorld:
    root: Path
    env: dict[str, str]  # what `keel` commands, the daemon and dbt need to see this world
    demo: subprocess.CompletedProcess
    first_day: date  # the calendar's first day, and the demo's
    last_day: date  # yesterday when the demo ran: the calendar's last complete day


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory) -> DemoWorld:
    """`keel demo` on a small world in a folder of its own, with its own Dagster home on disk: what a
    newcomer has after `make demo`: the demo simulates every day of the calendar (here a fixed world
    of 35 days, the shortest window training accepts, which ends there: KEEL_CALENDAR_END). test_demo
    reads its output; the daemon test then runs on it, and the browser test on a copy."""
    root = tmp_path_factory.mktemp("demo")
    first_day = date.fromisoformat(os.environ["KEEL_CALENDAR_START"])  # the test worlds' (tests/conftest.py)
    last_day = first_day + timedelta(days=DEMO_DAYS - 1)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(root / "dagster_home"),
        "KEEL_NAMESPACE": NAMESPACE,
        "KEEL_LAKE_ROOT": str(root / "lake"),
        "KEEL_WAREHOUSE_DIR": str(root / "warehouse"),
        "BENTOML_HOME": str(root / "bentoml"),
        "KEEL_ONLINE_STORE_URL": f"sqlite:///{root / 'online_features.sqlite'}",
        "KEEL_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "KEEL_CALENDAR_START": first_day.isoformat(),
        "KEEL_CALENDAR_END": last_day.isoformat(),
        # A smaller world than the default (5,000 cards).
        "KEEL_SIMULATOR_CUSTOMERS": "2000",
        "KEEL_SIMULATOR_TERMINALS": "4000",
    }
    (root / "dagster_home").mkdir()
    shutil.copy(REPO_ROOT / "deploy" / "local" / "dagster.yaml", root / "dagster_home" / "dagster.yaml")
    keel = Path(sys.executable).with_name("keel")
    demo = subprocess.run([keel, "demo"], env=env, capture_output=True, text=True)
    return DemoWorld(root, env, demo, first_day, last_day)


from serving_world import champion_bento, day, offline, store_of_the_day_before  # noqa: E402, F401
