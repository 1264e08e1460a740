"""``keel.UseCase``: a model's whole lifecycle from one folder's ``defs.yaml``.

A use case is a folder under ``platform_assets/defs/<name>/``: its ``defs.yaml`` declares what the
model is (entity and grain, features, label and its delay, estimator, metrics, gate, windows) and
its ``features.py`` computes the rows from the warehouse. This component turns that into assets
keyed ``<name>/...``, in the asset group ``<name>``:

    <reads> -> features (daily) -> model (train, register) -> evaluation (gate) -> production_model
                                                           \\-> scores (daily, by the production model)

The maths is the platform's pure library (``keel_core.learning``, ``keel_core.judging``); the
lifecycle steps are the ones the reference use case has (the hand-over of exact versions, a refusal
as an expected outcome, idempotent daily tables). No use case is named here.
"""

import pickle
from datetime import date, timedelta
from typing import Any, Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from platform_assets.automation import follows_upstream
from platform_assets.components.scaffold import UseCaseScaffolder
from platform_assets.handover import produced_by, promote_or_keep
from platform_assets.partitions import daily_partitions, one_run_per_backfill, partition_days
from platform_assets.provenance import recorded
from platform_assets.steps import (
    FEATURES,
    GATE,
    PUBLISHING,
    SCORING,
    TRAINING,
    WAREHOUSE_POOL,
    retry_only_transient,
)
from platform_assets.storage import stored_in_warehouse
from resources.lake import Lake
from resources.registry import APPROVED, CANDIDATE, REFUSED, ModelRegistry
from resources.warehouse import Warehouse

BASELINE_FILE = "baseline.pickle"  # a fitted estimator baseline, kept with the version
PIPELINE_TAG = "keel/pipeline"  # on every use case's asset: keel_pipeline runs them (defs/jobs.py)
CHUNK_DAYS = 31  # features are computed and stored a month at a time, whatever the window


class Reads(dg.Model):
    """An asset the features read: if it is daily, for a day D its partitions D - lookback_days .. D."""

    asset: str
    lookback_days: int | None = None  # None: the asset is not partitioned


class EstimatorSpec(dg.Model):
    """Any scikit-learn estimator by import path, with its hyper-parameters."""

    class_path: str
    params: dict[str, Any] = Field(default_factory=dict)


class BaselineSpec(dg.Model):
    """The yardstick: an estimator trained on the same rows, or a feature column that is a prediction."""

    class_path: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    column: str | None = None


class MetricSpec(dg.Model):
    name: str  # a built-in metric (keel_core.judging.BUILT_IN) or package.module:function
    higher_is_better: bool | None = None  # required for a function


class GateSpec(dg.Model):
    limits: dict[str, float] = Field(default_factory=dict)  # a floor or a ceiling per metric
    beat_baseline: list[str] = Field(default_factory=list)
    tolerance: dict[str, float] = Field(default_factory=dict)  # vs the champion, per metric


class Windows(dg.Model):
    train_days: int
    test_days: int = 7
    evaluation_days: int = 7


