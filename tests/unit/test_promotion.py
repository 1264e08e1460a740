"""The fraud use case's promotion gate, as its folder declares it (floors on ROC AUC and average
precision, tolerances against the champion on average precision and card precision@100), judged by
the platform's gate (keel_core.judging)."""

import dataclasses

import pytest

from keel_core.judging import judge
from tests import fraud

POLICY = fraud.plan().gate  # floors: ROC AUC 0.75, average precision 0.30; tolerances 0.02


def metrics(roc_auc: float = 0.90, average_precision: float = 0.50, card_precision: float = 0.40) -> dict:
    return {
        "roc_auc": roc_auc,
        "average_precision": average_precision,
        "card_precision_at_100": card_precision,
    }


def decide(challenger: dict, champion: dict | None, gate=POLICY):
    return judge(challenger, gate, fraud.plan().metrics, champion=champion)


def failed(decision) -> list[str]:
    return [rule.name for rule in decision.rules if not rule.passed]


def test_the_first_model_is_judged_on_the_floors_only():
    decision = decide(metrics(card_precision=0.0), None, POLICY)
    assert decision.promote
    assert [rule.name for rule in decision.rules] == ["roc_auc_floor", "average_precision_floor"]
    assert decision.summary.startswith("approved: ")


def test_a_challenger_is_also_compared_with_the_champion_when_there_is_one():
    decision = decide(metrics(), metrics(), POLICY)
    assert [rule.name for rule in decision.rules] == [
        "roc_auc_floor",
        "average_precision_floor",
        "average_precision_vs_champion",
        "card_precision_at_100_vs_champion",
    ]


@pytest.mark.parametrize("champion", [None, metrics()], ids=["first model", "with a champion"])
def test_a_challenger_below_the_roc_auc_floor_is_refused_and_the_summary_says_why(champion):
    decision = decide(metrics(roc_auc=0.70), champion, POLICY)
    assert not decision.promote
    assert failed(decision) == ["roc_auc_floor"]
    assert decision.summary == "refused: roc auc 0.7000 vs floor 0.75"


@pytest.mark.parametrize("champion", [None, metrics(average_precision=0.25)], ids=["first", "champion"])
def test_a_challenger_below_the_average_precision_floor_is_refused_and_the_summary_says_why(champion):
    decision = decide(metrics(average_precision=0.25), champion, POLICY)
    assert not decision.promote
    assert failed(decision) == ["average_precision_floor"]
    assert decision.summary == "refused: average precision 0.2500 vs floor 0.3"


def test_a_challenger_below_both_floors_names_both_failures():
    decision = decide(metrics(roc_auc=0.60, average_precision=0.10), None, POLICY)
    assert failed(decision) == ["roc_auc_floor", "average_precision_floor"]
    assert "roc auc 0.6000" in decision.summary
    assert "average precision 0.1000" in decision.summary


def test_a_challenger_exactly_at_the_floors_is_approved():
    assert decide(metrics(roc_auc=0.75, average_precision=0.30), None, POLICY).promote


def test_a_challenger_worse_than_the_champion_beyond_tolerance_on_average_precision_is_refused():
    decision = decide(metrics(average_precision=0.47), metrics(average_precision=0.50), POLICY)
    assert not decision.promote
    assert failed(decision) == ["average_precision_vs_champion"]
    assert decision.summary == ("refused: average precision 0.4700 vs champion 0.5000 (tolerance 0.02)")


def test_a_challenger_worse_than_the_champion_beyond_tolerance_on_card_precision_is_refused():
    decision = decide(metrics(card_precision=0.37), metrics(card_precision=0.40), POLICY)
    assert not decision.promote
    assert failed(decision) == ["card_precision_at_100_vs_champion"]
    assert "card precision at 100 0.3700 vs champion 0.4000" in decision.summary


def test_a_challenger_slightly_worse_than_the_champion_within_tolerance_is_approved():
    champion = metrics(average_precision=0.50, card_precision=0.40)
    decision = decide(metrics(average_precision=0.49, card_precision=0.39), champion, POLICY)
    assert decision.promote
    assert failed(decision) == []


def test_a_challenger_equal_to_the_champion_is_approved():
    assert decide(metrics(), metrics(), POLICY).promote


def test_a_challenger_better_than_the_champion_is_approved_and_the_summary_lists_every_rule():
    decision = decide(metrics(average_precision=0.60, card_precision=0.50), metrics(), POLICY)
    assert decision.promote
    assert decision.summary.startswith("approved: ")
    assert decision.summary.count(";") == len(decision.rules) - 1


def test_a_stricter_policy_refuses_what_the_default_tolerates():
    challenger, champion = metrics(average_precision=0.49), metrics(average_precision=0.50)
    assert decide(challenger, champion, POLICY).promote
    strict = dataclasses.replace(POLICY, tolerance={**POLICY.tolerance, "average_precision": 0.0})
    assert failed(decide(challenger, champion, strict)) == ["average_precision_vs_champion"]


def test_a_better_roc_auc_does_not_make_up_for_a_worse_average_precision():
    challenger = metrics(roc_auc=0.99, average_precision=0.40)
    assert not decide(challenger, metrics(roc_auc=0.80, average_precision=0.50), POLICY).promote
