"""What a use case's spec compiles into, checked once: its asset keys, tables, rows, metrics, gate,
drift columns, live limits and endpoint. The lifecycle's modules build assets from a ``Plan``:
``training.py`` (features to scores), ``monitoring.py`` (drift, live performance, retraining) and
``serving.py`` (online features, the Bento)."""

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from platform_assets import steps as platform_steps
from platform_assets.automation import expected_every
from platform_assets.steps import Step
from resources.registry import ModelRegistry

BASELINE_FILE = "baseline.pickle"  # a fitted estimator baseline, kept with the version
TRAINING_REFERENCE = "training_reference.parquet"  # the training rows drift compares days with
DRIFT_CHECK, PERFORMANCE_CHECK = "features_have_not_drifted", "performance_within_limits"
FEATURE_SCHEMA_CHECK = "matches_feature_schema"
PIPELINE_TAG = "keel/pipeline"  # on every use case's asset: keel_pipeline runs them (defs/jobs.py)
# On the monitoring assets instead: they judge days once a model is in production (`keel demo` runs
# them for the newest days after the pipeline). Their metadata says how many days after the day
# they can run (LABEL_DELAY: a label delay).
MONITORING_TAG, LABEL_DELAY = "keel/monitoring", "keel/label_delay_days"


# The kinds of step of a lifecycle, with the platform's defaults (a spec's `compute` changes them).
STEPS = {
    "features": platform_steps.FEATURES,
    "training": platform_steps.TRAINING,
    "evaluation": platform_steps.GATE,
    "scoring": platform_steps.SCORING,
    "publishing": platform_steps.PUBLISHING,
    "monitoring": platform_steps.MONITORING,
}


def key(name: str, asset: str) -> dg.AssetKey:
    return dg.AssetKey([name, asset])


def read_deps(reads) -> list[dg.AssetDep]:
    """The dependencies of an asset that reads ``reads`` (``use_case.Reads``): for a daily one, its
    partitions D - lookback_days .. D - until_days_before of day D."""
    return [
        dg.AssetDep(
            dg.AssetKey.from_user_string(read.asset),
            partition_mapping=None
            if read.lookback_days is None
            else dg.TimeWindowPartitionMapping(
                start_offset=-read.lookback_days,
                end_offset=-read.until_days_before,
                allow_nonexistent_upstream_partitions=True,
            ),
        )
        for read in reads
    ]


