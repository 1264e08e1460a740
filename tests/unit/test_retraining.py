import pytest

from keel_core.retraining import Evidence, RetrainingPolicy, reasons

POLICY = RetrainingPolicy(labelled_days=3)


def test_nothing_new_is_no_reason_to_retrain():
    assert reasons(Evidence(labelled_days=["2026-02-01", "2026-02-02"]), POLICY) == []


def test_enough_newly_labelled_days_are_a_reason_and_say_up_to_when():
    (reason,) = reasons(Evidence(labelled_days=["2026-02-01", "2026-02-03", "2026-02-02"]), POLICY)
    assert reason.startswith("3 newly labelled days") and "up to 2026-02-03" in reason


def test_a_failed_drift_or_performance_check_is_a_reason_on_its_own():
    found = reasons(
        Evidence(drift_failures=["2026-02-05", "2026-02-04"], performance_failures=["2026-01-28"]), POLICY
    )
    assert found == [
        "feature drift above the failure threshold on 2026-02-04, 2026-02-05",
        "live performance below the floor on 2026-01-28",
    ]


def test_a_policy_that_never_waits_for_labels_is_refused():
    with pytest.raises(ValueError, match="labelled_days=0"):
        RetrainingPolicy(labelled_days=0)
