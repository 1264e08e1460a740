"""Model selection (keel_core.selection): chosen on the training window's last days, never the test days."""

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from keel_core import judging, learning, selection
from keel_core.windows import TrainingWindow

ROWS = learning.Rows(("id",), "day", ("signal", "noise"), "label")
AP = judging.metric("average_precision", True)
FIRST = date(2026, 3, 1)
TREE = selection.Candidate(
    "tree",
    "sklearn.tree.DecisionTreeClassifier",
    {"random_state": 0},
    {"max_depth": selection.Space(low=1, high=8), "criterion": selection.Space(choices=("gini", "entropy"))},
)
LOGISTIC = selection.Candidate(
    "logistic",
    "sklearn.linear_model.LogisticRegression",
    {},
    {"C": selection.Space(low=0.01, high=10.0, log=True)},
)
DECLARED = selection.Candidate(
    "declared", "sklearn.tree.DecisionTreeClassifier", {"max_depth": 1, "random_state": 0}
)


def rows(days: int, seed: int = 0) -> pd.DataFrame:
    """Labelled rows whose label follows ``signal`` (more so on later days) and not ``noise``."""
    rng = np.random.default_rng(seed)
    n = days * 200
    day = np.repeat([FIRST + timedelta(days=i) for i in range(days)], 200)
    signal = rng.normal(size=n)
    label = (signal + rng.normal(scale=1.0, size=n) > 1.5).astype(int)
    frame = pd.DataFrame(
        {"id": np.arange(n), "day": pd.to_datetime(day), "signal": signal, "noise": rng.normal(size=n)}
    )
    return frame.assign(label=label)


def choose(frame, trials=6, on_trial=None, judged=None, seed=0, gap_days=0):
    window = (FIRST, FIRST + timedelta(days=9))
    return selection.select(
        ROWS,
        "classification",
        frame,
        window,
        DECLARED,
        [TREE, LOGISTIC],
        AP,
        trials,
        3,
        gap_days,
        seed,
        judged,
        on_trial,
    )


def test_the_declared_estimator_is_trial_zero_and_the_budget_is_kept():
    made = choose(rows(10))
    assert [t.number for t in made.trials] == list(range(6))
    assert made.trials[0].candidate == "declared" and made.trials[0].params == {
        "max_depth": 1,
        "random_state": 0,
    }
    assert {t.candidate for t in made.trials[1:]} <= {"tree", "logistic"}
    assert made.best.score == max(t.score for t in made.trials)


def test_the_model_is_fitted_on_the_earlier_days_and_validated_on_the_last_ones():
    seen = []

    def judged(frame, first, last):
        seen.append((frame["day"].min().date(), frame["day"].max().date(), first, last))
        return frame

    made = choose(rows(10), judged=judged, gap_days=2)
    assert made.fit_days == (FIRST, FIRST + timedelta(days=4))  # then 2 days of gap
    assert made.validation_days == (FIRST + timedelta(days=7), FIRST + timedelta(days=9))
    assert seen == [(FIRST + timedelta(days=7), FIRST + timedelta(days=9), *made.validation_days)]
    assert made.validation_rows == 600


def test_with_fit_days_each_trial_learns_from_that_many_days_reaching_before_the_window():
    # The window is days 5 .. 14 of the rows; 3 validation days, a gap of 1, 8 fitting days: 3 .. 10.
    frame = rows(15)
    window = (FIRST + timedelta(days=5), FIRST + timedelta(days=14))
    made = selection.select(ROWS, "classification", frame, window, DECLARED, [], AP, 1, 3, 1, fit_days=8)
    assert made.fit_days == (FIRST + timedelta(days=3), FIRST + timedelta(days=10))
    assert made.validation_days == (FIRST + timedelta(days=12), FIRST + timedelta(days=14))
    # Without the days before the window, there is nothing to fit on: said, not fitted on fewer.
    with pytest.raises(LookupError, match="fitting days"):
        late = frame[frame["day"] >= pd.Timestamp(FIRST + timedelta(days=11))]
        selection.select(ROWS, "classification", late, window, DECLARED, [], AP, 1, 3, 1, fit_days=8)
    assert selection.split(*window, 3, 1) == ((window[0], FIRST + timedelta(days=10)), made.validation_days)
    with pytest.raises(ValueError, match="fit_days is 0"):
        selection.split(*window, 3, 1, fit_days=0)


def test_the_same_rows_and_seed_give_the_same_trials():
    once, again = choose(rows(10)), choose(rows(10))
    assert [(t.candidate, t.params, t.score) for t in once.trials] == [
        (t.candidate, t.params, t.score) for t in again.trials
    ]


def test_every_trial_is_reported_as_it_ends():
    reported = []
    made = choose(rows(10), trials=4, on_trial=reported.append)
    assert reported == made.trials


def test_a_training_window_too_short_for_its_validation_days_is_refused():
    with pytest.raises(ValueError, match="no days to fit on"):
        selection.split(FIRST, FIRST + timedelta(days=3), validation_days=3, gap_days=1)


def test_a_search_space_is_choices_or_a_range():
    with pytest.raises(ValueError, match="either choices or low and high"):
        selection.Space(low=1)
    with pytest.raises(ValueError, match="above its high"):
        selection.Space(low=2, high=1)


def test_selection_sees_the_training_rows_only_never_the_test_days():
    frame = rows(20)
    window = TrainingWindow(
        FIRST, FIRST + timedelta(days=9), FIRST + timedelta(days=13), FIRST + timedelta(days=19)
    )
    given = []

    def chosen(train):
        given.append(train)
        made = choose(train)
        return (made.class_path, made.params), made

    def load(first, last):
        day = frame["day"].dt.date
        return frame[(day >= first) & (day <= last)].reset_index(drop=True)

    experiment = learning.run_experiment(
        ROWS,
        "classification",
        load,
        window,
        (DECLARED.class_path, DECLARED.params),
        learning.Baseline("sklearn.linear_model.LogisticRegression", {}),
        {"average_precision": AP},
        choose=chosen,
    )
    (train,) = given
    assert train["day"].max().date() == window.train_end
    assert experiment.selection is not None and experiment.model_spec == (
        experiment.selection.class_path,
        experiment.selection.params,
    )
