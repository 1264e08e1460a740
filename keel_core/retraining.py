"""When to retrain: the evidence gathered since the last training, and the policy that weighs it.

Pure module, no Dagster: the retraining sensor collects the evidence from the Dagster instance
and asks ``reasons``; an empty list means no retraining.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetrainingPolicy:
    # Fresh labels are the reason to retrain on a calendar: a week of newly labelled days.
    labelled_days: int = 7

    def __post_init__(self):
        if self.labelled_days < 1:
            raise ValueError(f"labelled_days={self.labelled_days}: retrain after at least one labelled day")


@dataclass(frozen=True)
class Evidence:
    """What happened since the last training (all of it, if nothing was ever trained)."""

    labelled_days: list[str] = field(default_factory=list)  # days whose labels arrived
    drift_failures: list[str] = field(default_factory=list)  # days whose drift check failed
    performance_failures: list[str] = field(default_factory=list)  # days below the performance floor


def reasons(evidence: Evidence, policy: RetrainingPolicy) -> list[str]:
    """Why a retraining is due (empty: it is not)."""
    found = []
    if len(evidence.labelled_days) >= policy.labelled_days:
        found.append(
            f"{len(evidence.labelled_days)} newly labelled days (policy: {policy.labelled_days}), "
            f"up to {max(evidence.labelled_days)}"
        )
    if evidence.drift_failures:
        found.append(
            f"feature drift above the failure threshold on {', '.join(sorted(evidence.drift_failures))}"
        )
    if evidence.performance_failures:
        found.append(
            f"live performance below the floor on {', '.join(sorted(evidence.performance_failures))}"
        )
    return found
