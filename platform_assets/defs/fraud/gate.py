"""The fraud model's promotion gate: when a newly trained model may replace the one in production.

Pure module, no Dagster. The gate is deliberately asymmetric: a challenger must clear absolute
floors on its own, and must not be worse than the champion beyond a small tolerance on the two
metrics the fraud team works with (average precision, and card precision@100 for investigators).
``keel_core.judging.judge`` decides the same way for any use case (``tests/unit/test_judging.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from keel_core.promotion import Decision, Rule
from platform_assets.defs.fraud.metrics import Metrics


@dataclass(frozen=True)
class GatePolicy:
    # A model scoring at random has a ROC AUC of 0.5 and an average precision equal to the fraud
    # rate (under 1% here); the floors sit far above both.
    min_roc_auc: float = 0.75
    min_average_precision: float = 0.30
    # How much worse than the champion a challenger may be: tolerances absorb the noise of
    # retraining on a shifted window without letting a real regression through.
    average_precision_tolerance: float = 0.02
    card_precision_tolerance: float = 0.02


def decide(challenger: Metrics, champion: Metrics | None, policy: GatePolicy) -> Decision:
    """Judge ``challenger`` against the floors and, if there is one, ``champion`` (same window)."""
    rules = [
        Rule(
            "roc_auc_floor",
            challenger.roc_auc >= policy.min_roc_auc,
            f"ROC AUC {challenger.roc_auc:.4f} vs floor {policy.min_roc_auc:.2f}",
        ),
        Rule(
            "average_precision_floor",
            challenger.average_precision >= policy.min_average_precision,
            f"average precision {challenger.average_precision:.4f} "
            f"vs floor {policy.min_average_precision:.2f}",
        ),
    ]
    if champion is not None:
        for metric, tolerance in (
            ("average_precision", policy.average_precision_tolerance),
            ("card_precision_at_100", policy.card_precision_tolerance),
        ):
            ours, theirs = getattr(challenger, metric), getattr(champion, metric)
            rules.append(
                Rule(
                    f"{metric}_vs_champion",
                    ours >= theirs - tolerance,
                    f"{metric.replace('_', ' ')} {ours:.4f} vs champion {theirs:.4f} (tolerance {tolerance})",
                )
            )
    return Decision(all(rule.passed for rule in rules), tuple(rules))
