import re

import bentoml
import numpy as np
import pandas as pd
import pytest
from model_records import approval_details, training_record
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from resources.lake import LocalLake
from resources.registry import (
    APPROVED,
    ARCHIVED,
    CANDIDATE,
    PRODUCTION,
    REFUSED,
    ModelRegistry,
    RegistryError,
)

ROWS = pd.DataFrame({"amount": [5.0, 12.0, 30.0, 80.0, 150.0, 220.0, 300.0, 410.0], "is_night": [0, 1] * 4})
LABELS = [0, 0, 0, 0, 1, 1, 1, 1]


@pytest.fixture(scope="module")
def tiny_model():
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(ROWS, LABELS)


@pytest.fixture
def registry(tmp_path, monkeypatch) -> ModelRegistry:
    monkeypatch.setenv("KEEL_USER", "tester")
    return ModelRegistry(lake=LocalLake(root=str(tmp_path / "lake"))).of("fraud_detector")


def predictions(model) -> np.ndarray:
    return model.predict_proba(ROWS)[:, 1]


def approve(registry: ModelRegistry, tag: str) -> None:
    registry.record(tag, APPROVED, reason="approved: all rules passed", details=approval_details())


def stages(registry: ModelRegistry) -> dict[str, str]:
    return {version.tag: version.stage for version in registry.versions()}


# Registering and loading ---------------------------------------------------------------------------


def test_a_registered_model_is_a_candidate_version_of_its_model(registry, tiny_model):
    tag = registry.register(tiny_model, training_record(), run_id="run-1")
    name, _, version = tag.partition(":")
    assert name == "fraud_detector" and version
    registered = registry.version(tag)
    assert registered.stage == CANDIDATE
    assert registered.version == version
    assert registered.record == training_record()
    assert [(event.stage, event.reason, event.run_id, event.by) for event in registered.history] == [
        (CANDIDATE, "trained", "run-1", "tester")
    ]


def test_a_registered_version_is_stored_in_the_lake_layout(registry, tiny_model, tmp_path):
    tag = registry.register(tiny_model, training_record())
    version = tag.partition(":")[2]
    root = tmp_path / "lake" / "registry" / "fraud_detector"
    assert sorted(path.name for path in (root / "versions" / version).iterdir()) == [
        "metadata.json",
        "model.bentomodel",
    ]
    assert len(list((root / "events").glob("*.json"))) == 1
    assert registry.uri == str(root.resolve())


def test_a_registered_model_loads_back_giving_the_same_predictions(registry, tiny_model):
    tag = registry.register(tiny_model, training_record())
    assert np.array_equal(predictions(registry.load(tag)), predictions(tiny_model))


def test_a_version_missing_from_the_local_store_is_imported_from_the_lake(registry, tiny_model):
    tag = registry.register(tiny_model, training_record())
    bentoml.models.delete(tag)
    with pytest.raises(bentoml.exceptions.NotFound):
        bentoml.models.get(tag)
    loaded = registry.load(tag)
    assert np.array_equal(predictions(loaded), predictions(tiny_model))
    assert str(bentoml.models.get(tag).tag) == tag  # back in the local store


def test_versions_are_listed_oldest_first_and_the_latest_is_the_newest(registry, tiny_model):
    tags = [registry.register(tiny_model, training_record(run_id=f"run-{i}")) for i in range(3)]
    assert [version.tag for version in registry.versions()] == tags
    assert registry.latest().tag == tags[-1]
    assert registry.latest().record.dagster_run_id == "run-2"


def test_an_empty_registry_has_no_latest_version_and_no_champion(registry):
    assert registry.versions() == []
    assert registry.champion() is None
    with pytest.raises(RegistryError, match="train one first"):
        registry.latest()


# Stages --------------------------------------------------------------------------------------------


def test_events_keep_the_order_in_which_they_were_recorded(registry, tiny_model):
    tag = registry.register(tiny_model, training_record())
    reasons = [f"evaluation {i}" for i in range(6)]
    for i, reason in enumerate(reasons):
        registry.record(tag, REFUSED if i % 2 else APPROVED, reason=reason)
    history = registry.version(tag).history
    assert [event.reason for event in history] == ["trained", *reasons]
    assert registry.version(tag).stage == REFUSED  # the last event's stage


def test_the_approval_of_a_version_is_its_latest_approved_event_with_its_details(registry, tiny_model):
    tag = registry.register(tiny_model, training_record())
    assert registry.version(tag).approval() is None
    registry.record(tag, APPROVED, reason="first", details={"decision": "approved: 1"})
    registry.record(tag, APPROVED, reason="second", details=approval_details())
    approval = registry.version(tag).approval()
    assert approval.reason == "second"
    assert approval.details == approval_details()


@pytest.mark.parametrize("stage", ["staging", ARCHIVED], ids=["unknown", "derived, never recorded"])
def test_recording_a_stage_the_registry_does_not_record_is_refused(registry, tiny_model, stage):
    tag = registry.register(tiny_model, training_record())
    with pytest.raises(RegistryError, match=f"unknown stage '{stage}'"):
        registry.record(tag, stage, reason="by hand")
    assert len(registry.version(tag).history) == 1


# Promotion and rollback ----------------------------------------------------------------------------


def test_a_version_never_approved_cannot_be_promoted(registry, tiny_model):
    tag = registry.register(tiny_model, training_record())
    with pytest.raises(RegistryError, match=r"never approved.*stage candidate"):
        registry.promote(tag, reason="by hand")
    assert registry.champion() is None


