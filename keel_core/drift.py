"""Feature drift: how far the rows a model sees today are from the rows it was trained on.

Evidently computes one drift score per feature (it picks the test by column type and sample size:
a normed Wasserstein distance for numbers, Jensen-Shannon for flags on large samples, p-values on
small ones) and renders a self-contained HTML report. This module chooses what is compared, samples
deterministically above a size limit, and turns the scores into a verdict with two thresholds.

Pure module (pandas, Evidently), no Dagster. Evidently costs seconds and ~300 MB to import: it is
imported inside ``measure`` only.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class DriftColumns:
    """What a use case compares: its numerical and categorical columns, and the key columns that
    order rows before sampling (so that a sample does not depend on the order rows were read in)."""

    numerical: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    order_by: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.numerical and not self.categorical:
            raise ValueError("drift needs at least one column to compare")
        if both := set(self.numerical) & set(self.categorical):
            raise ValueError(f"columns both numerical and categorical: {sorted(both)}")

    @property
    def names(self) -> list[str]:
        return [*self.categorical, *self.numerical]


@dataclass(frozen=True)
class DriftPolicy:
    # The share of features that drifted: at ``warn_share`` someone should look, at ``fail_share``
    # the model no longer sees the world it learnt (the check fails and retraining is asked for).
    warn_share: float = 0.3
    fail_share: float = 0.5
    # Features that fail the check whenever they drift, whatever the share (a use case's choice).
    fail_features: tuple[str, ...] = ()
    # Evidently takes ~1 s per 100,000 values; above this many rows a side is sampled.
    max_rows: int = 50_000
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.warn_share <= self.fail_share <= 1:
            raise ValueError(
                f"need 0 < warn_share ({self.warn_share}) <= fail_share ({self.fail_share}) <= 1"
            )


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    method: str  # the statistical test Evidently chose
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    features: tuple[FeatureDrift, ...]
    current_rows: int  # rows compared (after sampling)
    reference_rows: int
    current_total: int  # rows before sampling
    reference_total: int
    html: str  # the Evidently report, self-contained

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def share(self) -> float:
        return len(self.drifted) / len(self.features)

    @property
    def sampled(self) -> bool:
        return self.current_rows < self.current_total or self.reference_rows < self.reference_total

    def level(self, policy: DriftPolicy) -> str:
        """``ok``, ``warn`` or ``fail`` by the share of drifted features and which drifted."""
        if self.share >= policy.fail_share or set(self.drifted) & set(policy.fail_features):
            return "fail"
        return "warn" if self.share >= policy.warn_share else "ok"

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([f.__dict__ for f in self.features]).sort_values(
            ["drifted", "score"], ascending=[False, False]
        )


def sample(frame: pd.DataFrame, max_rows: int, seed: int, order_by: tuple[str, ...] = ()) -> pd.DataFrame:
    """At most ``max_rows`` rows; the same ones for the same input whatever its row order when
    ``order_by`` are key columns of ``frame``."""
    if len(frame) <= max_rows:
        return frame
    keys = [column for column in order_by if column in frame]
    ordered = frame.sort_values(keys, kind="stable") if keys else frame
    return ordered.sample(n=max_rows, random_state=seed)


def measure(
    current: pd.DataFrame, reference: pd.DataFrame, policy: DriftPolicy, columns: DriftColumns
) -> DriftResult:
    """Compare ``columns`` of ``current`` with ``reference`` (both need every one)."""
    names = columns.names
    for side, frame in (("current", current), ("reference", reference)):
        missing = sorted(set(names) - set(frame.columns))
        if missing:
            raise ValueError(f"the {side} data lacks the features {missing}")
        if frame.empty:
            raise ValueError(f"the {side} data has no rows: drift needs rows on both sides")

    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(
        numerical_columns=list(columns.numerical), categorical_columns=list(columns.categorical)
    )
    current_sample = sample(current, policy.max_rows, policy.seed, columns.order_by)
    reference_sample = sample(reference, policy.max_rows, policy.seed, columns.order_by)
    snapshot = Report([DataDriftPreset(columns=names)]).run(
        Dataset.from_pandas(current_sample[names].reset_index(drop=True), data_definition=definition),
        Dataset.from_pandas(reference_sample[names].reset_index(drop=True), data_definition=definition),
    )
    features = tuple(
        _feature_drift(metric) for metric in snapshot.dict()["metrics"] if "column" in metric["config"]
    )
    if sorted(f.feature for f in features) != sorted(names):
        raise RuntimeError(
            f"Evidently scored {sorted(f.feature for f in features)}, expected {sorted(names)}"
        )
    return DriftResult(
        features=features,
        current_rows=len(current_sample),
        reference_rows=len(reference_sample),
        current_total=len(current),
        reference_total=len(reference),
        html=snapshot.get_html_str(as_iframe=False),
    )


def _feature_drift(metric: dict) -> FeatureDrift:
    config = metric["config"]
    score, threshold = float(metric["value"]), float(config["threshold"])
    # A p-value says drift when it is small; a distance when it is large (Evidently's own rule).
    drifted = score < threshold if "p_value" in config["method"] else score >= threshold
    return FeatureDrift(config["column"], config["method"], score, threshold, drifted)
