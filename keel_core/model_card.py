"""The model card of a promoted version: what it learned from, how good it is, where it came from.

Pure module: it renders Markdown from the version's recorded metadata (written at training) and
its approval (written by the promotion gate). No Dagster, no BentoML.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

METRICS = ("roc_auc", "average_precision", "card_precision_at_100")


def _metric_row(name: str, metrics: Mapping[str, Any] | None) -> str:
    if not metrics:
        return f"| {name} | – | – | – |"
    return f"| {name} | " + " | ".join(f"{metrics[m]:.4f}" for m in METRICS) + " |"


def render(tag: str, metadata: Mapping[str, Any], approval: Mapping[str, Any], promotion) -> str:
    """Markdown for version ``tag``.

    ``metadata``: the version's training record; ``approval``: the gate's event details (metrics of
    challenger and champion on the evaluation window); ``promotion``: the registry event (who, when,
    why, and in ``details["replaces"]`` the version it replaced).
    """
    window = metadata["training_window"]
    train = metadata["train"]
    test = metadata["test"]
    code = metadata["code_version"]
    evaluation = approval["window"]
    lines = [
        f"# Model card: `{tag}`",
        "",
        f"Card-fraud detector, promoted to production on {promotion.at} by {promotion.by}.",
        f"Reason: {promotion.reason}.",
        f"It replaced: `{promotion.details.get('replaces') or 'nothing (first production model)'}`.",
        "",
        "## What it was trained on",
        "",
        "| period | days | payments | frauds | fraud rate |",
        "|---|---|---|---|---|",
        f"| train | {window['train_start']} .. {window['train_end']} | {train['rows']:,} "
        f"| {train['frauds']:,} "
        f"| {train['frauds'] / train['rows']:.3%} |",
        f"| test | {window['test_start']} .. {window['test_end']} | {test['rows']:,} | {test['frauds']:,} "
        f"| {test['frauds'] / test['rows']:.3%} |",
        "",
        f"A gap of {metadata['label_delay_days']} days (the label delay) separates training and test.",
        f"Model: {metadata['model']} with hyper-parameters `{metadata['hyper_parameters']}`, "
        f"seed {metadata['seed']}.",
        "",
        "## How good it is",
        "",
        f"On the test window ({window['test_start']} .. {window['test_end']}), "
        "against a logistic-regression baseline "
        "trained on the same rows:",
        "",
        "| model | ROC AUC | average precision | card precision@100 |",
        "|---|---|---|---|",
        _metric_row("this model", metadata["metrics"]),
        _metric_row("baseline", metadata["baseline_metrics"]),
        "",
        f"At the promotion gate ({evaluation['first']} .. {evaluation['last']}), "
        "against the champion it replaced:",
        "",
        "| model | ROC AUC | average precision | card precision@100 |",
        "|---|---|---|---|",
        _metric_row("this model", approval["challenger"]),
        _metric_row(f"previous champion `{approval.get('champion_tag') or '–'}`", approval.get("champion")),
        "",
        f"Gate: {approval['decision']}",
        "",
        "## Features",
        "",
        f"Feature set version {metadata['feature_set_version']}: "
        + ", ".join(f"`{f}`" for f in metadata["features"]),
        "",
        "## Lineage",
        "",
        f"- code: git commit `{code['git_commit']}`"
        + (" (with uncommitted changes)" if code["git_dirty"] else ""),
        f"- dependencies: `uv.lock` sha256 `{metadata['lockfile_sha256']}`",
        f"- training run: Dagster run `{metadata['dagster_run_id']}`",
        "- data: `features/transaction_features` and `warehouse/fraud_labels`, "
        f"days {window['train_start']} .. "
        f"{window['test_end']}",
        "",
    ]
    return "\n".join(lines)