@dataclass(frozen=True)
class Serving:
    """How a use case serves: the Bento (its service and bentofile), the online feature view and how
    a day's snapshot of it is computed, and the lake table of what was served."""

    service: str  # the service's name: its Bentos are <service>_<namespace>
    bentofile: Path
    view: Any  # keel_core.online_store.FeatureView
    snapshot: Callable | None  # (connection, closed_day) -> {entity: frame}; None: the day's feature rows
    snapshot_schema: Callable | None  # (entity) -> a pandera schema, or None
    snapshot_reads: tuple  # use_case.Reads of the snapshot (None: it reads the features)
    log_table: str  # the lake table of what was served
    spool: str  # the lake folder the service writes its prediction files to
    example: Callable | None  # (connection, closed_day) -> (route, JSON body): a request to try

    @classmethod
    def of(cls, spec, resolve) -> tuple[Any, "Serving"]:
        """The platform's endpoint (or None: the folder's own service) and how the use case serves."""
        from keel_core.bentos import PREDICTOR_BENTOFILE
        from keel_core.endpoint import Endpoint
        from keel_core.online_store import FeatureView
        from keel_core.prediction_log import SPOOL

        name, serving = spec.name, spec.serving
        example = resolve(serving.example) if serving.example else None
        log_table = spec.storage.prediction_log_table or f"{name}_prediction_log"
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", log_table):
            raise ValueError(f"{name}: prediction_log_table {log_table!r} is not a lake table name")
        spool = f"{SPOOL}/{name}"
        if (serving.entity is None) == (serving.service is None):
            raise ValueError(
                f"{name}: serving declares either entity (the platform's endpoint) or service (the "
                "folder's own), not both or neither"
            )
        if serving.service is None:
            if serving.snapshot is not None:
                raise ValueError(
                    f"{name}: a snapshot is for a folder's own service; the endpoint reads the features"
                )
            if len(spec.entity) != 1:
                raise ValueError(
                    f"{name}: an endpoint answers for one entity key; the rows have {spec.entity}"
                )
            endpoint = Endpoint(
                use_case=name,
                entity=serving.entity,
                key=spec.entity[0],
                features=tuple(spec.feature_names),
                feature_set_version=spec.feature_set_version,
                task=spec.task,
                response=serving.response,
                defaults=dict(serving.defaults),
            )
            return endpoint, cls(
                name, PREDICTOR_BENTOFILE, endpoint.view(), None, None, (), log_table, spool, example
            )
        bentofile = resolve.folder / serving.service.bentofile
        if not bentofile.is_file():
            raise ValueError(f"{name}: serving.service.bentofile {bentofile} is not a file")
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", serving.service.name):
            raise ValueError(f"{name}: service name {serving.service.name!r}: lowercase, digits, _")
        snapshot = serving.snapshot
        if snapshot is None:
            raise ValueError(f"{name}: a folder's own service needs the snapshot it reads (serving.snapshot)")
        view = resolve(snapshot.view)
        if not isinstance(view, FeatureView):
            raise ValueError(
                f"{name}: snapshot.view {snapshot.view!r} is not a keel_core.online_store.FeatureView"
            )
        if view.name != name:
            raise ValueError(f"{name}: snapshot.view is named {view.name!r}; a view is named as its use case")
        if view.version != spec.feature_set_version:
            raise ValueError(
                f"{name}: snapshot.view is version {view.version!r}, the features "
                f"{spec.feature_set_version!r}: the store would serve features the model was not trained on"
            )
        reads = tuple(snapshot.reads)
        if any(read.lookback_days is None or read.lookback_days < read.until_days_before for read in reads):
            raise ValueError(
                f"{name}: a snapshot reads daily assets, with lookback_days >= until_days_before"
            )
        return None, cls(
            serving.service.name,
            bentofile,
            view,
            resolve(snapshot.function),
            resolve(snapshot.contract) if snapshot.contract else None,
            reads,
            log_table,
            spool,
            example,
        )


