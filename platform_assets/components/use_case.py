"""``keel.UseCase``: a model's whole lifecycle from one folder's ``defs.yaml``.

A use case is a folder under ``platform_assets/defs/<name>/``: its ``defs.yaml`` declares what the
model is (entity and grain, features, label and its delay, estimator, metrics, gate, windows) and
its ``features.py`` computes the rows from the warehouse. This component turns that into assets
keyed ``<name>/...``, in the asset group ``<name>``:

    <reads> -> features (daily) -> model (train, register) -> evaluation (gate) -> production_model
    features + production_model -> scores (daily) -> live_performance (daily, a label delay later)
    features + production_model -> drift (daily, against the model's training rows)
    features -> online_features (the day's rows in the online store)    } when the spec
    production_model -> bento (its prediction endpoint, serving/predictor.py) } declares serving

and the job ``<name>_train_and_promote`` with the sensor ``<name>_retraining`` that asks for it
(newly labelled days, a failed drift or live-performance check: ``platform_assets/retraining.py``).

The maths is the platform's pure library (``keel_core.learning``, ``keel_core.judging``); the
lifecycle steps are the ones the reference use case has (the hand-over of exact versions, a refusal
as an expected outcome, idempotent daily tables). No use case is named here.
"""

import io
import pickle
from datetime import date, timedelta
from typing import Any, Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from platform_assets import retraining
from platform_assets.automation import follows_upstream
from platform_assets.bentos import build_and_archive
from platform_assets.components.scaffold import UseCaseScaffolder
from platform_assets.handover import produced_by, promote_or_keep
from platform_assets.partitions import daily_partitions, one_run_per_backfill, partition_days
from platform_assets.provenance import recorded
from platform_assets.steps import (
    FEATURES,
    GATE,
    MONITORING,
    PUBLISHING,
    SCORING,
    TRAINING,
    TRAINING_RUNS,
    WAREHOUSE_POOL,
    retry_only_transient,
)
from platform_assets.storage import stored_in_warehouse
from resources.lake import Lake
from resources.namespace import Namespace
from resources.online_store import OnlineFeatureStore
from resources.registry import APPROVED, CANDIDATE, REFUSED, ModelRegistry
from resources.warehouse import Warehouse

BASELINE_FILE = "baseline.pickle"  # a fitted estimator baseline, kept with the version
TRAINING_REFERENCE = "training_reference.parquet"  # the training rows drift compares days with
DRIFT_CHECK, PERFORMANCE_CHECK = "features_have_not_drifted", "performance_within_limits"
PIPELINE_TAG = "keel/pipeline"  # on every use case's asset: keel_pipeline runs them (defs/jobs.py)
# On the monitoring assets instead: they judge days once a model is in production (`keel demo` runs
# them for the newest days after the pipeline). Their metadata says how many days after the day
# they can run (LABEL_DELAY: a label delay).
MONITORING_TAG, LABEL_DELAY = "keel/monitoring", "keel/label_delay_days"
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


class DriftSpec(dg.Model):
    """What drift compares (default: every feature, as numbers) and when it warns or fails."""

    numerical: list[str] | None = None  # default: the features not declared categorical
    categorical: list[str] = Field(default_factory=list)
    warn_share: float = 0.3
    fail_share: float = 0.5
    fail_features: list[str] = Field(default_factory=list)  # fail whenever one of these drifts
    max_rows: int = 50_000  # a side above this many rows is sampled


class MonitoringSpec(dg.Model):
    drift: DriftSpec = Field(default_factory=DriftSpec)
    # A floor or a ceiling per metric for a labelled day in production (default: the gate's limits).
    limits: dict[str, float] | None = None


class ServingSpec(dg.Model):
    """Online: the day's feature rows published per entity, and an endpoint that answers for one."""

    entity: str  # what a request names, e.g. terminal (its key is the use case's one entity column)
    response: str = "prediction"  # the answer's field name, e.g. forecast
    # Each feature's value for an entity the day's snapshot does not hold (default 0: no history).
    defaults: dict[str, float] = Field(default_factory=dict)


