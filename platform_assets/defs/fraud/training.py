"""Training the fraud model: the time-based split, the two scikit-learn pipelines, and the PR plot.

Pure module (pandas, scikit-learn, matplotlib), no Dagster. scikit-learn and matplotlib are
imported inside the functions: modules that merely import this one stay light.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from keel_core.learning import fingerprint
from keel_core.windows import TrainingWindow
from platform_assets.defs.fraud.metrics import Metrics, fraud_metrics
from platform_assets.defs.fraud.transaction_features import FEATURE_NAMES, FEATURE_TABLE, require_days

LABELS = "fraud_labels"  # the warehouse mart of fraud flags, one row per labelled payment


@dataclass(frozen=True)
class LabelHorizon:
    last_labelled_day: date  # the latest payment day whose flags have been reported
    label_delay_days: int  # how long flags take to arrive, as observed in the data

    def within(self, last_day: date | None) -> date:
        """The latest labelled day as seen at the end of ``last_day`` (None: now): a run for a window
        of days trains and judges on that window, not on newer days the warehouse may also hold."""
        if last_day is None:
            return self.last_labelled_day
        return min(self.last_labelled_day, last_day - timedelta(days=self.label_delay_days))


def label_horizon(connection) -> LabelHorizon:
    """What the warehouse knows about labels: until which payment day, after which delay."""
    last, delay = connection.execute(
        f"select max(transaction_date), max(label_delay_days) from {LABELS}"
    ).fetchone()
    if last is None:
        raise LookupError(f"no fraud flags in the warehouse's {LABELS}: ingest and build more days first")
    return LabelHorizon(last, int(delay))


@dataclass(frozen=True)
class LabelledFeatures:
    frame: pd.DataFrame  # the feature rows with their label ``is_fraud``, ordered by transaction id
    unlabelled: int  # feature rows in the window whose flag never arrived (e.g. it was quarantined)


def labelled_features(connection, first: date, last: date) -> LabelledFeatures:
    """Features of the payments of days [first, last] with their fraud flags.

    Fails if any day of the window has no features, rather than training on a hole.
    """
    require_days(connection, first, last)
    frame = connection.execute(
        f"""
        select features.*, cast(labels.is_fraud as integer) as is_fraud
        from {FEATURE_TABLE} as features
        join {LABELS} as labels using (transaction_id)
        where features.transaction_date between ? and ?
        order by features.transaction_id
        """,
        [first, last],
    ).df()
    (total,) = connection.execute(
        f"select count(*) from {FEATURE_TABLE} where transaction_date between ? and ?", [first, last]
    ).fetchone()
    return LabelledFeatures(frame, total - len(frame))


def _feature_selector():
    from sklearn.compose import ColumnTransformer

    # The pipeline picks its columns by name: callers pass any frame that has them, in any order.
    return ColumnTransformer([("features", "passthrough", FEATURE_NAMES)], remainder="drop")


def fit_fraud_model(train: pd.DataFrame, seed: int, hyper_parameters: Mapping[str, Any]):
    """Gradient-boosted trees on the feature columns of ``train`` (label column ``is_fraud``)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    model = Pipeline(
        [
            ("select", _feature_selector()),
            # No early stopping: its validation split is random, and a fixed number of iterations
            # keeps the same seed and data giving the same model.
            (
                "classifier",
                HistGradientBoostingClassifier(random_state=seed, early_stopping=False, **hyper_parameters),
            ),
        ]
    )
    return model.fit(train, train["is_fraud"])


def fit_baseline(train: pd.DataFrame, seed: int):
    """The yardstick: a scaled logistic regression on the same features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    model = Pipeline(
        [
            ("select", _feature_selector()),
            ("scale", StandardScaler()),
            ("classifier", LogisticRegression(max_iter=1_000, random_state=seed)),
        ]
    )
    return model.fit(train, train["is_fraud"])


def fraud_scores(model, frame: pd.DataFrame) -> np.ndarray:
    """The model's probability of fraud for each row of ``frame``."""
    return model.predict_proba(frame)[:, 1]


def scored(model, labelled: pd.DataFrame) -> pd.DataFrame:
    """What the metrics need: each payment's day, card and label, and the model's score."""
    return labelled[["transaction_date", "customer_id", "is_fraud"]].assign(
        score=fraud_scores(model, labelled)
    )


@dataclass(frozen=True)
class Experiment:
    """One training run: the model and its baseline, fitted and tested on a window."""

    window: TrainingWindow
    train: LabelledFeatures
    test: LabelledFeatures
    model: Any
    baseline: Any
    scored: pd.DataFrame
    baseline_scored: pd.DataFrame
    metrics: Metrics
    baseline_metrics: Metrics
    training_seconds: float

    @property
    def fingerprints(self) -> dict[str, str]:
        return {"train": fingerprint(self.train.frame), "test": fingerprint(self.test.frame)}


def run_experiment(
    connection, window: TrainingWindow, seed: int, hyper_parameters: Mapping[str, Any]
) -> Experiment:
    """Train the model and the baseline on ``window``'s train days and test both on its test days.
    The one way Keel trains: the ``models/fraud_model`` asset and ``keel reproduce`` both call it."""
    train = labelled_features(connection, window.train_start, window.train_end)
    test = labelled_features(connection, window.test_start, window.test_end)
    started = time.monotonic()
    model = fit_fraud_model(train.frame, seed, hyper_parameters)
    training_seconds = time.monotonic() - started
    baseline = fit_baseline(train.frame, seed)
    model_scored, baseline_scored = scored(model, test.frame), scored(baseline, test.frame)
    return Experiment(
        window,
        train,
        test,
        model,
        baseline,
        model_scored,
        baseline_scored,
        fraud_metrics(model_scored),
        fraud_metrics(baseline_scored),
        training_seconds,
    )
