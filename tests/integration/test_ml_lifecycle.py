"""The ML lifecycle on the test world: features -> model -> gate -> production -> scores, then a
retrained twin, a degraded challenger the gate refuses, and a rollback.

The tests share one registry (the module's lake) and build on each other in the order of the
fixtures: backfill (v1 promoted) -> retrained (v2, identical, promoted) -> degraded (v3, refused).
"""

from datetime import timedelta

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from keel.cli import main as keel
from platform_assets.defs.fraud.transaction_features import FEATURE_NAMES
from tests import fraud
from tests.fraud import EVALUATION, PRODUCTION_MODEL, SCORES
from tests.fraud import MODEL as FRAUD_MODEL

pytestmark = pytest.mark.slow

FEATURE_TABLE = "ml.transaction_features"


def materializations(run, key: dg.AssetKey) -> list[dict]:
    return [
        {name: value.value for name, value in event.materialization.metadata.items()}
        for event in run.get_asset_materialization_events()
        if event.asset_key == key
    ]


def train_and_promote(definitions, instance, selection):
    return definitions.resolve_job_def("fraud_train_and_promote").execute_in_process(
        instance=instance, asset_selection=selection, raise_on_error=False
    )


@pytest.fixture(scope="module")
def registry(definitions):
    return definitions.resources["registry"].of(fraud.MODEL_NAME)


@pytest.fixture(scope="module")
def first_version(backfill):
    (trained,) = materializations(backfill, FRAUD_MODEL)
    return trained


@pytest.fixture(scope="module")
def retrained(backfill, definitions, instance):
    """The same training configuration again, on the same data, through the gate."""
    return train_and_promote(definitions, instance, [FRAUD_MODEL, EVALUATION, PRODUCTION_MODEL])


@pytest.fixture(scope="module")
def hand_registered():
    """A Dagster instance of its own for versions registered by hand: what they report to it must not
    become the session's newest fraud/model materialization, which other modules read."""
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture(scope="module")
def degraded(retrained, definitions, hand_registered, registry, first_version):
    """A challenger trained on shuffled labels, registered as the newest version, then judged."""
    with definitions.resources["warehouse"].connect() as connection:
        window = registry.version(first_version["model_tag"]).record.training_window
        train = fraud.plan().labelled_rows(connection, window.train_start, window.train_end)
    shuffled = train.assign(is_fraud=np.random.default_rng(0).permutation(train["is_fraud"].to_numpy()))
    model = fraud.fit(shuffled, random_state=0, max_iter=50)
    record = registry.version(first_version["model_tag"]).record
    tag = registry.register(model, record.model_copy(update={"description": "trained on shuffled labels"}))
    # Registered by hand and reported to Dagster as fraud/model's newest materialization: the
    # gate judges the version that materialization produced, not the newest in the registry.
    hand_registered.report_runless_asset_event(
        dg.AssetMaterialization(FRAUD_MODEL, metadata={"model_tag": tag})
    )
    return tag, train_and_promote(definitions, hand_registered, [EVALUATION, PRODUCTION_MODEL])


def test_the_main_job_ends_with_a_promoted_model_and_scores_for_every_day(
    backfill, registry, definitions, world
):
    assert backfill.success
    (trained,) = materializations(backfill, FRAUD_MODEL)
    (promoted,) = materializations(backfill, PRODUCTION_MODEL)
    assert promoted["model_tag"] == trained["model_tag"] == registry.champion().tag
    with definitions.resources["warehouse"].connect() as connection:
        by_day = connection.execute(
            "select transaction_date, count(*), list(distinct model_version) "
            "from ml.transaction_scores group by all order by all"
        ).fetchall()
        features_per_day = dict(
            connection.execute(
                f"select transaction_date, count(*) from {FEATURE_TABLE} group by all"
            ).fetchall()
        )
    assert [row[0].date() for row in by_day] == world.days
    assert all(versions == [trained["model_tag"]] for _, _, versions in by_day)
    assert {row[0]: row[1] for row in by_day} == features_per_day
    lake_scores = definitions.resources["lake"].read_partition("transaction_scores", world.last_day)
    assert len(lake_scores) == features_per_day[pd.Timestamp(world.last_day)]
    assert lake_scores["fraud_probability"].between(0, 1).all()


def test_the_model_beats_chance_and_its_record_has_what_a_data_scientist_compares(first_version):
    assert first_version["roc_auc"] > 0.75
    assert first_version["average_precision"] > 0.3
    for name in (
        "baseline_roc_auc",
        "baseline_average_precision",
        "baseline_card_precision_at_100",
        "card_precision_at_100",
        "train_start",
        "test_end",
        "train_rows",
        "test_rows",
        "training_seconds",
        "keel/git_commit",
        "keel/lockfile_sha256",
    ):
        assert name in first_version, name
    assert first_version["features"]["names"] == FEATURE_NAMES
    assert first_version["hyper_parameters"]["seed"] == 42
    assert first_version["precision_recall"].startswith("![precision-recall](data:image/png;base64,")
    assert first_version["test_start"] > first_version["train_end"]  # time-based, with the label-delay gap
    gap = pd.Timestamp(first_version["test_start"]) - pd.Timestamp(first_version["train_end"])
    assert gap == timedelta(days=8)  # 7 days skipped between them