@dg.scaffold_with(UseCaseScaffolder)
class UseCase(dg.Component, dg.Resolvable, dg.Model):
    """A model's lifecycle from a folder: features, training and registration, the promotion gate,
    promotion and daily batch scores, keyed by the use case's name."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    description: str
    task: Literal["classification", "regression"]
    entity: list[str] = Field(min_length=1)  # the key columns of a row besides its day
    day_column: str
    features: str = "features:features"  # module of the folder : function(connection, first, last)
    labels: str = "features:labels"  # module of the folder : function(connection, first, last)
    feature_names: list[str] = Field(min_length=1)
    feature_set_version: str = "1"
    label_column: str
    label_delay_days: int = Field(ge=0)
    reads: list[Reads] = Field(min_length=1)
    labels_read: list[str] = Field(default_factory=list)  # assets the labels come from
    estimator: EstimatorSpec
    baseline: BaselineSpec
    metrics: list[MetricSpec] = Field(min_length=1)
    gate: GateSpec
    windows: Windows
    seed: int = 42

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        folder = context.path if context.path.is_dir() else context.path.parent
        functions = {}
        for role, reference in (("features", self.features), ("labels", self.labels)):
            module_name, _, function_name = reference.partition(":")
            module = context.load_defs_relative_python_module(folder / f"{module_name}.py")
            functions[role] = getattr(module, function_name)
        return lifecycle(self, functions["features"], functions["labels"])


def _key(name: str, asset: str) -> dg.AssetKey:
    return dg.AssetKey([name, asset])


def lifecycle(spec: UseCase, compute_features, compute_labels) -> dg.Definitions:
    """The assets of ``spec``'s lifecycle, with its features and labels functions."""
    from keel_core import judging, learning

    name = spec.name
    features_key, model_key = _key(name, "features"), _key(name, "model")
    evaluation_key, production_key = _key(name, "evaluation"), _key(name, "production_model")
    scores_key = _key(name, "scores")
    feature_table, score_table = f"ml.{name}_features", f"ml.{name}_scores"
    rows = learning.Rows(tuple(spec.entity), spec.day_column, tuple(spec.feature_names), spec.label_column)
    metrics = {m.name.rpartition(":")[2]: judging.metric(m.name, m.higher_is_better) for m in spec.metrics}
    gate = judging.Gate(dict(spec.gate.limits), tuple(spec.gate.beat_baseline), dict(spec.gate.tolerance))
    baseline = learning.Baseline(spec.baseline.class_path, dict(spec.baseline.params), spec.baseline.column)
    windows = spec.windows
    if min(windows.train_days, windows.test_days, windows.evaluation_days) < 1:
        raise ValueError(f"{name}: every window needs at least one day ({windows})")
    if any(read.lookback_days is not None and read.lookback_days < 0 for read in spec.reads):
        raise ValueError(f"{name}: a lookback cannot be negative ({spec.reads})")
    if unmeasured := sorted(gate.metrics() - set(metrics)):
        raise ValueError(f"{name}: the gate names metrics that are not in metrics: {', '.join(unmeasured)}")
    tags = {PIPELINE_TAG: "true"}

    def registry_of(registry: ModelRegistry) -> ModelRegistry:
        return registry.of(name)

    def labelled_rows(connection, first: date, last: date) -> pd.DataFrame:
        stored = connection.execute(
            f"select * from {feature_table} where {spec.day_column} between ? and ?", [first, last]
        ).df()
        labels = compute_labels(connection, first, last)
        return learning.labelled(rows, stored, labels)

    def last_labelled_day(connection) -> date:
        (last,) = connection.execute(f"select max({spec.day_column}) from {feature_table}").fetchone()
        if last is None:
            raise dg.Failure(
                f"{feature_table} is empty: materialize {features_key.to_user_string()}", allow_retries=False
            )
        return pd.Timestamp(last).date() - timedelta(days=spec.label_delay_days)

    @dg.asset(
        key=features_key,
        group_name=name,
        description=f"{spec.description}: the model's rows, one per {' and '.join(spec.entity)} and day, "
        f"with the features {', '.join(spec.feature_names)}. Table {feature_table}.",
        metadata=stored_in_warehouse(feature_table, spec.day_column),
        partitions_def=daily_partitions,
        backfill_policy=one_run_per_backfill,
        pool=WAREHOUSE_POOL,
        code_version=spec.feature_set_version,
        deps=[
            dg.AssetDep(
                dg.AssetKey.from_user_string(read.asset),
                partition_mapping=None
                if read.lookback_days is None
                else dg.TimeWindowPartitionMapping(
                    start_offset=-read.lookback_days, end_offset=0, allow_nonexistent_upstream_partitions=True
                ),
            )
            for read in spec.reads
        ],
        automation_condition=follows_upstream(),
        kinds={"duckdb", "pandas"},
        tags=tags,
        op_tags=FEATURES.op_tags(f"{name}_features"),
    )
    def features_asset(context: dg.AssetExecutionContext, warehouse: Warehouse):
        first, last = partition_days(context)
        count, preview = 0, None
        for start in pd.date_range(first, last, freq=f"{CHUNK_DAYS}D").date:
            end = min(start + timedelta(days=CHUNK_DAYS - 1), last)
            with warehouse.connect() as connection:
                frame = rows.check(compute_features(connection, start, end), f"{name}'s features")
            frame = frame[[*rows.keys, rows.day, *rows.features]]
            warehouse.replace_days(feature_table, spec.day_column, start, end, frame)
            count += len(frame)
            preview = frame.head(5) if preview is None else preview
        return dg.MaterializeResult(
            metadata={
                **recorded(context),
                "table": feature_table,
                "window_rows": count,
                "feature_set_version": spec.feature_set_version,
                "preview": dg.MetadataValue.md(preview.to_markdown(index=False)),
                **({"dagster/row_count": count} if first == last else {}),
            }
        )

    @dg.asset(
        key=model_key,
        group_name=name,
        description=f"The newest trained model of {name} (the challenger), a version in the registry: "
        f"{spec.estimator.class_path}, trained on {spec.windows.train_days} days and tested on a later "
        f"{spec.windows.test_days}, beside {baseline.describe()}.",
        deps=[features_key, *(dg.AssetKey.from_user_string(a) for a in spec.labels_read)],
        pool=WAREHOUSE_POOL,
        kinds={"scikit-learn", "bentoml"},
        tags=tags,
        op_tags=TRAINING.op_tags(f"{name}_model"),
    )
    def model_asset(context: dg.AssetExecutionContext, warehouse: Warehouse, registry: ModelRegistry):
        from keel_core import provenance
        from keel_core.training import TrainingWindow

        with warehouse.connect() as connection:
            window = TrainingWindow.ending(
                last_labelled_day(connection),
                spec.windows.train_days,
                spec.label_delay_days,
                spec.windows.test_days,
            )
            experiment = learning.run_experiment(
                rows,
                spec.task,
                lambda first, last: labelled_rows(connection, first, last),
                window,
                (spec.estimator.class_path, spec.estimator.params),
                baseline,
                metrics,
            )
        record = {
            "description": spec.description,
            "model": spec.estimator.class_path,
            "baseline": baseline.describe(),
            "training_window": window.as_dict(),
            "label_delay_days": spec.label_delay_days,
            "train": {"rows": experiment.train_rows},
            "test": {"rows": experiment.test_rows},
            "metrics": experiment.metrics,
            "baseline_metrics": experiment.baseline_metrics,
            "features": spec.feature_names,
            "feature_set_version": spec.feature_set_version,
            "hyper_parameters": spec.estimator.params,
            "seed": spec.seed,
            "training_seconds": round(experiment.training_seconds, 3),
            "code_version": provenance.code_version(),
            "lockfile_sha256": provenance.lockfile_sha256(),
            "dbt_manifest_sha256": provenance.dbt_manifest_sha256(),
            "data_sha256": experiment.fingerprints,
            "inputs": ", ".join(f"`{a}`" for a in [features_key.to_user_string(), *spec.labels_read]),
            "dagster_run_id": context.run.run_id,
        }
        models = registry_of(registry)
        tag = models.register(experiment.model, record, run_id=context.run.run_id)
        if experiment.baseline is not None:
            models.attach(tag, BASELINE_FILE, pickle.dumps(experiment.baseline))
        context.log.info(f"registered {tag}: {experiment.metrics}")
        return dg.MaterializeResult(
            metadata={
                **recorded(context),
                "model_tag": tag,
                **window.as_dict(),
                "train_rows": experiment.train_rows,
                "test_rows": experiment.test_rows,
                **experiment.metrics,
                **{f"baseline_{m}": value for m, value in experiment.baseline_metrics.items()},
                "metrics": _metrics_table(
                    {"model": experiment.metrics, "baseline": experiment.baseline_metrics}
                ),
                "hyper_parameters": dg.MetadataValue.json({**spec.estimator.params, "seed": spec.seed}),
                "training_seconds": round(experiment.training_seconds, 3),
                "registry": dg.MetadataValue.path(models.uri),
            }
        )

    @dg.asset(
        key=evaluation_key,
        group_name=name,
        description=f"The challenger (the version {model_key.to_user_string()} produced), the champion and "
        "the baseline scored on the same latest labelled days. Its check is the promotion gate (a WARN "
        "when it refuses).",
        deps=[model_key, features_key, *(dg.AssetKey.from_user_string(a) for a in spec.labels_read)],
        pool=WAREHOUSE_POOL,
        check_specs=[dg.AssetCheckSpec("promotion_gate", asset=evaluation_key)],
        kinds={"scikit-learn"},
        tags=tags,
        op_tags=GATE.op_tags(f"{name}_evaluation"),
        retry_policy=GATE.retry_policy,
    )
    @retry_only_transient
    def evaluation_asset(context: dg.AssetExecutionContext, warehouse: Warehouse, registry: ModelRegistry):
        models = registry_of(registry)
        tag, trained_in = produced_by(context, model_key, "model_tag")
        challenger = models.version(tag)
        if challenger.stage != CANDIDATE:
            raise dg.Failure(
                f"nothing to evaluate: {tag}, trained by run {trained_in[:8]}, is already {challenger.stage}",
                allow_retries=False,
            )
        champion = models.champion()
        with warehouse.connect() as connection:
            last = last_labelled_day(connection)
            first = last - timedelta(days=spec.windows.evaluation_days - 1)
            frame = labelled_rows(connection, first, last)

        def measured(model, column=None) -> dict[str, float]:
            return learning.measure(learning.scored(rows, model, frame, spec.task, column), metrics)

        challenger_metrics = measured(models.load(tag))
        champion_metrics = measured(models.load(champion.tag)) if champion else None
        if baseline.column:
            baseline_metrics = measured(None, baseline.column)
        else:
            baseline_metrics = measured(pickle.loads(models.attachment(tag, BASELINE_FILE)))
        decision = judging.judge(challenger_metrics, gate, metrics, baseline_metrics, champion_metrics)
        models.record(
            tag,
            APPROVED if decision.promote else REFUSED,
            reason=decision.summary,
            run_id=context.run.run_id,
            details={
                "window": {"first": first.isoformat(), "last": last.isoformat()},
                "challenger": challenger_metrics,
                "baseline": baseline_metrics,
                "champion_tag": champion.tag if champion else None,
                "champion": champion_metrics,
                "decision": decision.summary,
                "rules": [rule.__dict__ for rule in decision.rules],
            },
        )
        context.log.info(f"{tag}: {decision.summary}")
        yield dg.MaterializeResult(
            metadata={
                **recorded(context),
                "challenger": tag,
                "challenger_trained_by_run": trained_in,
                "approved": decision.promote,
                "champion": champion.tag if champion else "none yet",
                "evaluation_first_day": first.isoformat(),
                "evaluation_last_day": last.isoformat(),
                "metrics": _metrics_table(
                    {
                        "challenger": challenger_metrics,
                        "baseline": baseline_metrics,
                        "champion": champion_metrics,
                    }
                ),
                "decision": decision.summary,
            }
        )
        yield dg.AssetCheckResult(
            check_name="promotion_gate",
            passed=decision.promote,
            severity=dg.AssetCheckSeverity.WARN,
            description=decision.summary,
            metadata={"challenger": tag},
        )

    @dg.asset(
        key=production_key,
        group_name=name,
        description=f"The version of {name} in production: the challenger the gate approved, promoted in "
        "the registry with its model card; after a refusal, the champion that stays.",
        deps=[evaluation_key],
        kinds={"bentoml"},
        tags=tags,
        op_tags=PUBLISHING.op_tags(f"{name}_production_model"),
        retry_policy=PUBLISHING.retry_policy,
        output_required=False,
    )
    @retry_only_transient
    def production_asset(context: dg.AssetExecutionContext, registry: ModelRegistry):
        models = registry_of(registry)
        yield from promote_or_keep(context, models, evaluation_key, _promotion_metadata)

    @dg.asset(
        key=scores_key,
        group_name=name,
        description=f"The production model's prediction for every row of the day's {name} features, with "
        f"the version that made it. Lake table {name}_scores, warehouse table {score_table}.",
        metadata=stored_in_warehouse(score_table, spec.day_column),
        partitions_def=daily_partitions,
        backfill_policy=one_run_per_backfill,
        pool=WAREHOUSE_POOL,
        deps=[features_key, production_key],
        # Each new day is scored when its features are; a promotion does not rescore the past.
        automation_condition=follows_upstream(ignore=production_key),
        kinds={"scikit-learn", "duckdb", "parquet"},
        tags=tags,
        op_tags=SCORING.op_tags(f"{name}_scores"),
        retry_policy=SCORING.retry_policy,
    )
    @retry_only_transient
    def scores_asset(
        context: dg.AssetExecutionContext, warehouse: Warehouse, lake: Lake, registry: ModelRegistry
    ):
        models = registry_of(registry)
        champion = models.champion()
        if champion is None:
            raise dg.Failure(
                f"no {name} model in production in {models.uri}: "
                f"materialize {production_key.to_user_string()}",
                allow_retries=False,
            )
        model = models.load(champion.tag)
        first, last = partition_days(context)
        with warehouse.connect() as connection:
            frame = connection.execute(
                f"select * from {feature_table} where {spec.day_column} between ? and ? "
                f"order by {spec.day_column}, {', '.join(spec.entity)}",
                [first, last],
            ).df()
        if frame.empty:
            raise dg.Failure(f"{feature_table} has no rows for {first} .. {last}", allow_retries=False)
        scores = frame[[*spec.entity, spec.day_column]].assign(
            prediction=learning.predict(model, frame, spec.task),
            model_version=champion.tag,
            scored_at=pd.Timestamp.now(tz="UTC").tz_localize(None),
        )
        for day, day_rows in scores.groupby(pd.to_datetime(scores[spec.day_column]).dt.date):
            lake.write_partition(f"{name}_scores", day, day_rows.reset_index(drop=True))
        warehouse.replace_days(score_table, spec.day_column, first, last, scores)
        return dg.MaterializeResult(
            metadata={
                **recorded(context),
                "model_version": champion.tag,
                "window_rows": len(scores),
                "mean_prediction": float(scores["prediction"].mean()),
                "warehouse_table": score_table,
                **({"dagster/row_count": len(scores)} if first == last else {}),
            }
        )

    return dg.Definitions(
        assets=[features_asset, model_asset, evaluation_asset, production_asset, scores_asset]
    )


def _metrics_table(models: dict[str, dict[str, float] | None]) -> dg.MetadataValue:
    names = sorted({n for metrics in models.values() if metrics for n in metrics})
    lines = ["| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, metrics in models.items():
        lines.append(
            f"| {label} | " + " | ".join(f"{metrics[n]:.4f}" if metrics else "–" for n in names) + " |"
        )
    return dg.MetadataValue.md("\n".join(lines))


def _promotion_metadata(registry: ModelRegistry, promotion) -> dict:
    return {
        "promoted": True,
        "model_tag": promotion.tag,
        "replaces": promotion.details["replaces"] or "none (first production model)",
        "reason": promotion.reason,
        "model_card": dg.MetadataValue.md(registry.card(promotion.tag)),
    }
