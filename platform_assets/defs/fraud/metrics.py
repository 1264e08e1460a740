"""How a fraud model is judged: threshold-free metrics and the card-level metric investigators use.

Pure module (pandas, numpy, scikit-learn's metrics), no Dagster.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

CARDS_PER_DAY = 100  # what a team of investigators can check in a day (the handbook's k)


@dataclass(frozen=True)
class Metrics:
    roc_auc: float
    average_precision: float
    card_precision_at_100: float
    rows: int
    frauds: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def values(self) -> dict[str, float]:
        """The three metrics, without the counts they were measured on."""
        names = ("roc_auc", "average_precision", "card_precision_at_100")
        return {name: getattr(self, name) for name in names}


def card_precision_at_k(scored: pd.DataFrame, k: int = CARDS_PER_DAY) -> float:
    """Mean over days of the share of the day's k highest-scored cards that were compromised.

    ``scored`` has one row per payment: ``transaction_date``, ``customer_id`` (the card), ``score``
    and ``is_fraud``. Each day a card's score is its highest payment score that day and it counts
    as compromised if any of its payments that day was fraud. Cards already caught (in the top k
    and compromised) on an earlier day are left out: investigators would not be shown them again.
    The denominator is k even on a day with fewer cards, as investigators' time is what is spent.
    """
    missing = {"transaction_date", "customer_id", "score", "is_fraud"} - set(scored.columns)
    if missing:
        raise ValueError(f"card precision needs the columns {sorted(missing)}")
    caught: set[int] = set()
    precisions = []
    for _, day in scored.groupby("transaction_date", sort=True):
        cards = day.groupby("customer_id").agg(score=("score", "max"), compromised=("is_fraud", "max"))
        cards = cards[~cards.index.isin(caught)]
        # Ties broken by card id, so the metric does not depend on row order.
        top = cards.reset_index().sort_values(["score", "customer_id"], ascending=[False, True]).head(k)
        precisions.append(top["compromised"].sum() / k)
        caught.update(top.loc[top["compromised"] == 1, "customer_id"])
    if not precisions:
        raise ValueError("card precision of an empty set of payments")
    return float(np.mean(precisions))


def card_precision_at_100(scored: pd.DataFrame) -> float:
    """Card precision@100 as a ``keel.UseCase`` metric: ``scored`` holds the component's columns
    (``label``, ``prediction``, the day ``transaction_date`` and the card ``customer_id``, an
    attribute). The same figure as ``card_precision_at_k`` on the payments' own columns."""
    return card_precision_at_k(scored.rename(columns={"label": "is_fraud", "prediction": "score"}))


def fraud_metrics(scored: pd.DataFrame) -> Metrics:
    """ROC AUC, average precision and card precision@100 of ``scored`` (see ``card_precision_at_k``)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    frauds = int(scored["is_fraud"].sum())
    if frauds == 0 or frauds == len(scored):
        raise ValueError(
            f"cannot judge a model on {len(scored):,} payments of which {frauds:,} are fraud: "
            "the window needs both fraud and genuine payments"
        )
    return Metrics(
        roc_auc=float(roc_auc_score(scored["is_fraud"], scored["score"])),
        average_precision=float(average_precision_score(scored["is_fraud"], scored["score"])),
        card_precision_at_100=card_precision_at_k(scored),
        rows=len(scored),
        frauds=frauds,
    )
