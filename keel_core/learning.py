"""Training and scoring any use case's model: the rows it learns from, the pipeline, its predictions.

A use case gives two functions over the warehouse (its ``features.py``): ``features(connection,
first, last)``, one row per entity and day with the feature columns, and ``labels(connection, first,
last)``, the label of each entity and day once it is known. This module joins them, fits the
declared estimator behind a column selector (so a model is called with any frame that has its
feature columns), predicts, and measures.

Pure module (pandas; scikit-learn imported inside the functions), no Dagster.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from keel_core.judging import Metric, estimator
from keel_core.windows import TrainingWindow

LABEL, PREDICTION = "label", "prediction"


@dataclass(frozen=True)
class Rows:
    """What a use case's rows look like: the entity's key columns, the day column, features, label,
    and attributes: columns kept with each row that the model does not learn from, for what a metric
    or a report groups by (the card of a payment, say)."""

    keys: tuple[str, ...]
    day: str
    features: tuple[str, ...]
    label: str
    attributes: tuple[str, ...] = ()

    @property
    def stored(self) -> list[str]:
        """The columns of a stored feature row."""
        return [*self.keys, self.day, *self.attributes, *self.features]

    def check(self, frame: pd.DataFrame, what: str, with_label: bool = False) -> pd.DataFrame:
        expected = self.stored + ([self.label] if with_label else [])
        if missing := [column for column in expected if column not in frame.columns]:
            raise ValueError(f"{what} lacks the columns {missing} (the use case declares {expected})")
        return frame


def labelled(rows: Rows, features: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The feature rows that have a label, ordered by day and key."""
    rows.check(features, "the features")
    on = [*rows.keys, rows.day]
    if missing := [column for column in [*on, rows.label] if column not in labels.columns]:
        raise ValueError(f"the labels lack the columns {missing}")
    frame = features.merge(labels[[*on, rows.label]], on=on, how="inner", validate="one_to_one")
    return frame.sort_values(on, ignore_index=True)


