"""``keel reproduce <model tag>``: train a registered version again from what it recorded, and compare.

A version's metadata (resources/registry.py) holds its training window, seed, hyper-parameters,
feature set, the fingerprints of its train and test rows, the code (git commit, dirty flag), the
lockfile and the dbt manifest it ran with. Reproducing reads the same windows from the namespace's
warehouse, checks the rows are the ones it was trained on, trains with the same seed and
hyper-parameters through the same function the asset uses (``training.run_experiment``), and
compares every metric. Anything that differs is named; only identical metrics pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from keel_core import provenance, training
from keel_core.features import FEATURE_SET_VERSION

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


def window_of(metadata: dict) -> training.TrainingWindow:
    recorded = metadata["training_window"]
    return training.TrainingWindow(**{name: date.fromisoformat(day) for name, day in recorded.items()})


def reproduce(tag: str, metadata: dict, connection) -> Reproduction:
    """Train ``tag`` again on the warehouse behind ``connection`` and compare with its record."""
    missing = [
        name for name in ("training_window", "seed", "hyper_parameters", "metrics") if name not in metadata
    ]
    if missing:
        raise ValueError(f"{tag} did not record {', '.join(missing)}: it cannot be reproduced")
    differences = _code_differences(metadata)
    if metadata.get("feature_set_version") != FEATURE_SET_VERSION:
        differences.append(
            f"code: features are version {FEATURE_SET_VERSION}, {tag} was trained on "
            f"{metadata.get('feature_set_version')}"
        )
    experiment = training.run_experiment(
        connection, window_of(metadata), metadata["seed"], metadata["hyper_parameters"]
    )
    recorded_data = metadata.get("data_sha256", {})
    for part, fingerprint in experiment.fingerprints.items():
        if part not in recorded_data:
            differences.append(f"data: {tag} recorded no fingerprint of its {part} rows")
        elif recorded_data[part] != fingerprint:
            differences.append(
                f"data: the {part} rows of {window_of(metadata).as_dict()} are not those {tag} was "
                "trained on (the warehouse was rebuilt from other data since)"
            )
    return Reproduction(
        tag=tag,
        recorded={name: float(value) for name, value in metadata["metrics"].items()},
        reproduced=experiment.metrics.as_dict(),
        differences=differences,
    )


def _code_differences(metadata: dict) -> list[str]:
    differences = []
    recorded, now = metadata.get("code_version", {}), provenance.code_version()
    if recorded.get("git_commit") != now["git_commit"]:
        differences.append(
            f"code: commit {now['git_commit'][:12]}, trained at {str(recorded.get('git_commit'))[:12]}"
        )
    if recorded.get("git_dirty") or now["git_dirty"]:
        differences.append("code: uncommitted changes (then or now): the commit alone does not say what ran")
    if metadata.get("lockfile_sha256") != provenance.lockfile_sha256():
        differences.append("code: uv.lock differs from the one it was trained with")
    return differences
