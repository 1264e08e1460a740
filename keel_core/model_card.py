"""The model card of a promoted version: what it learned from, how good it is, where it came from.

Pure module: it renders Markdown from the version's record (written at training) and
its approval (written by the promotion gate). No Dagster, no BentoML.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keel_core.model_record import ModelRecord, Period


def _metric_names(*records: Mapping[str, Any] | None) -> list[str]:
    """The metrics the records hold, in the order the first one lists them (counts left out)."""
    names: list[str] = []
    for record in records:
        for name, value in (record or {}).items():
            # Metrics are floats; counts recorded beside them (rows, positives) are integers.
            if name not in names and isinstance(value, float):
                names.append(name)
    return names


def _metric_table(rows: list[tuple[str, Mapping[str, Any] | None]]) -> list[str]:
    names = _metric_names(*(metrics for _, metrics in rows))
    lines = [
        "| model | " + " | ".join(METRIC_LABELS.get(n, n.replace("_", " ")) for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for label, metrics in rows:
        values = [f"{metrics[n]:.4f}" if metrics and n in metrics else "–" for n in names]
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    return lines


METRIC_LABELS = {
    "roc_auc": "ROC AUC",
    "average_precision": "average precision",
    "card_precision_at_100": "card precision@100",
    "mae": "MAE",
    "mape": "MAPE",
    "rmse": "RMSE",
    "wape": "WAPE",
}


def _period(name: str, first, last, period: Period) -> str:
    row = f"| {name} | {first} .. {last} | {period.rows:,} "
    if period.positives is not None:  # a classifier's record counts its positive rows
        row += f"| {period.positives:,} | {period.positives / period.rows:.3%} "
    return row + "|"


def render(tag: str, record: ModelRecord, approval: Mapping[str, Any], promotion) -> str:
    """Markdown for version ``tag``.

    ``record``: the version's training record; ``approval``: the gate's event details (metrics of
    challenger and champion on the evaluation window); ``promotion``: the registry event (who, when,
    why, and in ``details["replaces"]`` the version it replaced).
    """
    window = record.training_window
    code = record.code_version
    evaluation = approval["window"]
    counted = record.train.positives is not None
    lines = [
        f"# Model card: `{tag}`",
        "",
        f"{record.description or record.model}, promoted to production on {promotion.at} by {promotion.by}.",
        f"Reason: {promotion.reason}.",
        f"It replaced: `{promotion.details.get('replaces') or 'nothing (first production model)'}`.",
        "",
        "## What it was trained on",
        "",
        "| period | days | rows | positives | positive rate |" if counted else "| period | days | rows |",
        "|---|---|---|---|---|" if counted else "|---|---|---|",
        _period("train", window.train_start, window.train_end, record.train),
        _period("test", window.test_start, window.test_end, record.test),
        "",
        f"A gap of {record.label_delay_days} days (the label delay) separates training and test.",
        f"Model: {record.model} with hyper-parameters `{record.hyper_parameters}`, seed {record.seed}.",
        "",
        "## How good it is",
        "",
        f"On the test window ({window.test_start} .. {window.test_end}), "
        f"against {record.baseline or 'its baseline'} trained on the same rows:",
        "",
        *_metric_table([("this model", record.metrics), ("baseline", record.baseline_metrics)]),
        "",
        f"At the promotion gate ({evaluation['first']} .. {evaluation['last']}), "
        "against the champion it replaced:",
        "",
        *_metric_table(
            [
                ("this model", approval["challenger"]),
                (f"previous champion `{approval.get('champion_tag') or '–'}`", approval.get("champion")),
            ]
        ),
        "",
        f"Gate: {approval['decision']}",
        "",
        "## Features",
        "",
        f"Feature set version {record.feature_set_version}: " + ", ".join(f"`{f}`" for f in record.features),
        "",
        "## Lineage",
        "",
        f"- code: git commit `{code.git_commit}`" + (" (with uncommitted changes)" if code.git_dirty else ""),
        f"- dependencies: `uv.lock` sha256 `{record.lockfile_sha256}`",
        f"- training run: Dagster run `{record.dagster_run_id}`",
        f"- data: {', '.join(f'`{key}`' for key in record.inputs) or 'not recorded'}, "
        f"days {window.train_start} .. {window.test_end}",
        "",
    ]
    return "\n".join(lines)
