"""keel.Source: a source's tables declared in YAML become the lake's ingestion assets, and a
declaration that cannot hold is refused when the code location loads, naming what is wrong."""

from datetime import date

import dagster as dg
import pandas as pd
import pytest
import yaml

from keel_core import contracts
from platform_assets.components.source import FEED_TAG, INGESTS_TAG, QUARANTINE_TAG, Source
from platform_assets.defs.fraud.scorer import schemas
from resources.calendar import Calendar
from resources.lake import LocalLake
from resources.sources import LandingZone
from tests.payments import contract, source

DAY = date(2026, 1, 5)

# A source of another shape: one reference table and one daily table that references it.
SHOPS = {
    "name": "shops",
    "description": "Shops and their daily visits",
    "tables": {
        "shops": {
            "feed": "shops",
            "daily": False,
            "description": "Shops.",
            "columns": {"shop_id": {"type": "integer", "min": 0, "unique": True}},
        },
        "visits": {
            "feed": "visits",
            "description": "Visits of the day.",
            "after": ["shops"],
            "columns": {
                "shop_id": {"type": "integer", "references": {"table": "shops", "column": "shop_id"}},
                "visited_at": {"type": "timestamp", "within_day": True},
                "visitors": {"type": "integer", "min": 0, "max": 1000, "stored_as": "int16"},
            },
        },
    },
}


def resolved(attributes: dict) -> Source:
    return Source.resolve_from_yaml(yaml.safe_dump(attributes, sort_keys=False))


def test_each_declared_table_is_an_asset_of_the_lake_tagged_with_its_feed():
    specs = {spec.key.to_user_string(): spec for a in resolved(SHOPS).assets() for spec in a.specs}
    assert set(specs) == {"lake/shops", "lake/visits", "lake/quarantined_visits"}
    assert specs["lake/shops"].tags.items() >= {INGESTS_TAG: "reference", FEED_TAG: "shops"}.items()
    assert specs["lake/visits"].tags.items() >= {INGESTS_TAG: "daily", FEED_TAG: "visits"}.items()
    quarantine = specs["lake/quarantined_visits"].tags
    assert quarantine.items() >= {INGESTS_TAG: "daily", QUARANTINE_TAG: "visits"}.items()
    assert FEED_TAG not in quarantine
    assert {dep.asset_key for dep in specs["lake/visits"].deps} == {dg.AssetKey(["lake", "shops"])}


def test_a_source_of_another_shape_ingests_by_its_own_contract(tmp_path):
    lake = LocalLake(root=str(tmp_path))
    landing = LandingZone(lake=lake)
    lake.write_file("landing/shops/shops.parquet", _parquet(pd.DataFrame({"shop_id": [1, 2]})))
    visits = pd.DataFrame(
        {
            "shop_id": ["1", "2", "3", "1"],
            "visited_at": [
                "2026-01-05 09:00:00",
                "2026-01-05 10:00:00",
                "2026-01-05 11:00:00",
                "2026-01-06 01:00:00",
            ],
            "visitors": ["12", "7", "4", "1001"],
        }
    )
    lake.write_file(f"landing/visits/date={DAY}/visits.parquet", _parquet(visits))
    assets = resolved(SHOPS).assets()
    resources = {"lake": lake, "landing": landing, "calendar": Calendar()}
    assert dg.materialize([assets[0]], resources=resources).success
    result = dg.materialize(
        assets,
        selection=[assets[1]],
        partition_key=DAY.isoformat(),
        resources=resources,
    )

    assert result.success
    stored = lake.read_partition("visits", DAY)
    assert stored.to_dict("list") == {
        "shop_id": [1, 2],
        "visited_at": [pd.Timestamp("2026-01-05 09:00:00"), pd.Timestamp("2026-01-05 10:00:00")],
        "visitors": [12, 7],
    }
    assert str(stored["visitors"].dtype) == "int16"
    reasons = lake.read_partition("quarantined_visits", DAY).set_index("source_row")["reason"].to_dict()
    assert reasons == {
        2: "shop_id: must be a shop_id of shops (got 3)",
        3: "visited_at: must be inside the partition's day (got 2026-01-06 01:00:00); "
        "visitors: must be at most 1,000 (got 1001)",
    }


def _parquet(frame: pd.DataFrame) -> bytes:
    from resources.lake import parquet_bytes

    return parquet_bytes(frame)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda t: t["visits"]["columns"]["shop_id"]["references"].update(table="malls"),
            "references malls.shop_id",
        ),
        (lambda t: t["visits"].update(after=[]), "list it in `after`"),
        (lambda t: t["visits"]["columns"]["shop_id"]["references"].update(days_before=1), "days_before"),
        (lambda t: t["visits"]["columns"]["visited_at"].update(type="integer"), "within_day"),
        (lambda t: t["shops"]["columns"]["shop_id"].update(unique_across_days=True), "unique_across_days"),
        (lambda t: t["visits"]["columns"]["shop_id"].update(unique_across_days=True), "needs a pool"),
        (
            lambda t: t["visits"]["columns"]["visited_at"].update(unique_across_days=True),
            "only an integer column is unique across days",
        ),
        (lambda t: t["visits"].update(feed="shops"), "two tables read the same feed"),
        (lambda t: t["visits"].update(feed="Visits/2026"), "feed 'Visits/2026'"),
        (lambda t: t["visits"]["columns"]["visitors"].update(maximum=3), "maximum"),
        (lambda t: t["visits"].update(freshness_hours=0), "freshness_hours must be positive"),
    ],
    ids=[
        "unknown-reference",
        "reference-not-after",
        "lag-on-a-reference-table",
        "within-day-on-an-integer",
        "across-days-on-a-reference-table",
        "across-days-without-a-pool",
        "across-days-on-a-timestamp",
        "feed-read-twice",
        "feed-not-a-folder-name",
        "misspelt-rule",
        "freshness-not-positive",
    ],
)
def test_a_declaration_that_cannot_hold_is_refused_naming_it(change, message):
    attributes = yaml.safe_load(yaml.safe_dump(SHOPS))
    change(attributes["tables"])
    with pytest.raises(Exception, match=message):
        resolved(attributes)


def test_the_scoring_api_judges_a_payment_by_the_payments_contract():
    # The service's request fields and bounds are the lake's, declared in the payments folder.
    payments = contract("raw_transactions")
    assert payments.kinds == schemas.PAYMENT_COLUMNS
    amount = payments.columns["amount"]
    assert (amount.min, amount.max) == (schemas.MIN_AMOUNT, schemas.MAX_AMOUNT)
    assert all(payments.columns[c].min == contracts.MIN_ID for c in ("transaction_id",))


def test_the_payments_source_declares_the_lakes_tables():
    assert [sorted(k.to_user_string() for k in a.keys) for a in source().assets()] == [
        ["lake/customers"],
        ["lake/terminals"],
        ["lake/quarantined_transactions", "lake/raw_transactions"],
        ["lake/quarantined_fraud_labels", "lake/raw_fraud_labels"],
    ]
