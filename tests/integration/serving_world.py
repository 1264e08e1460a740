"""The scoring service's test world: the Bento of the promoted model, an online snapshot of the day
before the world's last day, and a sample of that last day's payments with their batch scores.
Session fixtures (``tests/integration/conftest.py`` imports them), shared by the serving modules."""

from datetime import timedelta

import dagster as dg
import pandas as pd
import pytest
from world_settings import NAMESPACE

from resources.online_store import OnlineFeatureStore
from tests import fraud
from tests.fraud import BENTO, ONLINE_FEATURES, SCORES

FEATURE_TABLE = "ml.transaction_features"
FACTS = ["transaction_id", "transacted_at", "customer_id", "terminal_id", "amount"]


def metadata_of(run, key):
    """The metadata of the run's materialization of ``key`` (of its last partition, for a range)."""
    event = [e for e in run.get_asset_materialization_events() if e.asset_key == key][-1]
    return {name: value.value for name, value in event.materialization.metadata.items()}


def as_json(frame: pd.DataFrame) -> list[dict]:
    return [
        {**row, "transacted_at": row["transacted_at"].isoformat()} for row in frame[FACTS].to_dict("records")
    ]


@pytest.fixture(scope="session")
def day(world):
    return world.last_day


@pytest.fixture(scope="session")
def champion_bento(backfill, definitions, instance, world, day):
    """The Bento of the model in production now, and that model's batch scores of day D."""
    built = definitions.resolve_job_def("fraud_train_and_promote").execute_in_process(
        instance=instance, asset_selection=[BENTO]
    )
    rescored = definitions.resolve_job_def("keel_pipeline").execute_in_process(
        instance=instance, partition_key=day.isoformat(), asset_selection=[SCORES]
    )
    assert built.success and rescored.success
    return metadata_of(built, BENTO)


def publish_snapshot(definitions, instance, url: str, closed_day):
    run = dg.materialize(
        [a for a in fraud.definitions().assets if ONLINE_FEATURES in a.keys],
        partition_key=closed_day.isoformat(),
        resources={**definitions.resources, "online_store": OnlineFeatureStore(url=url, namespace=NAMESPACE)},
        instance=instance,
    )
    assert run.success
    return metadata_of(run, ONLINE_FEATURES)


@pytest.fixture(scope="session")
def store_of_the_day_before(definitions, instance, day, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('online') / 'online_features.sqlite'}"
    published = publish_snapshot(definitions, instance, url, day - timedelta(days=1))
    assert published["published"] and published["closed_day"] == (day - timedelta(days=1)).isoformat()
    return url


@pytest.fixture(scope="session")
def offline(definitions, champion_bento, day):
    """A sample of day D's payments with the batch pipeline's scores and new-entity flags."""
    with definitions.resources["warehouse"].connect() as connection:
        frame = connection.execute(
            f"select f.*, s.fraud_probability, s.model_version from {FEATURE_TABLE} f "
            "join ml.transaction_scores s using (transaction_id) "
            "where f.transaction_date = ? "
            "and (f.transaction_id % 13 = 0 or f.customer_is_new or f.terminal_is_new) "
            "order by f.transaction_id limit 400",
            [day],
        ).df()
    assert len(frame) >= 200
    assert set(frame["model_version"]) == {champion_bento["model_version"]}
    return frame