def pipeline(rows: Rows, model):
    """``model`` behind a selector of the feature columns, by name."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    select = ColumnTransformer([("features", "passthrough", list(rows.features))], remainder="drop")
    return Pipeline([("select", select), ("model", model)])


def input_columns(model) -> list[str] | None:
    """The columns a model made by ``pipeline`` reads (its selector's); None for any other model."""
    select = getattr(model, "named_steps", {}).get("select")
    if select is None or not hasattr(select, "transformers_"):
        return None
    return [column for name, _, columns in select.transformers_ if name == "features" for column in columns]


def predict(model, frame: pd.DataFrame, task: str) -> np.ndarray:
    """A classifier's probability of the positive class, a regressor's prediction."""
    if task == "classification":
        return model.predict_proba(frame)[:, 1]
    return np.asarray(model.predict(frame), dtype="float64")


def measure(scored: pd.DataFrame, metrics: Mapping[str, Metric]) -> dict[str, float]:
    return {name: metric(scored) for name, metric in metrics.items()}


@dataclass(frozen=True)
class Baseline:
    """The yardstick: another estimator trained on the same rows, or a feature column that is itself a
    prediction (a seasonal-naive forecast, say)."""

    class_path: Any = None  # an estimator class or factory, or its import path
    params: Mapping[str, Any] | None = None
    column: str | None = None

    def __post_init__(self):
        if (self.class_path is None) == (self.column is None):
            raise ValueError("a baseline is either an estimator (class_path) or a column, not both")

    def describe(self) -> str:
        if self.column:
            return f"the column {self.column}"
        return f"{_short_name(self.class_path)} (baseline)"


def _short_name(estimator: Any) -> str:
    if isinstance(estimator, str):
        return estimator.rpartition(":" if ":" in estimator else ".")[2]
    return getattr(estimator, "__name__", type(estimator).__name__)


@dataclass(frozen=True)
class Experiment:
    window: TrainingWindow
    model: Any
    baseline: Any  # a fitted pipeline, or None for a column baseline
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    train: pd.DataFrame  # the labelled training rows (drift compares later days with them)
    test: pd.DataFrame  # the labelled test rows
    training_seconds: float
    fingerprints: dict[str, str]
    test_excluded: int = 0  # test rows left out of judging (``judged``): known positives, for instance
    model_spec: tuple[Any, Mapping[str, Any]] | None = None  # the estimator and parameters fitted
    selection: Any = None  # how they were chosen (keel_core.selection.Selection), if they were

    @property
    def train_rows(self) -> int:
        return len(self.train)

    @property
    def test_rows(self) -> int:
        return len(self.test)


def run_experiment(
    rows: Rows,
    task: str,
    load: Callable[[date, date], pd.DataFrame],
    window: TrainingWindow,
    model_spec: tuple[Any, Mapping[str, Any]],
    baseline: Baseline,
    metrics: Mapping[str, Metric],
    judged: Callable[[pd.DataFrame, date, date], pd.DataFrame] | None = None,
    choose: Callable[[pd.DataFrame], tuple[tuple[Any, Mapping[str, Any]], Any]] | None = None,
) -> Experiment:
    """Fit the model and the baseline on ``window``'s train days, measure both on its test days.
    ``load(first, last)``: the labelled rows of those days; ``model_spec``: an estimator class or
    factory (or its import path) and its hyper-parameters (``keel_core.judging.estimator``);
    ``judged(frame, first, last)``: the test rows the models are judged on (default: all);
    ``choose(train)``: another model spec, chosen from the training rows alone, and how."""
    train, test = load(window.train_start, window.train_end), load(window.test_start, window.test_end)
    loaded = len(test)
    if judged is not None:
        test = judged(test, window.test_start, window.test_end).reset_index(drop=True)
    for part, frame in (("train", train), ("test", test)):
        if frame.empty:
            raise LookupError(f"no labelled rows in the {part} days of {window.as_dict()}")
    chosen = None
    if choose is not None:  # before the test rows are looked at
        model_spec, chosen = choose(train)
    started = time.monotonic()
    model = pipeline(rows, estimator(*model_spec)).fit(train, train[rows.label])
    seconds = time.monotonic() - started
    fitted_baseline = None
    if baseline.class_path:
        fitted_baseline = pipeline(rows, estimator(baseline.class_path, baseline.params)).fit(
            train, train[rows.label]
        )
    return Experiment(
        window=window,
        model=model,
        baseline=fitted_baseline,
        metrics=measure(scored(rows, model, test, task), metrics),
        baseline_metrics=measure(scored(rows, fitted_baseline, test, task, baseline.column), metrics),
        train=train,
        test=test,
        training_seconds=seconds,
        fingerprints={"train": fingerprint(train), "test": fingerprint(test)},
        test_excluded=loaded - len(test),
        model_spec=(model_spec[0], dict(model_spec[1])),
        selection=chosen,
    )


def without_known_positives(
    rows: Rows, frame: pd.DataFrame, positives: pd.DataFrame, by: str, delay_days: int
) -> pd.DataFrame:
    """``frame`` without the rows whose ``by`` (a card, say) had a positive row in ``positives`` known
    before their day: on a day at least ``delay_days`` + 1 before it, as a label arrives ``delay_days``
    after its day. A card known to be compromised is blocked; judging a model on its later payments
    flatters it (the fraud-detection handbook leaves them out of its test sets)."""
    first_positive = pd.to_datetime(positives[rows.day]).groupby(positives[by]).min()
    known_since = frame[by].map(first_positive) + pd.Timedelta(days=delay_days + 1)
    return frame[~(pd.to_datetime(known_since) <= pd.to_datetime(frame[rows.day]))]


def scored(rows: Rows, model, frame: pd.DataFrame, task: str, column: str | None = None) -> pd.DataFrame:
    """The keys, the day, the attributes, the label and the prediction (of ``model``, or the
    ``column`` baseline): what a metric is measured on."""
    prediction = frame[column].to_numpy(dtype="float64") if column else predict(model, frame, task)
    return frame[[*rows.keys, rows.day, *rows.attributes]].assign(
        **{LABEL: frame[rows.label].to_numpy(), PREDICTION: prediction}
    )


def fingerprint(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's rows and columns, in order: the same rows always give the same digest."""
    digest = hashlib.sha256(",".join(f"{name}:{dtype}" for name, dtype in frame.dtypes.items()).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def precision_recall_png(curves: Mapping[str, tuple[pd.Series, np.ndarray]], title: str) -> bytes:
    """A precision-recall plot (PNG) of several classifiers' scores on the same labels."""
    import io

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
