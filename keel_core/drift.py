"""Feature drift: how far the payments a model sees today are from the payments it was trained on.

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

from keel_core.features import FEATURES

# A day is all weekend or all weekdays: against two weeks of training its weekend flag always
# "drifts". Every other feature is compared; flags are categories to Evidently, the rest numbers.
NOT_COMPARED = ("is_weekend",)
CATEGORICAL = [f.name for f in FEATURES if f.dtype == "int8" and f.name not in NOT_COMPARED]
NUMERICAL = [f.name for f in FEATURES if f.dtype != "int8"]


@dataclass(frozen=True)
class DriftPolicy:
    # The share of features that drifted: at ``warn_share`` someone should look, at ``fail_share``
    # the model no longer sees the world it learnt (the check fails and retraining is asked for).
    # The simulated world's 30-day windows are still filling during the first training weeks, so a
    # few window features drift on any later day: the thresholds sit above that.
    warn_share: float = 0.3
    fail_share: float = 0.5
    # The payment's own features (not windows over earlier days) show a change on its first day,
    # and hardly move from one normal day to the next (scores ~0.02 against a threshold of 0.1):
    # one of these drifting fails the check whatever the share.
    fail_features: tuple[str, ...] = ("amount", "is_night")
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


def sample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most ``max_rows`` rows, the same ones for the same input whatever its row order."""
    if len(frame) <= max_rows:
        return frame
    ordered = frame.sort_values("transaction_id") if "transaction_id" in frame else frame
    return ordered.sample(n=max_rows, random_state=seed)


def measure(current: pd.DataFrame, reference: pd.DataFrame, policy: DriftPolicy) -> DriftResult:
    """Compare the feature columns of ``current`` with ``reference`` (both need every feature)."""
    names = CATEGORICAL + NUMERICAL
    for side, frame in (("current", current), ("reference", reference)):
        missing = sorted(set(names) - set(frame.columns))
        if missing:
            raise ValueError(f"the {side} data lacks the features {missing}")
        if frame.empty:
            raise ValueError(f"the {side} data has no rows: drift needs payments on both sides")

    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=NUMERICAL, categorical_columns=CATEGORICAL)
    current_sample = sample(current, policy.max_rows, policy.seed)
    reference_sample = sample(reference, policy.max_rows, policy.seed)
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
