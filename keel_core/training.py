"""Training the fraud model: the time-based split, the two scikit-learn pipelines, and the PR plot.

Pure module (pandas, scikit-learn, matplotlib), no Dagster. scikit-learn and matplotlib are
imported inside the functions: modules that merely import this one stay light.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from keel_core.features import FEATURE_NAMES, FEATURE_TABLE, require_days
from keel_core.metrics import Metrics, fraud_metrics

LABELS = "fraud_labels"  # the warehouse mart of fraud flags, one row per labelled payment


@dataclass(frozen=True)
class TrainingWindow:
    """Train on [train_start, train_end], skip a gap, test on [test_start, test_end].

    The gap is the label delay: a model trained at the end of the train period is used for
    ``gap`` days before any label of that period could show how it does, so the test period starts
    where a deployed model would actually be judged.
    """

    train_start: date
    train_end: date
    test_start: date
    test_end: date

    @classmethod
    def ending(
        cls, last_labelled_day: date, train_days: int, gap_days: int, test_days: int
    ) -> TrainingWindow:
        if min(train_days, test_days) < 1 or gap_days < 0:
            raise ValueError(
                f"train_days={train_days} and test_days={test_days} must be at least 1, "
                f"gap_days={gap_days} at least 0"
            )
        test_start = last_labelled_day - timedelta(days=test_days - 1)
        train_end = test_start - timedelta(days=gap_days + 1)
        return cls(train_end - timedelta(days=train_days - 1), train_end, test_start, last_labelled_day)

    def as_dict(self) -> dict[str, str]:
        return {name: getattr(self, name).isoformat() for name in self.__dataclass_fields__}

    @staticmethod
    def days_needed(train_days: int, gap_days: int, test_days: int, label_delay_days: int) -> int:
        """Days of data a window needs, counting the label delay before the last labelled day."""
        return train_days + gap_days + test_days + label_delay_days


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


def fingerprint(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's rows and columns, in order: the same rows always give the same digest."""
    digest = hashlib.sha256(",".join(f"{name}:{dtype}" for name, dtype in frame.dtypes.items()).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


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


def precision_recall_png(curves: Mapping[str, tuple[pd.Series, np.ndarray]], title: str) -> bytes:
    """A precision-recall plot (PNG) of several models' scores on the same labels."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to a buffer
    from matplotlib import pyplot as plt
    from sklearn.metrics import precision_recall_curve

    figure, axes = plt.subplots(figsize=(6, 4.5), dpi=100)
    try:
        for name, (labels, scores) in curves.items():
            precision, recall, _ = precision_recall_curve(labels, scores)
            axes.plot(recall, precision, label=name, drawstyle="steps-post")
        axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
        axes.grid(alpha=0.3)
        axes.legend(loc="upper right")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", bbox_inches="tight")
    finally:
        plt.close(figure)
    return buffer.getvalue()
