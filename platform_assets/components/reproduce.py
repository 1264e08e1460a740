"""``keel reproduce <model tag>``: train a registered version of any use case again from what it
recorded, and compare.

A version's record (``keel_core.model_record``) holds its training window, hyper-parameters, feature
set, the fingerprints of its train and test rows, the code (git commit, dirty flag), the lockfile and
the dbt manifest it ran with. Reproducing reads the same windows from the namespace's warehouse,
checks the rows are the ones it was trained on, trains with the same hyper-parameters through the
same method the ``<name>/model`` asset uses (``Plan.experiment``), and compares every metric. Anything
that differs is named; only identical metrics pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keel_core import provenance
from keel_core.model_record import ModelRecord
from keel_core.warehouse_engine import changed_rows, current_snapshot
from platform_assets.components.plan import Plan

# Metrics are recomputed from the same rows, seed and library versions: any difference beyond
# float formatting means something else changed.
TOLERANCE = 1e-12


@dataclass(frozen=True)
class Reproduction:
    tag: str
    recorded: dict[str, float]
    reproduced: dict[str, float]
    differences: list[str] = field(default_factory=list)  # what is not as recorded (inputs, code)

    def same(self, metric: str) -> bool:
        again = self.reproduced.get(metric)
        return again is not None and abs(again - self.recorded[metric]) <= TOLERANCE

    @property
    def same_metrics(self) -> bool:
        return set(self.recorded) == set(self.reproduced) and all(map(self.same, self.recorded))

    @property
    def reproduced_exactly(self) -> bool:
        return self.same_metrics and not any(d.startswith("data:") for d in self.differences)


def reproduce(plan: Plan, tag: str, record: ModelRecord, connection) -> Reproduction:
    """Train ``tag`` of ``plan``'s use case again on the warehouse behind ``connection`` and compare
    with its record."""
    differences = _code_differences(record)
    if record.feature_set_version != plan.spec.feature_set_version:
        differences.append(
            f"code: features are version {plan.spec.feature_set_version}, {tag} was trained on "
            f"{record.feature_set_version}"
        )
    if tuple(record.features) != tuple(plan.spec.feature_names):
        differences.append(
            f"code: the use case's features are not the {len(record.features)} {tag} was trained on"
        )
    estimators = plan.estimators()
    if record.model not in estimators:
        differences.append(f"code: the use case trains {' or '.join(estimators)}, {tag} was {record.model}")
    window = record.training_window
    # The estimator and parameters model selection chose then, fitted again (not chosen again).
    experiment, _ = plan.experiment(
        connection, window, dict(record.hyper_parameters), estimator=estimators.get(record.model)
    )
    changed = False
    for part, fingerprint in experiment.fingerprints.items():
        if part not in record.data_sha256:
            differences.append(f"data: {tag} recorded no fingerprint of its {part} rows")
        elif record.data_sha256[part] != fingerprint:
            changed = True
            differences.append(
                f"data: the {part} rows of {window.as_dict()} are not those {tag} was "
                "trained on (the warehouse was rebuilt from other data since)"
            )
    snapshot = record.warehouse_snapshot
    if changed and snapshot is not None and current_snapshot(connection) != snapshot:
        # Read now, the DuckLake still holds the snapshot it was trained at: name what changed.
        what = changed_rows(
            connection,
            plan.feature_table,
            plan.spec.day_column,
            window.train_start,
            window.test_end,
            snapshot,
            tuple(plan.spec.entity),
        )
        if what:
            differences.append(f"data: {what}")
    return Reproduction(
        tag=tag,
        recorded=dict(record.metrics),
        reproduced=dict(experiment.metrics),
        differences=differences,
    )


def _code_differences(record: ModelRecord) -> list[str]:
    differences = []
    recorded, now = record.code_version, provenance.code_version()
    if recorded.git_commit != now["git_commit"]:
        differences.append(f"code: commit {now['git_commit'][:12]}, trained at {recorded.git_commit[:12]}")
    if recorded.git_dirty or now["git_dirty"]:
        differences.append("code: uncommitted changes (then or now): the commit alone does not say what ran")
    if record.lockfile_sha256 != provenance.lockfile_sha256():
        differences.append("code: uv.lock differs from the one it was trained with")
    return differences