@dataclass(frozen=True)
class Plan:
    spec: Any  # the UseCase (its module imports this one)
    name: str
    model_name: str  # the registry's name for the use case's versions
    compute_features: Callable
    compute_labels: Callable
    feature_schema: Callable | None  # () -> a pandera schema of the stored rows, or None
    estimator: Any  # the estimator the spec names: its import path, or the folder's factory
    # keel_core.selection: the declared estimator and the candidates model selection may pick
    # instead, or None (the declared estimator as it is).
    declared: Any
    candidates: list[Any] | None
    features_key: dg.AssetKey
    model_key: dg.AssetKey
    evaluation_key: dg.AssetKey
    production_key: dg.AssetKey
    scores_key: dg.AssetKey
    drift_key: dg.AssetKey
    performance_key: dg.AssetKey
    labels_keys: list[dg.AssetKey]
    feature_table: str  # schema.table in the warehouse
    score_table: str  # schema.table in the warehouse
    score_lake_table: str  # the scores' lake table
    prediction: str  # the scores' column holding the model's answer
    rows: Any  # keel_core.learning.Rows
    metrics: dict[str, Any]  # name -> keel_core.judging.Metric
    gate: Any  # keel_core.judging.Gate
    baseline: Any  # keel_core.learning.Baseline
    drift_columns: Any  # keel_core.drift.DriftColumns
    drift_policy: Any  # keel_core.drift.DriftPolicy
    live_limits: Any  # keel_core.judging.Gate: the limits in production
    endpoint: Any  # keel_core.endpoint.Endpoint of the platform's predictor, or None
    serving: "Serving | None"  # None: batch scores only
    freshness: dg.FreshnessPolicy | None  # of the features and the prediction log
    steps: dict[str, Step]  # each kind of step's compute: the platform's, with the spec's changes
    tags: dict[str, str]

    @classmethod
    def of(cls, spec, resolve) -> "Plan":
        """``spec`` checked and compiled, its references (features, labels, metrics, estimators)
        resolved by ``resolve`` (``use_case.References``)."""
        from keel_core import drift, judging, learning, selection

        name = spec.name
        model_name = spec.model_name or name
        compute_features, compute_labels = resolve(spec.features), resolve(spec.labels)
        feature_schema = resolve(spec.feature_schema) if spec.feature_schema else None
        features_key, model_key = key(name, "features"), key(name, "model")
        evaluation_key, production_key = key(name, "evaluation"), key(name, "production_model")
        scores_key, drift_key = key(name, "scores"), key(name, "drift")
        performance_key = key(name, "live_performance")
        labels_keys = [dg.AssetKey.from_user_string(asset) for asset in spec.labels_read]
        storage = spec.storage
        feature_table = storage.feature_table or f"ml.{name}_features"
        score_table = storage.score_table or f"ml.{name}_scores"
        for table in (feature_table, score_table):
            if not re.fullmatch(r"[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*", table):
                raise ValueError(
                    f"{name}: storage table {table!r} is not schema.table (lowercase, digits, _)"
                )
        if feature_table == score_table:
            raise ValueError(f"{name}: the features and the scores cannot share the table {feature_table}")
        score_lake_table = score_table.partition(".")[2]
        prediction = storage.prediction_column
        if prediction in {*spec.entity, spec.day_column, *spec.attributes, "model_version", "scored_at"}:
            raise ValueError(
                f"{name}: the prediction column {prediction!r} is already a column of the scores"
            )
        rows = learning.Rows(
            tuple(spec.entity),
            spec.day_column,
            tuple(spec.feature_names),
            spec.label_column,
            tuple(spec.attributes),
        )
        if overlap := sorted(set(spec.attributes) & {*spec.entity, spec.day_column, *spec.feature_names}):
            raise ValueError(f"{name}: attributes are columns besides keys and features: {overlap}")
        metrics = {
            m.name.rpartition(":")[2]: judging.metric(
                m.name,
                m.higher_is_better,
                resolve(m.name) if ":" in m.name and m.name not in judging.BUILT_IN else None,
            )
            for m in spec.metrics
        }

        # An estimator by import path is imported when training runs (scikit-learn's ensembles take
        # a second to import: the code location stays light); one of the folder is what it names.
        def estimator_of(reference: str) -> Any:
            return resolve(reference) if resolve.in_folder(reference) else reference

        estimator = estimator_of(spec.estimator.class_path)
        declared = selection.Candidate(
            _short_name(spec.estimator.class_path), estimator, dict(spec.estimator.params)
        )
        candidates = None
        if spec.selection is not None:
            candidates = [
                selection.Candidate(
                    c.name or _short_name(c.class_path),
                    estimator_of(c.class_path),
                    dict(c.params),
                    {
                        parameter: selection.Space(
                            tuple(space.choices) if space.choices is not None else None,
                            space.low,
                            space.high,
                            space.log,
                            space.step,
                        )
                        for parameter, space in c.search.items()
                    },
                )
                for c in spec.selection.candidates
            ]
            if spec.selection.metric not in metrics:
                raise ValueError(f"{name}: selection.metric {spec.selection.metric!r} is not in metrics")
            if min(spec.selection.trials, spec.selection.validation_days) < 1 or spec.selection.gap_days < 0:
                raise ValueError(f"{name}: selection needs a trial and a validation day, and no negative gap")
            fit_days = spec.selection.fit_days
            if isinstance(fit_days, int) and fit_days < 1:
                raise ValueError(f"{name}: selection.fit_days is {fit_days}: at least 1")
            if (
                fit_days is None
                and spec.selection.validation_days + spec.selection.gap_days >= spec.windows.train_days
            ):
                raise ValueError(
                    f"{name}: selection's validation_days and gap_days leave no training day to fit on"
                )
        gate = judging.Gate(dict(spec.gate.limits), tuple(spec.gate.beat_baseline), dict(spec.gate.tolerance))
        baseline = learning.Baseline(
            estimator_of(spec.baseline.class_path) if spec.baseline.class_path else None,
            dict(spec.baseline.params),
            spec.baseline.column,
        )
        windows = spec.windows
        if min(windows.train_days, windows.test_days, windows.evaluation_days) < 1:
            raise ValueError(f"{name}: every window needs at least one day ({windows})")
        if any(read.lookback_days is not None and read.lookback_days < 0 for read in spec.reads):
            raise ValueError(f"{name}: a lookback cannot be negative ({spec.reads})")
        for read in spec.reads:
            if read.until_days_before and (
                read.lookback_days is None or read.lookback_days < read.until_days_before
            ):
                raise ValueError(
                    f"{name}: {read.asset} reads until {read.until_days_before} days before, which needs a "
                    f"daily asset and at least as many days of lookback (lookback_days: {read.lookback_days})"
                )
            if read.until_days_before < 0:
                raise ValueError(f"{name}: {read.asset}: until_days_before cannot be negative")
        known = spec.judging.exclude_known_positives
        if known is not None and (
            known not in {*spec.entity, *spec.attributes} or spec.task != "classification"
        ):
            raise ValueError(
                f"{name}: judging.exclude_known_positives names a key or an attribute of a classifier's rows "
                f"({known!r} is not one of {[*spec.entity, *spec.attributes]}, or the task is {spec.task})"
            )
        if unmeasured := sorted(gate.metrics() - set(metrics)):
            raise ValueError(
                f"{name}: the gate names metrics that are not in metrics: {', '.join(unmeasured)}"
            )
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
        if uncompared := sorted(set(drift_policy.fail_features) - set(drift_columns.names)):
            raise ValueError(f"{name}: fail_features that drift does not compare: {', '.join(uncompared)}")
        live_limits = judging.Gate(
            limits=dict(spec.monitoring.limits if spec.monitoring.limits is not None else spec.gate.limits)
        )
        if unmeasured := sorted(live_limits.metrics() - set(metrics)):
            raise ValueError(f"{name}: monitoring limits name unmeasured metrics: {', '.join(unmeasured)}")
        freshness_hours = spec.monitoring.freshness_hours
        if freshness_hours is not None and freshness_hours <= 0:
            raise ValueError(f"{name}: monitoring.freshness_hours must be positive")
        freshness = expected_every(freshness_hours)
        if spec.retraining.labelled_days is not None and spec.retraining.labelled_days < 1:
            raise ValueError(f"{name}: retraining.labelled_days must be at least 1")
        endpoint, serving = None, None
        if spec.serving is not None:
            endpoint, serving = Serving.of(spec, resolve)
        steps = {
            kind: dataclasses.replace(default, **getattr(spec.compute, kind).model_dump(exclude_none=True))
            for kind, default in STEPS.items()
        }
        tags = {PIPELINE_TAG: "true"}
        values = locals()
        return cls(**{name: values[name] for name in cls.__dataclass_fields__})

    def estimators(self) -> dict[str, Any]:
        """The estimators the use case may train, by the spec's name for them (an import path or a
        folder reference): the declared one and model selection's candidates."""
        declared = {self.spec.estimator.class_path: self.estimator}
        if self.spec.selection is None:
            return declared
        paths = [c.class_path for c in self.spec.selection.candidates]
        return {**declared, **{path: c.class_path for path, c in zip(paths, self.candidates, strict=True)}}

    def class_path_of(self, experiment) -> str:
        """The spec's name for the estimator ``experiment`` fitted."""
        fitted = experiment.model_spec[0]
        return next(path for path, made in self.estimators().items() if made == fitted)

    def registry_of(self, registry: ModelRegistry) -> ModelRegistry:
        """The registry of this use case's model (``model_name``), in the namespace's lake."""
        return registry.of(self.model_name)

    @property
    def history_days(self) -> int:
        """How many days before a row's day its features read: a row of the calendar's first days
        sees shorter windows than the others (its features' windows are still filling)."""
        return max((read.lookback_days or 0 for read in self.spec.reads), default=0)

    def require_days(self, connection, first: date, last: date) -> None:
        """Every day of ``first .. last`` has rows in the feature table, or a failure naming the days
        that do not: a window with a hole would train, judge or score on fewer days, silently."""
        day = self.spec.day_column
        present = {
            pd.Timestamp(value).date()
            for (value,) in connection.execute(
                f"select distinct cast({day} as date) from {self.feature_table} where {day} between ? and ?",
                [first, last],
            ).fetchall()
        }
        missing = [d.date() for d in pd.date_range(first, last) if d.date() not in present]
        if missing:
            shown = ", ".join(d.isoformat() for d in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise dg.Failure(
                f"{self.feature_table} has no rows for {len(missing)} of the days {first} .. {last} "
                f"({shown}): materialize {self.features_key.to_user_string()} for them",
                allow_retries=False,
            )

    def labelled_rows(self, connection, first: date, last: date) -> pd.DataFrame:
        return self.rows_of(connection, first, last)[0]

    def rows_of(self, connection, first: date, last: date) -> tuple[pd.DataFrame, int]:
        """The labelled rows of ``first .. last``, and how many rows of those days have no label (it
        never arrived, or was quarantined): a record says what its model did not learn from."""
        from keel_core import learning

        self.require_days(connection, first, last)
        stored = connection.execute(
            f"select * from {self.feature_table} where {self.spec.day_column} between ? and ?", [first, last]
        ).df()
        labels = self.compute_labels(connection, first, last)
        labelled = learning.labelled(self.rows, stored, labels)
        return labelled, len(stored) - len(labelled)

    def experiment(
        self,
        connection,
        window,
        hyper_parameters: dict,
        estimator: Any = None,
        on_trial: Callable | None = None,
        trials: int | None = None,
        history_from: date | None = None,
    ):
        """The model (``estimator``, default the declared one, with ``hyper_parameters``) and the
        baseline trained on ``window``'s train days and measured on its test days, and how many rows
        of those days had no label: the one way a use case trains (its ``model`` asset, ``keel
        reproduce``). With ``on_trial`` and a ``selection`` in the spec, the estimator and its
        hyper-parameters are chosen first on the training window's last days (``keel_core.selection``;
        with ``fit_days``, the trials are fitted on days from before the window too),
        each trial given to ``on_trial`` (``trials``: the budget, default the spec's); the
        experiment's ``selection`` says how. ``history_from``: the first day features can exist (the
        calendar's start): trials fit on no day before it."""
        from keel_core import learning, selection

        unlabelled = []

        def choose(train: pd.DataFrame):
            chosen = self.spec.selection
            span = (window.train_start, window.train_end)
            fit_days = (span[1] - span[0]).days + 1 if chosen.fit_days == "train_days" else chosen.fit_days
            (fit_from, fit_to), _ = selection.split(*span, chosen.validation_days, chosen.gap_days, fit_days)
            if history_from is not None and fit_from < history_from <= fit_to:
                # A world younger than the fitting days asks for (its calendar starts later): as
                # many as there are, which the selection's fitted_on days say.
                fit_from, fit_days = history_from, (fit_to - history_from).days + 1
            if fit_from < window.train_start:  # the trials learn from days before the window too
                earlier = self.labelled_rows(connection, fit_from, window.train_start - timedelta(days=1))
                train = pd.concat([earlier, train], ignore_index=True)
            made = selection.select(
                self.rows,
                self.spec.task,
                train,
                span,
                dataclasses.replace(
                    self.declared, class_path=estimator or self.estimator, params=hyper_parameters
                ),
                self.candidates,
                self.metrics[chosen.metric],
                chosen.trials if trials is None else trials,
                chosen.validation_days,
                chosen.gap_days,
                seed=self.spec.seed,
                judged=lambda frame, first, last: self.judged(
                    connection, frame, first, last, since=min(fit_from, window.train_start)
                ),
                on_trial=on_trial,
                fit_days=fit_days,
            )
            return (made.class_path, made.params), made

        def load(first: date, last: date) -> pd.DataFrame:
            frame, missing = self.rows_of(connection, first, last)
            unlabelled.append(missing)
            return frame

        experiment = learning.run_experiment(
            self.rows,
            self.spec.task,
            load,
            window,
            (estimator or self.estimator, hyper_parameters),
            self.baseline,
            self.metrics,
            lambda frame, first, last: self.judged(connection, frame, first, last, since=window.train_start),
            choose=choose if on_trial is not None and self.candidates is not None else None,
        )
        return experiment, sum(unlabelled)

    def judged(
        self, connection, frame: pd.DataFrame, first: date, last: date, since: date | None = None
    ) -> pd.DataFrame:
        """The rows of ``frame`` (days ``first .. last``) a model is judged on: all of them, or, with
        ``judging.exclude_known_positives``, not those whose attribute had a positive label known
        before their day, looked for from ``since`` (an experiment's first training day, as the
        handbook does; by default a training window's length before ``first``)."""
        from keel_core import learning

        by, spec = self.spec.judging.exclude_known_positives, self.spec
        if by is None or frame.empty:
            return frame
        delay, day = spec.label_delay_days, spec.day_column
        start = since or first - timedelta(days=spec.windows.train_days + delay)
        end = last - timedelta(days=delay + 1)
        if end < start:
            return frame
        columns = ", ".join(dict.fromkeys([*spec.entity, day, by]))
        stored = connection.execute(
            f"select {columns} from {self.feature_table} where {day} between ? and ?", [start, end]
        ).df()
        labels = self.compute_labels(connection, start, end)
        on = [*spec.entity, day]
        positives = stored.merge(labels[[*on, spec.label_column]], on=on, how="inner")
        positives = positives[positives[spec.label_column] == 1]
        return learning.without_known_positives(self.rows, frame, positives, by, delay)

    def last_labelled_day(self, connection, until: date | None = None) -> date:
        """The newest day whose label is known: a label delay before the newest stored day (up to
        ``until``, the last day of the run's partitions when it has some)."""
        day = self.spec.day_column
        (last,) = connection.execute(
            f"select max({day}) from {self.feature_table} where ? is null or {day} <= ?", [until, until]
        ).fetchone()
        if last is None:
            raise dg.Failure(
                f"{self.feature_table} is empty: materialize {self.features_key.to_user_string()}",
                allow_retries=False,
            )
        return pd.Timestamp(last).date() - timedelta(days=self.spec.label_delay_days)

    def champion(self, models: ModelRegistry):
        """The version in production, or a failure naming the asset that promotes one."""
        champion = models.champion()
        if champion is None:
            raise dg.Failure(
                f"no model in production in {models.uri}: materialize {self.production_key.to_user_string()}",
                allow_retries=False,
            )
        return champion


def _short_name(class_path: str) -> str:
    """``sklearn.ensemble.RandomForestClassifier`` -> ``RandomForestClassifier``; ``training:f`` -> ``f``."""
    return class_path.rpartition(":" if ":" in class_path else ".")[2]