def test_a_refused_version_cannot_be_promoted(registry, tiny_model):
    tag = registry.register(tiny_model, training_record())
    registry.record(tag, REFUSED, reason="refused: ROC AUC 0.6000 vs floor 0.75", details=approval_details())
    with pytest.raises(RegistryError, match=r"never approved.*stage refused"):
        registry.promote(tag, reason="by hand")
    assert stages(registry) == {tag: REFUSED}


def test_promoting_an_approved_version_puts_it_in_production_with_its_model_card(
    registry, tiny_model, tmp_path
):
    tag = registry.register(tiny_model, training_record())
    with pytest.raises(RegistryError, match="never promoted"):
        registry.card(tag)
    approve(registry, tag)
    promotion = registry.promote(tag, reason="gate approved", run_id="run-9")
    assert (promotion.tag, promotion.stage, promotion.reason, promotion.run_id, promotion.by) == (
        tag,
        PRODUCTION,
        "gate approved",
        "run-9",
        "tester",
    )
    assert promotion.details == {"replaces": None}
    assert registry.version(tag).stage == PRODUCTION
    assert registry.champion().tag == tag
    card = registry.card(tag)
    assert card.startswith(f"# Model card: `{tag}`")
    assert "nothing (first production model)" in card
    version = tag.partition(":")[2]
    stored = tmp_path / "lake" / "registry" / "fraud_detector" / "versions" / version / "model_card.md"
    assert stored.read_text() == card
    assert registry.attachment_uri(tag, "model_card.md") == str(stored.resolve())


def test_promoting_a_second_version_archives_the_first_and_names_it_as_replaced(registry, tiny_model):
    first = registry.register(tiny_model, training_record())
    approve(registry, first)
    registry.promote(first, reason="first")
    second = registry.register(tiny_model, training_record())
    approve(registry, second)
    promotion = registry.promote(second, reason="better")
    assert promotion.details == {"replaces": first}
    assert stages(registry) == {first: ARCHIVED, second: PRODUCTION}
    assert registry.champion().tag == second
    assert f"It replaced: `{first}`." in registry.card(second)


def test_promoting_an_earlier_version_again_rolls_back_to_it(registry, tiny_model):
    first = registry.register(tiny_model, training_record())
    approve(registry, first)
    registry.promote(first, reason="first")
    second = registry.register(tiny_model, training_record())
    approve(registry, second)
    registry.promote(second, reason="better")
    rollback = registry.promote(first, reason="rollback: second misbehaves")
    assert rollback.details == {"replaces": second}
    assert stages(registry) == {first: PRODUCTION, second: ARCHIVED}
    assert registry.champion().tag == first
    assert [event.stage for event in registry.version(first).history] == [
        CANDIDATE,
        APPROVED,
        PRODUCTION,
        PRODUCTION,
    ]


def test_promoting_the_version_already_in_production_is_refused(registry, tiny_model):
    tag = registry.register(tiny_model, training_record())
    approve(registry, tag)
    registry.promote(tag, reason="first")
    with pytest.raises(RegistryError, match="already in production"):
        registry.promote(tag, reason="again")
    assert [event.stage for event in registry.version(tag).history].count(PRODUCTION) == 1


# Unknown versions ----------------------------------------------------------------------------------


UNKNOWN = "fraud_detector:doesnotexist"


@pytest.mark.parametrize(
    "attempt",
    [
        lambda registry: registry.version(UNKNOWN),
        lambda registry: registry.load(UNKNOWN),
        lambda registry: registry.record(UNKNOWN, APPROVED, reason="by hand"),
        lambda registry: registry.promote(UNKNOWN, reason="by hand"),
        lambda registry: registry.attach(UNKNOWN, "plot.png", b"png"),
    ],
    ids=["version", "load", "record", "promote", "attach"],
)
def test_an_unknown_version_is_an_error_naming_the_registry(registry, tiny_model, attempt):
    registry.register(tiny_model, training_record())
    message = re.escape(f"no version {UNKNOWN} in the registry at {registry.uri}")
    with pytest.raises(RegistryError, match=message):
        attempt(registry)


def test_a_tag_of_another_model_is_refused(registry):
    with pytest.raises(RegistryError, match="'other_model:abc' is not a version of fraud_detector"):
        registry.load("other_model:abc")


def test_a_version_s_own_files_cannot_be_replaced_by_an_attachment(registry, tiny_model):
    tag = registry.register(tiny_model, training_record())
    for name in ("model.bentomodel", "metadata.json"):
        with pytest.raises(RegistryError, match="cannot be replaced"):
            registry.attach(tag, name, b"overwritten")
    assert np.array_equal(predictions(registry.load(tag)), predictions(tiny_model))


def test_the_namespace_s_registry_names_no_model_and_lists_the_models_it_holds(registry, tiny_model):
    namespace = ModelRegistry(lake=registry.lake)
    assert namespace.models() == []
    with pytest.raises(RegistryError, match="names no model"):
        namespace.versions()
    tag = registry.register(tiny_model, training_record())
    namespace.of("terminal_volume").register(tiny_model, training_record())
    assert namespace.models() == ["fraud_detector", "terminal_volume"]
    assert namespace.of_tag(tag).version(tag).tag == tag
    with pytest.raises(RegistryError, match="not a model version"):
        namespace.of_tag("fraud_detector")