class RetrainingSpec(dg.Model):
    # Newly labelled days that ask for a retraining (default: the environment's policy).
    labelled_days: int | None = None


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
    # The daily assets the labels come from: day D's label is in their partition D + label delay.
    labels_read: list[str] = Field(min_length=1)
    estimator: EstimatorSpec
    baseline: BaselineSpec
    metrics: list[MetricSpec] = Field(min_length=1)
    gate: GateSpec
    windows: Windows
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    serving: ServingSpec | None = None  # None: batch scores only
    retraining: RetrainingSpec = Field(default_factory=RetrainingSpec)
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
    from keel_core import drift, judging, learning
    from keel_core.endpoint import RECORD_KEY, Endpoint

    name = spec.name
    features_key, model_key = _key(name, "features"), _key(name, "model")
    evaluation_key, production_key = _key(name, "evaluation"), _key(name, "production_model")
    scores_key, drift_key = _key(name, "scores"), _key(name, "drift")
    performance_key = _key(name, "live_performance")
    labels_keys = [dg.AssetKey.from_user_string(asset) for asset in spec.labels_read]
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
    drift_spec = spec.monitoring.drift
    categorical = tuple(drift_spec.categorical)
    numerical = tuple(
        drift_spec.numerical
        if drift_spec.numerical is not None
        else [f for f in spec.feature_names if f not in categorical]
    )
    drift_columns = drift.DriftColumns(numerical, categorical, order_by=(*spec.entity, spec.day_column))
    drift_policy = drift.DriftPolicy(
        warn_share=drift_spec.warn_share,
        fail_share=drift_spec.fail_share,
        fail_features=tuple(drift_spec.fail_features),
        max_rows=drift_spec.max_rows,
    )
    compared = {*drift_columns.names, *drift_policy.fail_features}
    if unknown := sorted(compared - set(spec.feature_names)):
        raise ValueError(f"{name}: drift names columns that are not features: {', '.join(unknown)}")
    live_limits = judging.Gate(
        limits=dict(spec.monitoring.limits if spec.monitoring.limits is not None else spec.gate.limits)
    )
    if unmeasured := sorted(live_limits.metrics() - set(metrics)):
        raise ValueError(f"{name}: monitoring limits name unmeasured metrics: {', '.join(unmeasured)}")
    if spec.retraining.labelled_days is not None and spec.retraining.labelled_days < 1:
        raise ValueError(f"{name}: retraining.labelled_days must be at least 1")
    endpoint = None
    if spec.serving is not None:
        if len(spec.entity) != 1:
            raise ValueError(f"{name}: an endpoint answers for one entity key; the rows have {spec.entity}")
        endpoint = Endpoint(
            use_case=name,
            entity=spec.serving.entity,
            key=spec.entity[0],
            features=tuple(spec.feature_names),
            feature_set_version=spec.feature_set_version,
            task=spec.task,
            response=spec.serving.response,
            defaults=dict(spec.serving.defaults),
        )
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
            **({RECORD_KEY: endpoint.to_record()} if endpoint else {}),
        }
        models = registry_of(registry)
        tag = models.register(experiment.model, record, run_id=context.run.run_id)
        if experiment.baseline is not None:
            models.attach(tag, BASELINE_FILE, pickle.dumps(experiment.baseline))
        reference = drift.sample(experiment.train, drift_policy.max_rows, spec.seed, drift_columns.order_by)
        buffer = io.BytesIO()
        reference[[*rows.keys, rows.day, *drift_columns.names]].to_parquet(buffer, index=False)
        models.attach(tag, TRAINING_REFERENCE, buffer.getvalue())
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
        champion = _champion(models, production_key)
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

    @dg.asset(
        key=drift_key,
        group_name=name,
        description=f"How far the day's {name} rows are from the rows the production model was trained on: "
        "a drift score per feature and an Evidently HTML report in the lake. Its check fails when the "
        "share of drifted features (or one of the features that always fail) crosses the spec's line.",
        partitions_def=daily_partitions,
        deps=[features_key, production_key],
        pool=WAREHOUSE_POOL,
        check_specs=[dg.AssetCheckSpec(DRIFT_CHECK, asset=drift_key, partitions_def=daily_partitions)],
        # A new champion is compared from its promotion on; the days before keep their verdicts.
        automation_condition=follows_upstream(ignore=production_key),
        kinds={"evidently", "html"},
        tags={MONITORING_TAG: "true"},
        metadata={LABEL_DELAY: 0},
        op_tags=MONITORING.op_tags(f"{name}_drift"),
        retry_policy=MONITORING.retry_policy,
    )
    @retry_only_transient
    def drift_asset(
        context: dg.AssetExecutionContext, warehouse: Warehouse, lake: Lake, registry: ModelRegistry
    ):
        day = date.fromisoformat(context.partition_key)
        models = registry_of(registry)
        champion = _champion(models, production_key)
        reference = pd.read_parquet(io.BytesIO(models.attachment(champion.tag, TRAINING_REFERENCE)))
        with warehouse.connect() as connection:
            current = connection.execute(
                f"select * from {feature_table} where {spec.day_column} = ?", [day]
            ).df()
        if current.empty:
            raise dg.Failure(f"{feature_table} has no rows for {day}", allow_retries=False)
        result = drift.measure(current, reference, drift_policy, drift_columns)
        report = f"monitoring/{name}_drift_reports/date={day.isoformat()}/drift.html"
        report_uri = lake.write_file(report, result.html.encode())
        level = result.level(drift_policy)
        context.log.info(f"{day}: {len(result.drifted)} of {len(result.features)} features drifted ({level})")
        yield dg.MaterializeResult(
            metadata={
                **recorded(context),
                "drift_share": result.share,
                "drifted_features": dg.MetadataValue.json(result.drifted),
                "features": dg.MetadataValue.md(result.table().to_markdown(index=False, floatfmt=".4f")),
                "report": dg.MetadataValue.url(lake.public_url(report)),
                "report_path": dg.MetadataValue.path(report_uri),
                "model_version": champion.tag,
                "current_rows": result.current_rows,
                "reference_rows": result.reference_rows,
                "sampled": result.sampled,
                "dagster/row_count": result.current_total,
            }
        )
        fail_features = f" or when any of {', '.join(drift_policy.fail_features)} drifts" * bool(
            drift_policy.fail_features
        )
        yield dg.AssetCheckResult(
            check_name=DRIFT_CHECK,
            passed=level == "ok",
            severity=dg.AssetCheckSeverity.WARN if level == "warn" else dg.AssetCheckSeverity.ERROR,
            description=f"{result.share:.0%} of features drifted (warn at {drift_policy.warn_share:.0%}, "
            f"fail at {drift_policy.fail_share:.0%}{fail_features})",
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
        automation_condition=follows_upstream(after_inputs_are_built=True),
        kinds={"scikit-learn", "duckdb"},
        tags={MONITORING_TAG: "true"},
        metadata={LABEL_DELAY: spec.label_delay_days},
        op_tags=MONITORING.op_tags(f"{name}_live_performance"),
        retry_policy=MONITORING.retry_policy,
    )
    @retry_only_transient
    def performance_asset(context: dg.AssetExecutionContext, warehouse: Warehouse):
        day = date.fromisoformat(context.partition_key)
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
        judged = scores.merge(labels[[*on, spec.label_column]], on=on, how="inner", validate="one_to_one")
        if judged.empty:
            raise dg.Failure(
                f"none of the {len(scores):,} scores of {day} has a {spec.label_column} yet: it is known "
                f"{spec.label_delay_days} days later, from {', '.join(spec.labels_read)}",
                allow_retries=False,
            )
        scored = judged[on].assign(
            **{learning.LABEL: judged[spec.label_column], learning.PREDICTION: judged["prediction"]}
        )
        measured = learning.measure(scored, metrics)
        verdict = judging.judge(measured, live_limits, metrics)
        yield dg.MaterializeResult(
            metadata={
                **recorded(context),
                **measured,
                "scored_rows": len(scores),
                "labelled_rows": len(judged),
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

    serving_assets = [] if endpoint is None else _serving(spec, endpoint, features_key, production_key, tags)
    train_and_promote = dg.define_asset_job(
        f"{name}_train_and_promote",
        selection=[model_key, evaluation_key, production_key, *(a.key for a in serving_assets[1:])],
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
    return dg.Definitions(
        assets=[
            features_asset,
            model_asset,
            evaluation_asset,
            production_asset,
            scores_asset,
            drift_asset,
            performance_asset,
            *serving_assets,
        ],
        jobs=[train_and_promote],
        sensors=[sensor],
    )


def _serving(spec: UseCase, endpoint, features_key, production_key, tags) -> list[dg.AssetsDefinition]:
    """The online features and the Bento of a use case that serves: [online_features, bento]."""
    from keel_core import bentos

    name, feature_table = spec.name, f"ml.{spec.name}_features"
    columns = [endpoint.key, *endpoint.features]

    @dg.asset(
        key=_key(name, "online_features"),
        group_name=name,
        description=f"The {name} features of every {endpoint.entity} as of the close of the day, published "
        f"to the online store (view {name}) for its endpoint to use all the next day. The store only moves "
        "forward: an older day than it holds is not published (and says so); for a range, the last day is.",
        partitions_def=daily_partitions,
        backfill_policy=one_run_per_backfill,
        pool=WAREHOUSE_POOL,
        code_version=spec.feature_set_version,
        deps=[features_key],
        automation_condition=follows_upstream(),
        kinds={"duckdb", "redis", "sqlite"},
        tags=tags,
        op_tags=PUBLISHING.op_tags(f"{name}_online_features"),
        retry_policy=PUBLISHING.retry_policy,
    )
    @retry_only_transient
    def online_asset(
        context: dg.AssetExecutionContext, warehouse: Warehouse, online_store: OnlineFeatureStore
    ):
        _, closed_day = partition_days(context)
        with warehouse.connect() as connection:
            frame = connection.execute(
                f"select {', '.join(columns)} from {feature_table} where {spec.day_column} = ?", [closed_day]
            ).df()
        if frame.empty:
            raise dg.Failure(f"{feature_table} has no rows for {closed_day}", allow_retries=False)
        if nulls := [column for column in columns if frame[column].isna().any()]:
            # The store reads a missing value as "unknown entity": a feature served must have a value.
            raise dg.Failure(
                f"{feature_table} has nulls on {closed_day} in {nulls}: nothing was published",
                allow_retries=False,
            )
        store = online_store.open(endpoint.view())
        try:
            publication = store.publish(closed_day, {endpoint.entity: frame.astype({endpoint.key: "int64"})})
        finally:
            store.close()
        if not publication.published:
            context.log.warning(
                f"not published: the store holds {publication.current.closed_day}, newer than {closed_day}"
            )
        return dg.MaterializeResult(
            metadata={
                **recorded(context),
                "closed_day": closed_day.isoformat(),
                "serves_requests_of": (closed_day + timedelta(days=1)).isoformat(),
                "published": publication.published,
                "store": store.uri,
                "store_holds": publication.current.closed_day.isoformat(),
                "snapshot_version": publication.current.version,
                "entities": len(frame),
                "feature_set_version": spec.feature_set_version,
            }
        )

    @dg.asset(
        key=_key(name, "bento"),
        group_name=name,
        description=f"{name}'s prediction endpoint (serving/predictor.py) with the model in production: "
        f"a Bento {name}_<namespace>:<model version>-<code digest>, and its archive in the lake. POST "
        f'/predict with {{"{endpoint.key}": ...}} answers {endpoint.response}.',
        deps=[production_key],
        # Also after a promotion outside a run (`keel models promote`), when the daemon runs.
        automation_condition=dg.AutomationCondition.eager(),
        kinds={"bentoml"},
        tags=tags,
        op_tags=PUBLISHING.op_tags(f"{name}_bento"),
        retry_policy=PUBLISHING.retry_policy,
    )
    @retry_only_transient
    def bento_asset(
        context: dg.AssetExecutionContext, registry: ModelRegistry, lake: Lake, namespace: Namespace
    ):
        models = registry.of(name)
        champion = _champion(models, production_key)
        bento = bentos.bento_name(namespace.name, name)
        return build_and_archive(context, models, lake, champion, bento, bentos.PREDICTOR_BENTOFILE)

    return [online_asset, bento_asset]


def _champion(models: ModelRegistry, production_key: dg.AssetKey):
    champion = models.champion()
    if champion is None:
        raise dg.Failure(
            f"no model in production in {models.uri}: materialize {production_key.to_user_string()}",
            allow_retries=False,
        )
    return champion


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
