"""A use case's endpoint, as recorded with a model version (keel_core.endpoint)."""

import pytest
from model_records import training_record

from keel_core.endpoint import Endpoint
from keel_core.model_record import ModelRecord


def endpoint(**changes) -> Endpoint:
    fields = {
        "use_case": "terminal_volume",
        "entity": "terminal",
        "key": "terminal_id",
        "features": ("payments_1d", "payments_7d"),
        "feature_set_version": "1",
        "task": "regression",
        "response": "forecast",
        "defaults": {"payments_7d": 3.5},
    }
    return Endpoint(**{**fields, **changes})


def test_an_endpoint_survives_the_model_record_and_names_its_view():
    original = endpoint()
    stored = training_record().model_copy(update={"endpoint": original}).to_json()
    assert ModelRecord.from_json(stored).served_endpoint() == original
    view = original.view()
    assert view.name == "terminal_volume" and view.feature_names == ("payments_1d", "payments_7d")
    assert original.default_values() == [0.0, 3.5]  # no history: 0 unless the use case says otherwise


def test_a_version_without_an_endpoint_says_its_use_case_does_not_serve():
    with pytest.raises(LookupError, match="does not serve online"):
        ModelRecord.from_json(training_record().to_json()).served_endpoint()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"task": "ranking"}, "unknown task"),
        ({"defaults": {"payments_30d": 1.0}}, r"defaults for unknown features \['payments_30d'\]"),
        ({"response": "model_version"}, "cannot be named 'model_version'"),
        ({"response": "terminal_id"}, "cannot be named 'terminal_id'"),
        ({"key": "terminal id"}, "not a lowercase identifier"),
    ],
)
def test_an_endpoint_that_could_not_answer_is_refused_when_declared(changes, message):
    with pytest.raises(ValueError, match=message):
        endpoint(**changes)
