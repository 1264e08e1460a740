from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from keel_core import judging, learning
from keel_core.learning import precision_recall_png
from keel_core.windows import TrainingWindow
from platform_assets.defs.fraud.transaction_features import FEATURE_NAMES
from tests import fraud

SEED = 42
HYPER_PARAMETERS = {
    "max_iter": 30,
    "max_depth": 3,
    "learning_rate": 0.1,
    "min_samples_leaf": 20,
    "l2_regularization": 0.0,
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fit_fraud_model(train: pd.DataFrame, seed: int, hyper_parameters: dict):
    """The fraud use case's estimator, as its spec declares it, with these hyper-parameters, fitted as
    the platform fits a use case's model (``keel_core.learning``)."""
    plan = fraud.plan()
    params = {**fraud.plan().spec.estimator.params, **hyper_parameters, "random_state": seed}
    return learning.pipeline(plan.rows, judging.estimator(plan.estimator, params)).fit(
        train, train["is_fraud"]
    )


def fit_baseline(train: pd.DataFrame):
    plan = fraud.plan()
    baseline = judging.estimator(plan.baseline.class_path, plan.baseline.params)
    return learning.pipeline(plan.rows, baseline).fit(train, train["is_fraud"])


def fraud_scores(model, frame: pd.DataFrame) -> np.ndarray:
    return learning.predict(model, frame, "classification")


def days_of(first: date, last: date) -> set[date]:
    return {first + timedelta(days=i) for i in range((last - first).days + 1)}


# The time-based split ------------------------------------------------------------------------------


def test_a_window_ending_on_a_known_day_has_the_expected_dates():
    window = TrainingWindow.ending(date(2026, 2, 4), train_days=14, gap_days=7, test_days=7)
    assert window == TrainingWindow(
        train_start=date(2026, 1, 8),
        train_end=date(2026, 1, 21),
        test_start=date(2026, 1, 29),
        test_end=date(2026, 2, 4),
    )


@pytest.mark.parametrize("train_days, gap_days, test_days", [(14, 7, 7), (1, 0, 1), (30, 3, 10)])
def test_the_windows_have_their_sizes_and_the_gap_days_are_in_neither(train_days, gap_days, test_days):
    last = date(2026, 3, 1)
    window = TrainingWindow.ending(last, train_days, gap_days, test_days)
    train = days_of(window.train_start, window.train_end)
    test = days_of(window.test_start, window.test_end)
    gap = days_of(window.train_end + timedelta(days=1), window.test_start - timedelta(days=1))
    assert window.test_end == last
    assert (len(train), len(gap), len(test)) == (train_days, gap_days, test_days)
    assert not train & test
    assert not gap & (train | test)
    assert window.train_end < window.test_start


@pytest.mark.parametrize(
    "train_days, gap_days, test_days",
    [(0, 7, 7), (14, 7, 0), (14, -1, 7), (-3, 7, 7)],
    ids=["no train day", "no test day", "negative gap", "negative train"],
)
def test_a_window_with_an_impossible_size_is_refused(train_days, gap_days, test_days):
    with pytest.raises(ValueError, match="must be at least 1"):
        TrainingWindow.ending(date(2026, 2, 4), train_days, gap_days, test_days)


def test_a_window_as_a_dict_has_iso_dates_by_name():
    window = TrainingWindow.ending(date(2026, 2, 4), train_days=14, gap_days=7, test_days=7)
    assert window.as_dict() == {
        "train_start": "2026-01-08",
        "train_end": "2026-01-21",
        "test_start": "2026-01-29",
        "test_end": "2026-02-04",
    }


def test_the_days_needed_count_the_windows_the_gap_and_the_label_delay():
    assert TrainingWindow.days_needed(train_days=14, gap_days=7, test_days=7, label_delay_days=7) == 35
    window = TrainingWindow.ending(date(2026, 2, 4), train_days=14, gap_days=7, test_days=7)
    assert len(days_of(window.train_start, window.test_end)) == TrainingWindow.days_needed(14, 7, 7, 0)


# The pipelines --------------------------------------------------------------------------------------


def synthetic_labelled_features(rows: int = 3_000, seed: int = 0) -> pd.DataFrame:
    """Feature rows like ``labelled_features`` returns, where fraud depends on the amount."""
    generator = np.random.default_rng(seed)
    columns = {}
    for name in FEATURE_NAMES:
        if name.startswith("is_"):
            columns[name] = generator.integers(0, 2, rows)
        elif "_transactions_" in name:
            columns[name] = generator.poisson(3, rows)
        elif "_fraud_rate_" in name:
            columns[name] = generator.random(rows) * 0.05
        else:  # amounts
            columns[name] = generator.gamma(2.0, 40.0, rows)
    frame = pd.DataFrame(columns)
    fraud_probability = 1 / (1 + np.exp(-(frame["amount"] - 200) / 20))
    first = date(2026, 1, 1)
    return frame.assign(
        is_fraud=(generator.random(rows) < fraud_probability).astype(int),
        transaction_date=[first + timedelta(days=int(d)) for d in generator.integers(0, 7, rows)],
        customer_id=generator.integers(0, 300, rows),
    )


@pytest.fixture(scope="module", autouse=True)
def _one_openmp_thread():
    """On a busy machine, OpenMP threads waiting for each other make each small fit take a second."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture(scope="module")
def labelled() -> pd.DataFrame:
    frame = synthetic_labelled_features()
    assert 0 < frame["is_fraud"].sum() < len(frame)  # both classes, or nothing here means anything
    return frame


@pytest.fixture(scope="module")
def model(labelled):
    return fit_fraud_model(labelled, SEED, HYPER_PARAMETERS)


def test_the_fraud_model_learns_to_rank_frauds_above_genuine_payments(model, labelled):
    scores = fraud_scores(model, labelled)
    assert scores.shape == (len(labelled),)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert roc_auc_score(labelled["is_fraud"], scores) > 0.9


def test_the_same_data_seed_and_hyper_parameters_give_the_same_model(model, labelled):
    again = fit_fraud_model(labelled, SEED, HYPER_PARAMETERS)
    assert np.array_equal(fraud_scores(again, labelled), fraud_scores(model, labelled))


def test_the_order_of_the_training_rows_does_not_change_the_model(model, labelled):
    # No early stopping and no subsampling (fewer rows than the binning sample): the boosted trees
    # see the same histograms whatever the order, so the scores are identical, not merely close.
    expected = fraud_scores(model, labelled)
    for seed in range(3):
        shuffled = labelled.sample(frac=1, random_state=seed)
        refitted = fit_fraud_model(shuffled, SEED, HYPER_PARAMETERS)
        assert np.array_equal(fraud_scores(refitted, labelled), expected)


def test_the_model_scores_a_frame_by_column_name_ignoring_extra_columns_and_their_order(model, labelled):
    shuffled_columns = labelled.assign(terminal_id=7, note="x")
    shuffled_columns = shuffled_columns[list(reversed(shuffled_columns.columns))]
    assert list(shuffled_columns.columns) != list(labelled.columns)
    assert np.array_equal(fraud_scores(model, shuffled_columns), fraud_scores(model, labelled))


def test_the_model_trains_on_the_feature_columns_only(model, labelled):
    with_extra = labelled.assign(noise=np.arange(len(labelled)))
    refitted = fit_fraud_model(with_extra[list(reversed(with_extra.columns))], SEED, HYPER_PARAMETERS)
    assert np.array_equal(fraud_scores(refitted, labelled), fraud_scores(model, labelled))


def test_scoring_a_frame_without_a_feature_fails(model, labelled):
    with pytest.raises((KeyError, ValueError), match="amount"):
        fraud_scores(model, labelled.drop(columns=["amount"]))


def test_the_hyper_parameters_reach_the_classifier(model):
    classifier = model.named_steps["model"]
    assert {name: getattr(classifier, name) for name in HYPER_PARAMETERS} == HYPER_PARAMETERS
    assert classifier.n_iter_ == HYPER_PARAMETERS["max_iter"]  # no early stopping


def test_the_baseline_trains_on_the_same_frame_and_ranks_frauds_first(labelled):
    baseline = fit_baseline(labelled)
    scores = fraud_scores(baseline, labelled)
    assert scores.shape == (len(labelled),)
    assert roc_auc_score(labelled["is_fraud"], scores) > 0.9
    reordered = labelled[list(reversed(labelled.columns))]
    assert np.allclose(fraud_scores(baseline, reordered), scores)


def test_the_precision_recall_plot_is_a_png(model, labelled):
    png = precision_recall_png(
        {
            "model": (labelled["is_fraud"], fraud_scores(model, labelled)),
            "random": (labelled["is_fraud"], np.linspace(0, 1, len(labelled))),
        },
        title="fraud_detector:test",
    )
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) > 1_000


def test_a_run_for_a_window_of_days_sees_the_labels_of_that_window_only():
    import duckdb

    days = [*pd.date_range("2018-09-01", "2018-09-30"), *pd.date_range("2026-11-01", "2026-12-03")]
    connection = duckdb.connect()
    connection.execute("create schema ml")
    connection.register("days", pd.DataFrame({"transaction_date": days}))
    connection.execute("create table ml.transaction_features as select * from days")
    plan = fraud.plan()  # flags arrive 7 days later
    assert plan.last_labelled_day(connection) == date(2026, 11, 26)
    # A replayed 2018 window in a warehouse that also holds 2026: its own last labelled day.
    assert plan.last_labelled_day(connection, date(2018, 9, 30)) == date(2018, 9, 23)
    assert plan.last_labelled_day(connection, date(2026, 12, 31)) == date(2026, 11, 26)


def test_a_card_known_compromised_before_a_day_is_left_out_of_that_day_s_judging():
    """The fraud-detection handbook's test rule: a card with a fraud on a day a label delay (+1)
    before is known compromised, blocked, and not judged on; one whose fraud is not known yet is."""
    rows = fraud.plan().rows
    day = pd.Timestamp

    positives = pd.DataFrame(
        {
            "customer_id": [1, 2, 3],
            "transaction_date": [day("2026-01-01"), day("2026-01-03"), day("2026-01-02")],
        }
    )
    judged_day = pd.DataFrame(
        {
            "customer_id": [1, 2, 3, 4],
            "transaction_date": [day("2026-01-10")] * 4,
            "transaction_id": [1, 2, 3, 4],
        }
    )
    kept = learning.without_known_positives(rows, judged_day, positives, "customer_id", delay_days=7)
    # Card 1's fraud of 01-01 was known by 01-09, card 3's of 01-02 on 01-10 itself: both left out.
    # Card 2's fraud of 01-03 is reported on 01-10 at the earliest: not known yet. Card 4: no fraud.
    assert kept["customer_id"].tolist() == [2, 4]
    assert learning.without_known_positives(rows, judged_day, positives.iloc[:0], "customer_id", 7).equals(
        judged_day
    )
