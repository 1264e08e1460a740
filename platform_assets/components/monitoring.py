"""A use case's monitoring: drift (daily, against the production model's training rows), live
performance (daily, a label delay later), and the retraining sensor with the job it asks for."""

import dataclasses
import io
from datetime import date

import dagster as dg
import pandas as pd

from platform_assets import retraining
from platform_assets.automation import follows_upstream
from platform_assets.components.plan import (
    DRIFT_CHECK,
    LABEL_DELAY,
    MONITORING_TAG,
    PERFORMANCE_CHECK,
    TRAINING_REFERENCE,
    Plan,
    key,
)
from platform_assets.partitions import daily_partitions
from platform_assets.provenance import recorded
from platform_assets.steps import TRAINING_RUNS, WAREHOUSE_POOL, retry_only_transient
from resources.lake import Lake, LakeError
from resources.registry import ModelRegistry
from resources.warehouse import Warehouse


def definitions(plan: Plan, serving_keys: list[dg.AssetKey]) -> dg.Definitions:
    """Drift and live performance, and the retraining job (its steps, and ``serving_keys``) and sensor."""
    from keel_core import drift, judging, learning

    # The plan's values under the names the asset functions below use.
    spec = plan.spec
    name = plan.name
    compute_labels = plan.compute_labels
    features_key = plan.features_key
    model_key = plan.model_key
    evaluation_key = plan.evaluation_key
    production_key = plan.production_key
    scores_key = plan.scores_key
    drift_key = plan.drift_key
    performance_key = plan.performance_key
    labels_keys = plan.labels_keys
    score_table = plan.score_table
    metrics = plan.metrics
    drift_columns = plan.drift_columns
    drift_policy = plan.drift_policy
    live_limits = plan.live_limits
    registry_of = plan.registry_of

    @dg.asset(
        key=drift_key,
        group_name=name,
        description=f"How far the day's {name} rows (as served, from the prediction log, when it holds the "
        "compared features; otherwise the day's feature rows) are from the rows the production model was "
        "trained on: a drift score per feature and an Evidently HTML report in the lake. Its check fails "
        "when the share of drifted features (or one of the features that always fail) crosses the line.",
        partitions_def=daily_partitions,
        deps=[features_key, production_key, *([key(name, "prediction_log")] if plan.serving else [])],
        pool=WAREHOUSE_POOL,
        check_specs=[dg.AssetCheckSpec(DRIFT_CHECK, asset=drift_key, partitions_def=daily_partitions)],
        # A new champion is compared from its promotion on; the days before keep their verdicts.
        automation_condition=follows_upstream(ignore=production_key),
        kinds={"evidently", "html"},
        tags={MONITORING_TAG: "true"},
        metadata={LABEL_DELAY: 0},
        op_tags=plan.steps["monitoring"].op_tags(f"{name}_drift"),
        retry_policy=plan.steps["monitoring"].retry_policy,
    )
    @retry_only_transient
    def drift_asset(
        context: dg.AssetExecutionContext,
        config: DriftConfig,
        warehouse: Warehouse,
        lake: Lake,
        registry: ModelRegistry,
    ):
        day = date.fromisoformat(context.partition_key)
        policy = config.over(drift_policy, set(spec.feature_names))
        models = registry_of(registry)
        champion = plan.champion(models)
        reference = pd.read_parquet(io.BytesIO(models.attachment(champion.tag, TRAINING_REFERENCE)))
        current, source = _served_or_built(plan, day, lake, warehouse)
        result = drift.measure(current, reference, policy, drift_columns)
        report = f"monitoring/{name}_drift_reports/date={day.isoformat()}/drift.html"
        report_uri = lake.write_file(report, result.html.encode())
        level = result.level(policy)
        context.log.info(f"{day}: {len(result.drifted)} of {len(result.features)} features drifted ({level})")
        yield dg.MaterializeResult(
            metadata={
                **recorded(context),
                "drift_share": result.share,
                "drifted_features": dg.MetadataValue.json(result.drifted),
                # One number per feature, so the UI plots each one's drift day after day.
                **{f"drift_score/{f.feature}": f.score for f in result.features},
                "features": dg.MetadataValue.md(result.table().to_markdown(index=False, floatfmt=".4f")),
                "report": dg.MetadataValue.url(lake.public_url(report)),
                "report_path": dg.MetadataValue.path(report_uri),
                "model_version": champion.tag,
                "current": source,
                "current_rows": result.current_rows,
                "reference_rows": result.reference_rows,
                "sampled": result.sampled,
                "dagster/row_count": result.current_total,
            }
        )
        fail_features = f" or when any of {', '.join(policy.fail_features)} drifts" * bool(
            policy.fail_features
        )
        yield dg.AssetCheckResult(
            check_name=DRIFT_CHECK,
            passed=level == "ok",
            severity=dg.AssetCheckSeverity.WARN if level == "warn" else dg.AssetCheckSeverity.ERROR,
            description=f"{result.share:.0%} of features drifted (warn at {policy.warn_share:.0%}, "
            f"fail at {policy.fail_share:.0%}{fail_features})",
            metadata={"drift_share": result.share, "drifted_features": dg.MetadataValue.json(result.drifted)},
        )

    # The label of day D is in the label assets' partition D + the label delay.
    label_day = dg.TimeWindowPartitionMapping(
        start_offset=spec.label_delay_days,
        end_offset=spec.label_delay_days,
        allow_nonexistent_upstream_partitions=True,
    )

    @dg.asset(
        key=performance_key,
        group_name=name,
        description=f"How the production model's scores of a day did once the day's {spec.label_column} is "
        f"known ({spec.label_delay_days} days later): {', '.join(metrics)}. Its check fails outside the "
        "monitoring limits.",
        partitions_def=daily_partitions,
        deps=[scores_key, *(dg.AssetDep(key, partition_mapping=label_day) for key in labels_keys)],
        pool=WAREHOUSE_POOL,
        check_specs=[
            dg.AssetCheckSpec(PERFORMANCE_CHECK, asset=performance_key, partitions_def=daily_partitions)
        ],
        # Judged when the day's labels arrive: a day scored again (a re-delivery) before its labels
        # exist is not asked for (their partition does not exist yet, so nothing would be missing).
        automation_condition=follows_upstream(ignore=scores_key, after_inputs_are_built=True),
        kinds={"scikit-learn", "duckdb"},
        tags={MONITORING_TAG: "true"},
        metadata={LABEL_DELAY: spec.label_delay_days},
        op_tags=plan.steps["monitoring"].op_tags(f"{name}_live_performance"),
        retry_policy=plan.steps["monitoring"].retry_policy,
    )
    @retry_only_transient
    def performance_asset(context: dg.AssetExecutionContext, config: LimitsConfig, warehouse: Warehouse):
        day = date.fromisoformat(context.partition_key)
        if unmeasured := sorted(set(config.limits) - set(metrics)):
            raise dg.Failure(
                f"the run config's limits name metrics {name} does not measure: {', '.join(unmeasured)} "
                f"(it measures {', '.join(metrics)})",
                allow_retries=False,
            )
        limits = judging.Gate(limits={**live_limits.limits, **config.limits})
        with warehouse.connect() as connection:
            scores = connection.execute(
                f"select * from {score_table} where {spec.day_column} = ?", [day]
            ).df()
            labels = compute_labels(connection, day, day)
            if scores.empty:
                raise dg.Failure(
                    f"no scores for {day} in {score_table}: materialize {scores_key.to_user_string()}",
                    allow_retries=False,
                )
            on = [*spec.entity, spec.day_column]
            labelled = scores.merge(
                labels[[*on, spec.label_column]], on=on, how="inner", validate="one_to_one"
            )
            judged = plan.judged(connection, labelled, day, day)
        if labelled.empty:
            raise dg.Failure(
                f"none of the {len(scores):,} scores of {day} has a {spec.label_column} yet: it is known "
                f"{spec.label_delay_days} days later, from {', '.join(spec.labels_read)}",
                allow_retries=False,
            )
        scored = judged[[*on, *spec.attributes]].assign(
            **{learning.LABEL: judged[spec.label_column], learning.PREDICTION: judged[plan.prediction]}
        )
        measured = learning.measure(scored, metrics)
        verdict = judging.judge(measured, limits, metrics)
        yield dg.MaterializeResult(
            metadata={
                **recorded(context),
                **measured,
                "scored_rows": len(scores),
                "labelled_rows": len(labelled),
                **(
                    {"excluded_known_positive_rows": len(labelled) - len(judged)}
                    if spec.judging.exclude_known_positives
                    else {}
                ),
                "model_version": ", ".join(sorted(scores["model_version"].unique())),
                "dagster/row_count": len(scores),
            }
        )
        yield dg.AssetCheckResult(
            check_name=PERFORMANCE_CHECK,
            passed=verdict.promote,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                ("within the limits: " if verdict.promote else "outside the limits: ")
                + "; ".join(rule.detail for rule in verdict.rules)
                if verdict.rules
                else "no limits declared: " + ", ".join(f"{m} {v:.4f}" for m, v in measured.items())
            ),
            metadata=measured,
        )

    train_and_promote = dg.define_asset_job(
        f"{name}_train_and_promote",
        selection=[model_key, evaluation_key, production_key, *serving_keys],
        tags=TRAINING_RUNS,
        description=f"Train a {name} challenger on the features already in the warehouse, judge it against "
        "the champion and promote it if the gate approves.",
    )
    sensor = retraining.retraining_sensor(
        f"{name}_retraining",
        train_and_promote,
        retraining.Watched(
            trained=model_key,
            labels=labels_keys[0],
            drift_check=dg.AssetCheckKey(drift_key, DRIFT_CHECK),
            performance_check=dg.AssetCheckKey(performance_key, PERFORMANCE_CHECK),
            training_inputs=frozenset({features_key, *labels_keys}),
        ),
        labelled_days=spec.retraining.labelled_days,
    )
    return dg.Definitions(assets=[drift_asset, performance_asset], jobs=[train_and_promote], sensors=[sensor])


