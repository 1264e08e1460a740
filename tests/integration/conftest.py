"""A small Keel world, built once per module through the real job: lake -> dbt warehouse."""

from dataclasses import dataclass, field
from datetime import date, timedelta

import dagster as dg
import pytest

from keel.simulator import MALFORMED_KINDS
from resources.sources import SimulatorSource


@dataclass(frozen=True)
class World:
    first_day: date = date(2026, 1, 1)
    n_days: int = 10  # past the 7-day label delay, so the label feed has three days of flags
    # Small population (~1,000 payments a day), every kind of malformed row every day.
    source: SimulatorSource = field(
        default_factory=lambda: SimulatorSource(
            n_customers=500, n_terminals=1_000, malformed_rows_per_day=len(MALFORMED_KINDS)
        )
    )

    @property
    def last_day(self) -> date:
        return self.first_day + timedelta(days=self.n_days - 1)

    @property
    def days(self) -> list[date]:
        return [self.first_day + timedelta(days=i) for i in range(self.n_days)]


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def range_tags(first: date, last: date) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }


@pytest.fixture(scope="module")
def keel_state(tmp_path_factory):
    """KEEL_* settings pointing at a fresh folder; the code location binds its resources from them."""
    root = tmp_path_factory.mktemp("keel")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KEEL_LAKE_ROOT", str(root / "lake"))
        patch.setenv("KEEL_WAREHOUSE_PATH", str(root / "warehouse.duckdb"))
        yield root


@pytest.fixture(scope="module")
def definitions(keel_state):
    from platform_assets.definitions import defs

    return defs()


@pytest.fixture(scope="module")
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture(scope="module")
def backfill(definitions, instance, world):
    """The main job over the world's days, as one run (what `make demo` does, on a small world)."""
    return definitions.resolve_job_def("keel_pipeline").execute_in_process(
        instance=instance,
        tags=range_tags(world.first_day, world.last_day),
        resources={"source": world.source},
    )
