"""``keel reproduce <model tag>``: train a registered version again from what it recorded, and compare.

A version's record (``keel_core.model_record``) holds its training window, seed, hyper-parameters,
feature set, the fingerprints of its train and test rows, the code (git commit, dirty flag), the
lockfile and the dbt manifest it ran with. Reproducing reads the same windows from the namespace's
warehouse, checks the rows are the ones it was trained on, trains with the same seed and
hyper-parameters through the same function the asset uses (``training.run_experiment``), and
compares every metric. Anything that differs is named; only identical metrics pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keel_core import provenance
from keel_core.model_record import ModelRecord
from platform_assets.defs.fraud import training
from platform_assets.defs.fraud.transaction_features import FEATURE_SET_VERSION

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


def reproduce(tag: str, record: ModelRecord, connection) -> Reproduction:
    """Train ``tag`` again on the warehouse behind ``connection`` and compare with its record."""
    differences = _code_differences(record)
    if record.feature_set_version != FEATURE_SET_VERSION:
        differences.append(
            f"code: features are version {FEATURE_SET_VERSION}, {tag} was trained on "
            f"{record.feature_set_version}"
        )
    window = record.training_window
    experiment = training.run_experiment(connection, window, record.seed, record.hyper_parameters)
    for part, fingerprint in experiment.fingerprints.items():
        if part not in record.data_sha256:
            differences.append(f"data: {tag} recorded no fingerprint of its {part} rows")
        elif record.data_sha256[part] != fingerprint:
            differences.append(
                f"data: the {part} rows of {window.as_dict()} are not those {tag} was "
                "trained on (the warehouse was rebuilt from other data since)"
            )
    return Reproduction(
        tag=tag,
        recorded=dict(record.metrics),
        reproduced=experiment.metrics.values(),
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
