"""The typed record every registered version carries (keel_core.model_record)."""

import json

import pydantic
import pytest
from model_records import WINDOW, training_record

from keel_core.model_record import ModelRecord


def test_a_record_survives_its_json_exactly():
    record = training_record()
    stored = json.loads(json.dumps(record.to_json()))  # as the registry writes and BentoML keeps it
    assert ModelRecord.from_json(stored) == record
    assert ModelRecord.from_json(stored).training_window == WINDOW  # dates, not strings


def test_a_misspelt_or_missing_field_is_refused_where_the_record_is_built():
    stored = training_record().to_json()
    with pytest.raises(pydantic.ValidationError, match="hyper_parameter\n"):
        ModelRecord.from_json({**stored, "hyper_parameter": {}})  # misspelt: an extra field
    without_seed = {name: value for name, value in stored.items() if name != "seed"}
    with pytest.raises(pydantic.ValidationError, match="seed"):
        ModelRecord.from_json(without_seed)


def test_a_record_written_before_it_was_typed_reads_as_the_typed_one():
    """As the registry held them before: positives named after what they were (frauds), inputs one
    Markdown string, and the test's counts (integers) kept among the metrics."""
    stored = training_record().to_json()
    older = {
        **stored,
        "train": {"rows": 10, "frauds": 2},
        "inputs": "`features/transaction_features`, `warehouse/fraud_labels`",
        "metrics": {**stored["metrics"], "rows": 7000, "frauds": 61},
    }
    record = ModelRecord.from_json(json.loads(json.dumps(older)))
    assert record.train.positives == 2
    assert record.inputs == ("features/transaction_features", "warehouse/fraud_labels")
    assert record.metrics == training_record().metrics  # a metric of exactly 1 is stored as 1.0


def test_an_endpoint_that_breaks_its_own_rules_is_refused_when_read():
    from test_endpoint import endpoint

    stored = training_record().model_copy(update={"endpoint": endpoint()}).to_json()
    stored["endpoint"]["task"] = "ranking"
    with pytest.raises(pydantic.ValidationError, match="unknown task"):
        ModelRecord.from_json(stored)
