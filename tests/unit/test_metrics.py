from datetime import date

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from keel_core import learning
from platform_assets.defs.fraud.metrics import CARDS_PER_DAY, card_precision_at_k
from tests import fraud

DAY_1, DAY_2, DAY_3 = date(2026, 1, 5), date(2026, 1, 6), date(2026, 1, 7)


def payments(rows: list[tuple[date, int, float, int]]) -> pd.DataFrame:
    """One row per payment: (day, card, score, is_fraud)."""
    return pd.DataFrame(rows, columns=["transaction_date", "customer_id", "score", "is_fraud"])


def test_a_card_scores_the_highest_of_its_payments_that_day():
    # Card 1's best payment (0.9) outranks card 2 (0.6), though its other payment scores 0.05:
    # with the max, the one card shown is card 1, which is genuine.
    scored = payments([(DAY_1, 1, 0.05, 0), (DAY_1, 1, 0.9, 0), (DAY_1, 2, 0.6, 1)])
    assert card_precision_at_k(scored, k=1) == 0.0


def test_a_card_is_compromised_if_any_of_its_payments_that_day_is_fraud():
    # Card 1 is shown for its genuine 0.9 payment; its low-scored fraud still makes it compromised.
    scored = payments([(DAY_1, 1, 0.9, 0), (DAY_1, 1, 0.05, 1), (DAY_1, 2, 0.6, 0)])
    assert card_precision_at_k(scored, k=1) == 1.0


def test_the_precision_is_the_mean_over_days_of_the_share_of_compromised_cards_in_the_top_k():
    scored = payments(
        [
            # Day 1: top 2 are cards 1 (fraud) and 2 (genuine): 1/2.
            (DAY_1, 1, 0.9, 1),
            (DAY_1, 2, 0.8, 0),
            (DAY_1, 3, 0.1, 1),
            # Day 2: top 2 are cards 4 and 5, both fraud: 2/2.
            (DAY_2, 4, 0.7, 1),
            (DAY_2, 5, 0.6, 1),
            (DAY_2, 6, 0.5, 0),
        ]
    )
    assert card_precision_at_k(scored, k=2) == pytest.approx((0.5 + 1.0) / 2)


def test_a_card_caught_on_an_earlier_day_is_not_counted_again():
    scored = payments(
        [
            # Day 1: cards 1 (fraud) and 2 (genuine) are shown: card 1 is caught. 1/2.
            (DAY_1, 1, 0.9, 1),
            (DAY_1, 2, 0.8, 0),
            (DAY_1, 3, 0.1, 0),
            # Day 2: card 1 scores highest again but is left out, so cards 2 and 3 are shown: 0/2.
            # (Counting it again would give 1/2.)
            (DAY_2, 1, 0.95, 1),
            (DAY_2, 2, 0.7, 0),
            (DAY_2, 3, 0.6, 0),
            (DAY_2, 4, 0.5, 1),
        ]
    )
    assert card_precision_at_k(scored, k=2) == pytest.approx((0.5 + 0.0) / 2)


def test_a_card_shown_but_genuine_on_an_earlier_day_is_counted_when_it_is_compromised_later():
    scored = payments(
        [
            # Day 1: card 1 is shown but genuine: 0/1.
            (DAY_1, 1, 0.9, 0),
            (DAY_1, 2, 0.1, 0),
            # Day 2: card 1 is compromised and shown: 1/1.
            (DAY_2, 1, 0.9, 1),
            (DAY_2, 2, 0.1, 0),
        ]
    )
    assert card_precision_at_k(scored, k=1) == pytest.approx(0.5)


def test_a_compromised_card_missed_on_an_earlier_day_is_counted_when_it_is_caught_later():
    scored = payments(
        [
            # Day 1: card 1 is compromised but card 2 outranks it: 0/1, card 1 is not caught.
            (DAY_1, 1, 0.2, 1),
            (DAY_1, 2, 0.9, 0),
            # Day 2: card 1 is shown and caught: 1/1.
            (DAY_2, 1, 0.9, 1),
            (DAY_2, 2, 0.1, 0),
        ]
    )
    assert card_precision_at_k(scored, k=1) == pytest.approx(0.5)


def test_the_denominator_is_k_even_on_a_day_with_fewer_cards():
    scored = payments([(DAY_1, 1, 0.9, 1), (DAY_1, 1, 0.3, 0)])  # one card, two payments
    assert card_precision_at_k(scored, k=2) == pytest.approx(0.5)