def _served_or_built(plan: Plan, day: date, lake: Lake, warehouse: Warehouse) -> tuple[pd.DataFrame, str]:
    """The day's rows as the service saw them (its prediction log), when it logs the compared features
    and served at least half as many rows as the pipeline built (the day's traffic, not a few test
    calls); otherwise as the pipeline built them (the feature table)."""
    with warehouse.connect() as connection:
        plan.require_days(connection, day, day)
        built = connection.execute(
            f"select * from {plan.feature_table} where {plan.spec.day_column} = ?", [day]
        ).df()
    source = f"feature table {plan.feature_table}"
    if plan.serving is None:
        return built, source
    table = plan.serving.log_table
    try:
        served = lake.read_partition(table, day)
    except LakeError:
        return built, source + f" (nothing was served on {day})"
    if not set(plan.drift_columns.names) <= set(served.columns):
        return built, source + " (the prediction log does not hold the compared features)"
    if len(served) < len(built) / 2:
        return built, source + f" (the prediction log holds {len(served):,} rows, the day {len(built):,})"
    return served, f"prediction log ({lake.location(table, day)})"


class DriftConfig(dg.Config):
    """Drift's thresholds from the launchpad, over the spec's ``monitoring.drift``."""

    warn_share: float | None = None  # default: the spec's
    fail_share: float | None = None
    max_rows: int | None = None
    fail_features: list[str] | None = None

    def over(self, spec_policy, features: set[str]):
        """The spec's policy with this config's values; a bad value fails the run, naming it."""
        if unknown := sorted(set(self.fail_features or ()) - features):
            unknown_features = ", ".join(unknown)
            raise dg.Failure(f"fail_features: not features: {unknown_features}", allow_retries=False)
        changes = self.model_dump(exclude_none=True)
        if "fail_features" in changes:
            changes["fail_features"] = tuple(changes["fail_features"])
        if changes.get("max_rows", 1) < 1:
            raise dg.Failure(f"max_rows is {changes['max_rows']}: at least 1", allow_retries=False)
        try:
            policy = dataclasses.replace(spec_policy, **changes)
        except ValueError as error:
            raise dg.Failure(f"drift thresholds: {error}", allow_retries=False) from None
        return policy


class LimitsConfig(dg.Config):
    """Live performance's limits from the launchpad: a floor or a ceiling per metric, over the spec's."""

    limits: dict[str, float] = {}
