"""The card-level metric fraud investigators use, the handbook's card precision@k; ROC AUC and
average precision are the platform's (``keel_core.judging``). Pure module (pandas, numpy)."""

from __future__ import annotations

import numpy as np
import pandas as pd

CARDS_PER_DAY = 100  # what a team of investigators can check in a day (the handbook's k)


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
