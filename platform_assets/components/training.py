"""A use case's learning assets: features (daily), model (train, register), evaluation (the gate),
production_model (promotion) and scores (daily, by the production model)."""

import base64
import io
import pickle
import time
from datetime import date, timedelta
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from platform_assets.automation import follows_upstream
from platform_assets.components.plan import (
    BASELINE_FILE,
    FEATURE_SCHEMA_CHECK,
    TRAINING_REFERENCE,
    Plan,
    read_deps,
)
from platform_assets.handover import produced_by, promote_or_keep
from platform_assets.partitions import (
    daily_partitions,
    one_run_per_backfill,
    partition_days,
    run_last_day,
)
from platform_assets.provenance import recorded
from platform_assets.steps import WAREHOUSE_POOL, retry_only_transient
from platform_assets.storage import stored_in_warehouse
from resources.experiments import ExperimentTracking
from resources.lake import Lake
from resources.registry import APPROVED, CANDIDATE, REFUSED, ModelRegistry, RegistryError
from resources.warehouse import Warehouse

CHUNK_DAYS = 31  # features are computed and stored a month at a time, whatever the window


def assets(plan: Plan) -> list[dg.AssetsDefinition]:
    from keel_core import drift, judging, learning
    from keel_core.model_record import ModelRecord

    # The plan's values under the names the asset functions below use.
    spec = plan.spec
    name = plan.name
    compute_features = plan.compute_features
    features_key = plan.features_key
    model_key = plan.model_key
    evaluation_key = plan.evaluation_key
    production_key = plan.production_key
    scores_key = plan.scores_key
    feature_table = plan.feature_table
    score_table = plan.score_table
    rows = plan.rows
    metrics = plan.metrics
    gate = plan.gate
    baseline = plan.baseline
    drift_columns = plan.drift_columns
    drift_policy = plan.drift_policy
    endpoint = plan.endpoint
    tags = plan.tags
    registry_of = plan.registry_of
    # Rows left out of judging once their attribute is known positive (the spec's judging): counted.
    known_positives = spec.judging.exclude_known_positives
    labelled_rows = plan.labelled_rows
    last_labelled_day = plan.last_labelled_day

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
        deps=read_deps(spec.reads),
        check_specs=[
            dg.AssetCheckSpec(
                FEATURE_SCHEMA_CHECK,
                asset=features_key,
                blocking=True,
                description="The stored rows of the run's days match the folder's schema "
                f"({spec.feature_schema}): nothing downstream uses rows that do not.",
            )
        ]
        if plan.feature_schema
        else None,
        automation_condition=follows_upstream(),
        freshness_policy=plan.freshness,
        kinds={"duckdb", "pandas"},
        tags=tags,
        op_tags=plan.steps["features"].op_tags(f"{name}_features"),
        retry_policy=plan.steps["features"].retry_policy,  # none unless the spec's compute asks
    )
    @retry_only_transient
    def features_asset(context: dg.AssetExecutionContext, warehouse: Warehouse):
        first, last = partition_days(context)
        count, preview, failures = 0, None, []
        for start in pd.date_range(first, last, freq=f"{CHUNK_DAYS}D").date:
            end = min(start + timedelta(days=CHUNK_DAYS - 1), last)
            with warehouse.connect() as connection:
                frame = rows.check(compute_features(connection, start, end), f"{name}'s features")
            frame = frame[rows.stored]
            warehouse.replace_days(feature_table, spec.day_column, start, end, frame)
            if plan.feature_schema is not None:
                failures.extend(_schema_failures(plan, warehouse, start, end))
            count += len(frame)
            preview = frame.head(5) if preview is None else preview
        checked = []
        if plan.feature_schema is not None:
            checked = [
                dg.AssetCheckResult(
                    check_name=FEATURE_SCHEMA_CHECK,
                    passed=not failures,
                    metadata={
                        "rows_checked": count,
                        "failures": len(failures),
                        **(
                            {"failure_cases": dg.MetadataValue.md(pd.DataFrame(failures[:20]).to_markdown())}
                            if failures
                            else {}
                        ),
                    },
                )
            ]
        return dg.MaterializeResult(
            check_results=checked,
            metadata={
                **recorded(context),
                "table": feature_table,
                "window_rows": count,
                "feature_set_version": spec.feature_set_version,
                "preview": dg.MetadataValue.md(preview.to_markdown(index=False)),
                **({"dagster/row_count": count} if first == last else {}),
            },
        )

    @dg.asset(
        key=model_key,
        group_name=name,
        description=f"The newest trained model of {name} (the challenger), a version in the registry: "
        f"{spec.estimator.class_path}{_OR_SELECTED if spec.selection else ''}, trained on "
        f"{spec.windows.train_days} days and tested on a later {spec.windows.test_days}, beside "
        f"{baseline.describe()}.",
        deps=[features_key, *(dg.AssetKey.from_user_string(a) for a in spec.labels_read)],
        pool=WAREHOUSE_POOL,
        kinds={"scikit-learn", "bentoml"},
        tags=tags,
        op_tags=plan.steps["training"].op_tags(f"{name}_model"),
        retry_policy=plan.steps["training"].retry_policy,  # none unless the spec's compute asks
    )
    @retry_only_transient
    def model_asset(
        context: dg.AssetExecutionContext,
        config: TrainingConfig,
        warehouse: Warehouse,
        registry: ModelRegistry,
        experiments: ExperimentTracking,
    ):
        from keel_core import provenance
        from keel_core.windows import TrainingWindow

        hyper_parameters = {**spec.estimator.params, **config.hyper_parameters}
        seed = spec.seed if config.seed is None else config.seed
        try:
            if config.seed is not None:  # the launchpad's seed is the estimator's random_state
                if "random_state" not in judging.estimator(plan.estimator, hyper_parameters).get_params():
                    raise ValueError(f"{spec.estimator.class_path} takes no random_state to seed")
                hyper_parameters["random_state"] = config.seed
            # Misspelt parameters fail by name before a row is read, the baseline's too.
            judging.estimator(plan.estimator, hyper_parameters)
            if baseline.class_path is not None:
                judging.estimator(baseline.class_path, baseline.params)
        except ValueError as error:
            raise dg.Failure(f"hyper_parameters: {error}", allow_retries=False) from None
        run_tags = {
            "dagster.run_id": context.run.run_id,
            "dagster.asset_key": model_key.to_user_string(),
            "keel.model_name": plan.model_name,
        }
        run_name = f"{plan.model_name} (run {context.run.run_id[:8]})"
        with experiments.training(name, run_name, run_tags) as tracked:
            # Every row at one snapshot of a DuckLake, recorded: what other runs commit meanwhile is
            # not half seen, and `keel reproduce` reads the warehouse as it was (None: a DuckDB file).
            snapshot = warehouse.snapshot()
            with warehouse.connect(snapshot=snapshot) as connection:
                last = last_labelled_day(connection, run_last_day(context))
                if config.last_labelled_day is not None:
                    last = min(last, date.fromisoformat(config.last_labelled_day))
                window = TrainingWindow.ending(
                    last,
                    spec.windows.train_days if config.train_days is None else config.train_days,
                    spec.label_delay_days,
                    spec.windows.test_days if config.test_days is None else config.test_days,
                )
                # Rows of the calendar's first days see windows still filling, unlike every later
                # row the model will score: said in the metadata, and warned about.
                history = (window.train_start - daily_partitions.start.date()).days
                if history < plan.history_days:
                    context.log.warning(
                        f"training starts {window.train_start}, {history} days into the calendar: its "
                        f"features read {plan.history_days} days back, so its first rows see windows "
                        "still filling (a calendar that starts earlier gives full windows)"
                    )
                trials = config.trials or (spec.selection.trials if spec.selection else 1)
                selecting = spec.selection is not None and not config.hyper_parameters and trials > 1
                experiment, unlabelled = plan.experiment(
                    connection,
                    window,
                    hyper_parameters,
                    on_trial=TrialLog(context, tracked, spec.selection.metric) if selecting else None,
                    trials=trials,
                    history_from=daily_partitions.start.date(),
                )
            hyper_parameters = experiment.model_spec[1]
            record = ModelRecord(
                description=spec.description,
                model=plan.class_path_of(experiment),
                baseline=baseline.describe(),
                training_window=window,
                label_delay_days=spec.label_delay_days,
                train=_period(experiment.train, spec),
                test=_period(experiment.test, spec),
                unlabelled_rows=unlabelled,
                metrics=experiment.metrics,
                baseline_metrics=experiment.baseline_metrics,
                features=spec.feature_names,
                feature_set_version=spec.feature_set_version,
                hyper_parameters=hyper_parameters,
                seed=seed,
                training_seconds=round(experiment.training_seconds, 3),
                code_version=provenance.code_version(),
                lockfile_sha256=provenance.lockfile_sha256(),
                dbt_manifest_sha256=provenance.dbt_manifest_sha256(),
                data_sha256=experiment.fingerprints,
                warehouse_snapshot=snapshot,
                inputs=(features_key.to_user_string(), *spec.labels_read),
                dagster_run_id=context.run.run_id,
                endpoint=endpoint,
            )
            models = registry_of(registry)
            tag = models.register(experiment.model, record, run_id=context.run.run_id)
            if experiment.baseline is not None:
                models.attach(tag, BASELINE_FILE, pickle.dumps(experiment.baseline))
            reference = drift.sample(experiment.train, drift_policy.max_rows, seed, drift_columns.order_by)
            buffer = io.BytesIO()
            reference[[*rows.keys, rows.day, *drift_columns.names]].to_parquet(buffer, index=False)
            models.attach(tag, TRAINING_REFERENCE, buffer.getvalue())
            context.log.info(f"registered {tag}: {experiment.metrics}")
            selection = experiment.selection
            tracked.record(
                metrics={
                    **experiment.metrics,
                    **{f"baseline_{m}": value for m, value in experiment.baseline_metrics.items()},
                    **({f"validation_{selection.metric}": selection.best.score} if selection else {}),
                    "training_seconds": experiment.training_seconds,
                },
                params={
                    "estimator": record.model,
                    **hyper_parameters,
                    **{f"window.{k}": v for k, v in window.as_dict().items()},
                    "feature_set_version": spec.feature_set_version,
                    "train_rows": experiment.train_rows,
                    "test_rows": experiment.test_rows,
                },
                tags={"keel.model_tag": tag},
            )
            return dg.MaterializeResult(
                metadata={
                    **recorded(context),
                    "model_tag": tag,
                    **window.as_dict(),
                    "train_rows": experiment.train_rows,
                    "test_rows": experiment.test_rows,
                    "history_days_before_training": history,
                    **({"warehouse_snapshot": snapshot} if snapshot is not None else {}),
                    "full_windows": history >= plan.history_days,
                    **(
                        {"excluded_known_positive_test_rows": experiment.test_excluded}
                        if known_positives
                        else {}
                    ),
                    "unlabelled_rows": record.unlabelled_rows,
                    **experiment.metrics,
                    **{f"baseline_{m}": value for m, value in experiment.baseline_metrics.items()},
                    "metrics": _metrics_table(
                        {"model": experiment.metrics, "baseline": experiment.baseline_metrics}
                    ),
                    "features": dg.MetadataValue.json(
                        {"version": spec.feature_set_version, "names": spec.feature_names}
                    ),
                    "estimator": record.model,
                    "hyper_parameters": dg.MetadataValue.json({**hyper_parameters, "seed": seed}),
                    **(_selection_metadata(experiment.selection) if experiment.selection else {}),
                    **(
                        _precision_recall(models, tag, rows, experiment)
                        if spec.task == "classification"
                        else {}
                    ),
                    "training_seconds": round(experiment.training_seconds, 3),
                    "registry": dg.MetadataValue.path(models.uri),
                    "mlflow_run": dg.MetadataValue.url(tracked.url) if tracked.url else tracked.run_id,
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
        op_tags=plan.steps["evaluation"].op_tags(f"{name}_evaluation"),
        retry_policy=plan.steps["evaluation"].retry_policy,
    )
    @retry_only_transient
    def evaluation_asset(
        context: dg.AssetExecutionContext, config: GateConfig, warehouse: Warehouse, registry: ModelRegistry
    ):
        if unmeasured := sorted({*config.limits, *config.tolerance} - set(metrics)):
            raise dg.Failure(
                f"the run config's gate names metrics {name} does not measure: {', '.join(unmeasured)} "
                f"(it measures {', '.join(metrics)})",
                allow_retries=False,
            )
        if config.evaluation_days is not None and config.evaluation_days < 1:
            raise dg.Failure(f"evaluation_days is {config.evaluation_days}: at least 1", allow_retries=False)
        evaluation_days = config.evaluation_days or spec.windows.evaluation_days
        judged_by = judging.Gate(
            {**gate.limits, **config.limits}, gate.beat_baseline, {**gate.tolerance, **config.tolerance}
        )
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
            last = last_labelled_day(connection, run_last_day(context))
            first = last - timedelta(days=evaluation_days - 1)
            labelled = labelled_rows(connection, first, last)
            frame = plan.judged(connection, labelled, first, last)
        excluded = {"excluded_known_positive_rows": len(labelled) - len(frame)} if known_positives else {}

        def measured(model, column=None) -> dict[str, float]:
            return learning.measure(learning.scored(rows, model, frame, spec.task, column), metrics)

        challenger_metrics = measured(models.load(tag))
        champion_metrics = measured(models.load(champion.tag)) if champion else None
        if baseline.column:
            baseline_metrics = measured(None, baseline.column)
        elif judged_by.beat_baseline:  # the gate needs it: a version without one cannot be judged
            baseline_metrics = measured(pickle.loads(models.attachment(tag, BASELINE_FILE)))
        else:  # shown beside the challenger when the version has one (one registered by hand may not)
            try:
                baseline_metrics = measured(pickle.loads(models.attachment(tag, BASELINE_FILE)))
            except RegistryError:
                context.log.warning(f"{tag} has no fitted baseline: judged without one")
                baseline_metrics = None
        decision = judging.judge(challenger_metrics, judged_by, metrics, baseline_metrics, champion_metrics)
        models.record(
            tag,
            APPROVED if decision.promote else REFUSED,
            reason=decision.summary,
            run_id=context.run.run_id,
            details={
                "window": {"first": first.isoformat(), "last": last.isoformat(), **excluded},
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
                "judged_rows": len(frame),
                **excluded,
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
        op_tags=plan.steps["publishing"].op_tags(f"{name}_production_model"),
        retry_policy=plan.steps["publishing"].retry_policy,
        output_required=False,
    )
    @retry_only_transient
    def production_asset(context: dg.AssetExecutionContext, registry: ModelRegistry):
        models = registry_of(registry)
        yield from promote_or_keep(context, models, evaluation_key)

    @dg.asset(
        key=scores_key,
        group_name=name,
        description=f"The production model's prediction for every row of the day's {name} features, with "
        f"the version that made it. Lake table {plan.score_lake_table}, warehouse table {score_table}.",
        metadata=stored_in_warehouse(score_table, spec.day_column),
        partitions_def=daily_partitions,
        backfill_policy=one_run_per_backfill,
        pool=WAREHOUSE_POOL,
        deps=[features_key, production_key],
        # Each new day is scored when its features are; a promotion does not rescore the past.
        automation_condition=follows_upstream(ignore=production_key),
        kinds={"scikit-learn", "duckdb", "parquet"},
        tags=tags,
        op_tags=plan.steps["scoring"].op_tags(f"{name}_scores"),
        retry_policy=plan.steps["scoring"].retry_policy,
    )
    @retry_only_transient
    def scores_asset(
        context: dg.AssetExecutionContext, warehouse: Warehouse, lake: Lake, registry: ModelRegistry
    ):
        started = time.monotonic()
        first, last = partition_days(context)
        with warehouse.connect() as connection:
            plan.require_days(connection, first, last)
        models = registry_of(registry)
        champion = plan.champion(models)
        model = models.load(champion.tag)
        # The attributes go with the scores: live performance measures metrics that group by them.
        kept = [*spec.entity, spec.day_column, *spec.attributes]
        needed = learning.input_columns(model)
        columns = "*" if needed is None else ", ".join(f'"{c}"' for c in dict.fromkeys([*kept, *needed]))
        scored_at = pd.Timestamp.now(tz="UTC").tz_localize(None)
        predicting, predictions = 0.0, []
        # A month at a time, as the features were made: a year's backfill never holds every row.
        for start in pd.date_range(first, last, freq=f"{CHUNK_DAYS}D").date:
            end = min(start + timedelta(days=CHUNK_DAYS - 1), last)
            with warehouse.connect() as connection:
                frame = connection.execute(
                    f"select {columns} from {feature_table} where {spec.day_column} between ? and ? "
                    f"order by {spec.day_column}, {', '.join(spec.entity)}",
                    [start, end],
                ).df()
            began = time.monotonic()
            predicted = learning.predict(model, frame, spec.task)
            predicting += time.monotonic() - began
            predictions.append(predicted)
            scores = frame[kept].assign(
                **{plan.prediction: predicted}, model_version=champion.tag, scored_at=scored_at
            )
            for day, day_rows in scores.groupby(pd.to_datetime(scores[spec.day_column]).dt.date):
                lake.write_partition(plan.score_lake_table, day, day_rows.reset_index(drop=True))
            warehouse.replace_days(score_table, spec.day_column, start, end, scores)
        every = np.concatenate(predictions)
        return dg.MaterializeResult(
            metadata={
                **recorded(context),
                "model_version": champion.tag,
                "window_rows": len(every),
                f"mean_{plan.prediction}": float(np.nanmean(every)),
                f"p99_{plan.prediction}": float(np.nanquantile(every, 0.99)),
                # The step's rate against the model's own (predict alone): what the platform costs.
                "rows_per_second": round(len(every) / (time.monotonic() - started)),
                "model_rows_per_second": round(len(every) / predicting) if predicting else None,
                "warehouse_table": score_table,
                **({"dagster/row_count": len(every)} if first == last else {}),
            }
        )

    return [features_asset, model_asset, evaluation_asset, production_asset, scores_asset]


class TrainingConfig(dg.Config):
    """One experiment, from the launchpad: the window and hyper-parameters on top of the spec's."""

    train_days: int | None = None  # default: the spec's windows.train_days
    test_days: int | None = None  # default: the spec's windows.test_days
    last_labelled_day: str | None = None  # YYYY-MM-DD; default: the newest day whose label is known
    seed: int | None = None  # default: the spec's seed
    hyper_parameters: dict[str, Any] = {}  # over the spec's estimator.params, checked by name
    # Model selection's budget (default: the spec's selection.trials); 1, or any hyper_parameters
    # given here, trains the declared estimator without selection.
    trials: int | None = None


class GateConfig(dg.Config):
    """The promotion gate from the launchpad: its window and its numbers, over the spec's."""

    evaluation_days: int | None = None  # default: the spec's windows.evaluation_days
    limits: dict[str, float] = {}  # a floor or a ceiling per metric, over the spec's gate.limits
    tolerance: dict[str, float] = {}  # vs the champion, per metric, over the spec's gate.tolerance


_OR_SELECTED = " or the candidate model selection chose on the training window's last days"


class TrialLog:
    """Each trial of model selection, as it ends: a line in the run's log, a child run in MLflow."""

    def __init__(self, context: dg.AssetExecutionContext, tracked, metric: str):
        self.context, self.tracked, self.metric = context, tracked, metric

    def __call__(self, trial) -> None:
        self.context.log.info(
            f"selection trial {trial.number}: {trial.candidate} {self.metric} {trial.score:.4f} "
            f"in {trial.seconds:.1f} s {trial.params}"
        )
        self.tracked.trial(
            trial.number, trial.candidate, trial.params, self.metric, trial.score, trial.seconds
        )


def _selection_metadata(selection) -> dict:
    """How the estimator was chosen: on which days, by what, and every trial."""
    trials = pd.DataFrame(
        [
            {
                "trial": t.number,
                "estimator": t.candidate,
                selection.metric: round(t.score, 4),
                "seconds": t.seconds,
                "parameters": ", ".join(f"{k}={_short(v)}" for k, v in t.params.items()),
            }
            for t in selection.trials
        ]
    ).sort_values(selection.metric, ascending=False)
    return {
        "selection_metric": selection.metric,
        f"validation_{selection.metric}": round(selection.best.score, 4),
        "selected_trial": selection.best.number,
        "selection_trials": len(selection.trials),
        "selection_seconds": round(sum(t.seconds for t in selection.trials), 1),
        "fitted_on": f"{selection.fit_days[0]} .. {selection.fit_days[1]}",
        "validated_on": f"{selection.validation_days[0]} .. {selection.validation_days[1]}",
        "validation_rows": selection.validation_rows,
        "trials": dg.MetadataValue.md(trials.to_markdown(index=False)),
    }


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _precision_recall(models: ModelRegistry, tag: str, rows, experiment) -> dict:
    """A classifier's precision-recall curves on its test days, beside its baseline's, kept with the
    version and shown in the UI."""
    from keel_core import learning

    test = experiment.test
    curves = {"model": (test[rows.label], learning.predict(experiment.model, test, "classification"))}
    if experiment.baseline is not None:
        curves["baseline"] = (test[rows.label], learning.predict(experiment.baseline, test, "classification"))
    window = experiment.window
    plot = learning.precision_recall_png(curves, f"{tag}, test {window.test_start} .. {window.test_end}")
    uri = models.attach(tag, "precision_recall.png", plot)
    return {
        "precision_recall": dg.MetadataValue.md(
            f"![precision-recall](data:image/png;base64,{base64.b64encode(plot).decode()})"
        ),
        "precision_recall_png": dg.MetadataValue.path(uri),
    }


def _schema_failures(plan: Plan, warehouse: Warehouse, first, last) -> list[dict]:
    """The stored rows of ``first .. last`` against the folder's schema: what was stored, not what was
    meant. Each failure: the column, the check, the value and the row."""
    import pandera.errors  # here: pandera costs ~0.2 s to import, and only this step validates

    with warehouse.connect() as connection:
        stored = connection.execute(
            f"select * from {plan.feature_table} where {plan.spec.day_column} between ? and ?", [first, last]
        ).df()
    try:
        plan.feature_schema().validate(stored, lazy=True)
    except pandera.errors.SchemaErrors as errors:
        cases = errors.failure_cases[["column", "check", "failure_case", "index"]]
        return cases.astype(str).to_dict("records")
    return []


def _period(rows: pd.DataFrame, spec):
    """A period's labelled rows, and a classifier's positive ones."""
    from keel_core.model_record import Period

    positives = int(rows[spec.label_column].sum()) if spec.task == "classification" else None
    return Period(rows=len(rows), positives=positives)


def _metrics_table(models: dict[str, dict[str, float] | None]) -> dg.MetadataValue:
    names = sorted({n for metrics in models.values() if metrics for n in metrics})
    lines = ["| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, metrics in models.items():
        lines.append(
            f"| {label} | " + " | ".join(f"{metrics[n]:.4f}" if metrics else "–" for n in names) + " |"
        )
    return dg.MetadataValue.md("\n".join(lines))