def test_a_day_with_only_already_caught_cards_counts_as_zero():
    scored = payments([(DAY_1, 1, 0.9, 1), (DAY_2, 1, 0.9, 1)])
    assert card_precision_at_k(scored, k=1) == pytest.approx((1.0 + 0.0) / 2)


def test_ties_are_broken_by_card_id():
    # All cards score the same: the lowest ids are shown, whatever the row order.
    scored = payments([(DAY_1, 3, 0.5, 1), (DAY_1, 2, 0.5, 1), (DAY_1, 1, 0.5, 0)])
    assert card_precision_at_k(scored, k=1) == 0.0
    assert card_precision_at_k(scored, k=2) == pytest.approx(0.5)


def test_the_row_order_does_not_change_the_precision():
    generator = np.random.default_rng(7)
    rows = 400
    scored = pd.DataFrame(
        {
            "transaction_date": generator.choice([DAY_1, DAY_2, DAY_3], size=rows),
            "customer_id": generator.integers(0, 60, size=rows),
            # Few distinct scores: many ties between cards, which only the card id can break.
            "score": generator.integers(0, 4, size=rows) / 4,
            "is_fraud": (generator.random(rows) < 0.3).astype(int),
        }
    )
    expected = card_precision_at_k(scored, k=5)
    for seed in range(5):
        shuffled = scored.sample(frac=1, random_state=seed).reset_index(drop=True)
        assert card_precision_at_k(shuffled, k=5) == expected


def test_missing_columns_are_named():
    scored = payments([(DAY_1, 1, 0.9, 1)]).drop(columns=["score", "is_fraud"])
    with pytest.raises(ValueError, match=r"\['is_fraud', 'score'\]"):
        card_precision_at_k(scored, k=2)


def test_an_empty_set_of_payments_has_no_card_precision():
    with pytest.raises(ValueError, match="empty"):
        card_precision_at_k(payments([]), k=2)


def small_scored_window() -> pd.DataFrame:
    return payments(
        [
            (DAY_1, 1, 0.9, 1),
            (DAY_1, 2, 0.8, 0),
            (DAY_1, 3, 0.3, 1),
            (DAY_1, 4, 0.2, 0),
            (DAY_2, 1, 0.7, 0),
            (DAY_2, 2, 0.65, 1),
            (DAY_2, 5, 0.1, 0),
            (DAY_2, 6, 0.05, 0),
        ]
    )


def test_the_fraud_use_case_measures_what_scikit_learn_and_the_handbook_measure():
    scored = small_scored_window()
    as_the_platform_scores = scored.rename(columns={"is_fraud": "label", "score": "prediction"})
    measured = learning.measure(as_the_platform_scores, fraud.plan().metrics)
    assert measured == pytest.approx(
        {
            "roc_auc": roc_auc_score(scored["is_fraud"], scored["score"]),
            "average_precision": average_precision_score(scored["is_fraud"], scored["score"]),
            "card_precision_at_100": card_precision_at_k(scored, k=CARDS_PER_DAY),
        }
    )


@pytest.mark.parametrize("is_fraud", [0, 1], ids=["no fraud", "only fraud"])
def test_a_window_without_both_fraud_and_genuine_payments_cannot_judge_a_model(is_fraud):
    scored = small_scored_window().assign(is_fraud=is_fraud)
    with pytest.raises(ValueError, match="needs both classes"):
        learning.measure(
            scored.rename(columns={"is_fraud": "label", "score": "prediction"}), fraud.plan().metrics
        )


def test_card_precision_as_a_use_case_metric_is_the_same_figure():
    """What keel.UseCase hands a metric (label, prediction, the day and the card as an attribute)."""
    from keel_core import judging
    from platform_assets.defs.fraud.metrics import card_precision_at_100

    rng = np.random.default_rng(3)
    payments = pd.DataFrame(
        {
            "transaction_date": np.repeat(pd.date_range("2026-01-01", periods=3), 400),
            "customer_id": rng.integers(0, 300, 1200),
            "score": rng.random(1200),
            "is_fraud": (rng.random(1200) < 0.05).astype(int),
        }
    )
    scored = payments.rename(columns={"is_fraud": "label", "score": "prediction"})
    metric = judging.metric("metrics:card_precision_at_100", True, card_precision_at_100)
    assert metric.name == "card_precision_at_100"
    assert metric(scored) == card_precision_at_k(payments)