def test_the_same_seed_and_window_give_the_same_metrics(retrained, first_version):
    assert retrained.success
    (again,) = materializations(retrained, FRAUD_MODEL)
    assert again["model_tag"] != first_version["model_tag"]  # a new version in the registry
    for metric in ("roc_auc", "average_precision", "card_precision_at_100", "baseline_average_precision"):
        assert again[metric] == first_version[metric], metric


def test_a_challenger_as_good_as_the_champion_is_promoted_and_the_old_one_archived(
    retrained, registry, first_version
):
    (promoted,) = materializations(retrained, PRODUCTION_MODEL)
    assert promoted["replaces"] == first_version["model_tag"]
    assert registry.champion().tag == promoted["model_tag"]
    assert registry.version(first_version["model_tag"]).stage == "archived"
    card = registry.card(promoted["model_tag"])
    assert first_version["model_tag"] in card  # the card names the champion it replaced


def test_a_challenger_trained_on_shuffled_labels_is_refused_and_the_champion_stays(
    degraded, retrained, registry
):
    tag, judged = degraded
    (champion,) = materializations(retrained, PRODUCTION_MODEL)

    # A refusal is an expected outcome: the run succeeds, the gate's check is a WARN, nothing is
    # promoted, and production_model records that the champion stays.
    assert judged.success
    (gate,) = [
        e.event_specific_data for e in judged.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert gate.check_name == "promotion_gate" and not gate.passed
    assert gate.severity == dg.AssetCheckSeverity.WARN
    assert "refused" in gate.description
    (evaluated,) = materializations(judged, EVALUATION)
    assert evaluated["challenger"] == tag and evaluated["approved"] is False
    (stays,) = materializations(judged, PRODUCTION_MODEL)
    assert stays["promoted"] is False and stays["refused"] == tag
    assert stays["model_tag"] == champion["model_tag"]
    assert registry.version(tag).stage == "refused"
    assert registry.champion().tag == champion["model_tag"]


def test_the_gate_judges_the_version_its_training_run_produced_not_the_newest_registered(
    degraded, definitions, hand_registered, registry
):
    """A version registered after the last training materialization is not what the gate judges."""
    tag, _ = degraded
    stray = registry.register(registry.load(tag), registry.version(tag).record)
    judged = train_and_promote(definitions, hand_registered, [EVALUATION])
    assert not judged.success  # the version fraud/model produced was judged already
    assert registry.version(stray).stage == "candidate"  # the newest in the registry was not touched
    failure = next(e for e in judged.all_events if e.event_type_value == "STEP_FAILURE")
    assert f"nothing to evaluate: {tag}" in str(failure.event_specific_data)


def test_a_refused_version_cannot_be_promoted_by_hand_either(degraded, capsys):
    """`keel models promote` goes through the registry's rule: only approved versions."""
    tag, _ = degraded
    assert keel(["models", "promote", tag, "--reason", "trying my luck"]) == 1
    assert "never approved by the promotion gate" in capsys.readouterr().out


def test_keel_models_promote_rolls_back_to_the_previous_champion_and_scoring_follows(
    degraded, registry, first_version, definitions, instance, world, capsys, monkeypatch, tmp_path
):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))  # the command reports to the Dagster instance here
    rolled_back_from = registry.champion().tag

    assert keel(["models", "promote", first_version["model_tag"], "--reason", "roll back"]) == 0

    assert registry.champion().tag == first_version["model_tag"]
    assert registry.version(rolled_back_from).stage == "archived"
    promotion = registry.version(first_version["model_tag"]).history[-1]
    assert (promotion.stage, promotion.reason) == ("production", "manual: roll back")
    assert promotion.details["replaces"] == rolled_back_from
    with dg.DagsterInstance.get() as reported:
        event = reported.get_latest_materialization_event(PRODUCTION_MODEL)
    assert event.asset_materialization.metadata["model_tag"].value == first_version["model_tag"]

    capsys.readouterr()
    assert keel(["models", "list"]) == 0
    listing = capsys.readouterr().out
    for tag, stage in (
        (first_version["model_tag"], "production"),
        (rolled_back_from, "archived"),
        (degraded[0], "refused"),
    ):
        assert any(tag in line and stage in line for line in listing.splitlines()), (tag, stage)

    rescored = definitions.resolve_job_def("keel_pipeline").execute_in_process(
        instance=instance, partition_key=world.last_day.isoformat(), asset_selection=[SCORES]
    )
    assert rescored.success
    with definitions.resources["warehouse"].connect() as connection:
        versions = connection.execute(
            "select list(distinct model_version) from ml.transaction_scores where transaction_date = ?",
            [world.last_day],
        ).fetchone()[0]
    assert versions == [first_version["model_tag"]]
