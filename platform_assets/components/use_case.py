"""``keel.UseCase``: a model's whole lifecycle from one folder's ``defs.yaml``.

A use case is a folder under ``platform_assets/defs/<name>/``: its ``defs.yaml`` declares what the
model is (entity and grain, features, label and its delay, estimator, metrics, gate, windows) and
its ``features.py`` computes the rows from the warehouse. This component turns that into assets
keyed ``<name>/...``, in the asset group ``<name>``:

    <reads> -> features (daily) -> model (train, register) -> evaluation (gate) -> production_model
    features + production_model -> scores (daily) -> live_performance (daily, a label delay later)
    features + production_model -> drift (daily, against the model's training rows)
    features -> online_features (the day's rows in the online store)    } when the spec
    production_model -> bento (its prediction endpoint, serving/predictor.py) } declares
    features -> prediction_log (what the endpoint answered on the day)        } serving

and the job ``<name>_train_and_promote`` with the sensor ``<name>_retraining`` that asks for it
(newly labelled days, a failed drift or live-performance check: ``platform_assets/retraining.py``).

The maths is the platform's pure library (``keel_core.learning``, ``keel_core.judging``); the
lifecycle steps are the ones the reference use case has (the hand-over of exact versions, a refusal
as an expected outcome, idempotent daily tables). No use case is named here.
"""

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal

import dagster as dg
from pydantic import BeforeValidator, Field

from platform_assets.components import monitoring, serving, training
from platform_assets.components.plan import Plan
from platform_assets.components.scaffold import UseCaseScaffolder


class Reads(dg.Model):
    """An asset the features read: if it is daily, for a day D its partitions D - lookback_days ..
    D - until_days_before (a feature of day D may use only the days before it)."""

    asset: str
    lookback_days: int | None = None  # None: the asset is not partitioned
    until_days_before: int = 0


class EstimatorSpec(dg.Model):
    """Any scikit-learn estimator by import path, or a function of the folder that returns one (a
    pipeline, say: ``module:function``), with its hyper-parameters."""

    class_path: str
    params: dict[str, Any] = Field(default_factory=dict)


class SearchSpec(dg.Model):
    """A hyper-parameter's range: ``choices``, or ``low`` .. ``high`` (``log``, ``step``); integer
    bounds give integers."""

    choices: list[Any] | None = None
    low: int | float | None = None  # YAML's 100 stays an integer, 0.0 a float
    high: int | float | None = None
    log: bool = False
    step: int | float | None = None


class CandidateSpec(EstimatorSpec):
    """An estimator model selection may pick, its fixed ``params`` and the ranges it searches."""

    name: str | None = None  # default: the class's name
    search: dict[str, SearchSpec] = Field(default_factory=dict)


class SelectionSpec(dg.Model):
    """How the estimator and its hyper-parameters are chosen: on the last ``validation_days`` of the
    training window (after ``gap_days``), by ``metric``, in ``trials`` fits (the declared estimator
    first, then Optuna's proposals among the candidates). Never on the test days."""

    metric: str
    trials: int  # at least 1 (checked with the rest of the spec: platform_assets/components/plan.py)
    validation_days: int
    gap_days: int = 0
    # What each trial is fitted on: the training window's days before the validation days (none
    # given), that many days, or as many as the model trains on (``train_days``); from before the
    # window when it has fewer left (their features must be materialized).
    fit_days: int | Literal["train_days"] | None = None
    candidates: list[CandidateSpec] = Field(default_factory=list)


class BaselineSpec(dg.Model):
    """The yardstick: an estimator trained on the same rows, or a feature column that is a prediction."""

    class_path: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    column: str | None = None


class MetricSpec(dg.Model):
    # A built-in metric (keel_core.judging.BUILT_IN), a module:function of the folder, or an import path.
    name: str
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
    # The features (and what the endpoint served) are expected to be updated at least this often
    # (None: no expectation); late, the UI shows it and an alert is sent.
    freshness_hours: float | None = None


class ServiceSpec(dg.Model):
    """The folder's own scoring service instead of the platform's predictor: a BentoML service on
    Keel's serving runtime (``serving/``) whose request, features and answer are the folder's."""

    name: str  # its Bentos are <name>_<namespace> (`keel serve <name>`)
    bentofile: str  # the folder's bentofile, relative to the folder


class SnapshotSpec(dg.Model):
    """Online features of several entities, computed by a folder function from the warehouse (rather
    than the day's feature rows): what a service that computes request-time features looks up."""

    function: str  # module:function(connection, closed_day) -> {entity: frame of its key and features}
    view: str  # module:NAME, the keel_core.online_store.FeatureView the frames are published as
    contract: str | None = None  # module:function(entity) -> a pandera schema each entity's frame meets
    reads: list[Reads]  # what the snapshot of a day reads (lookback_days: the days before it read)


class ServingSpec(dg.Model):
    """Online: the platform's prediction endpoint for one entity (``entity``), or the folder's own
    service (``service``, with its ``snapshot``); either way the Bento and the prediction log."""

    # The platform's endpoint: what a request names, e.g. terminal (its key: the use case's entity).
    entity: str | None = None
    response: str = "prediction"  # the answer's field name, e.g. forecast
    # Each feature's value for an entity the day's snapshot does not hold (default 0: no history).
    defaults: dict[str, float] = Field(default_factory=dict)
    service: ServiceSpec | None = None
    snapshot: SnapshotSpec | None = None
    # module:function(connection, closed_day) -> (route, JSON body): a request `keel demo` prints to try
    # (default for the platform's endpoint: the day's first entity).
    example: str | None = None


class StepSpec(dg.Model):
    """A step's pod where the platform's default (``platform_assets/steps.py``) does not fit: each
    field set replaces the default's, the others stay."""

    cpu: float | None = None  # cores requested (the limit is twice as much)
    memory_gib: float | None = None
    scratch_gib: float | None = None
    gpus: int | None = None  # the pod asks for GPUs and lands on a GPU node
    deadline_seconds: int | None = None  # Kubernetes ends the step after this long
    retries: int | None = None  # of transient errors only


class ComputeSpec(dg.Model):
    """The compute of each kind of step of the lifecycle (in staging and prod, one pod per step)."""

    features: StepSpec = Field(default_factory=StepSpec)
    training: StepSpec = Field(default_factory=StepSpec)
    evaluation: StepSpec = Field(default_factory=StepSpec)
    scoring: StepSpec = Field(default_factory=StepSpec)
    publishing: StepSpec = Field(default_factory=StepSpec)  # promotion, online features, the Bento
    monitoring: StepSpec = Field(default_factory=StepSpec)


class StorageSpec(dg.Model):
    """Where the use case's tables live. By default ``ml.<name>_features`` and ``ml.<name>_scores`` in
    the warehouse (and the lake table ``<name>_scores``); a use case that had tables before keeps their
    names, and with them its history (scores are not recomputed for past days)."""

    feature_table: str | None = None  # schema.table in the warehouse
    score_table: str | None = None  # schema.table in the warehouse; the lake table is its table part
    prediction_column: str = "prediction"  # the scores' column holding the model's answer
    prediction_log_table: str | None = None  # the lake table of what was served (<name>_prediction_log)


class JudgingSpec(dg.Model):
    """Which rows a model is judged on (its test days, the gate's window, live performance)."""

    # An attribute or key (a card): its rows are left out once a positive label of it is known before
    # their day, as a card known compromised is blocked (the fraud-detection handbook's test rule).
    exclude_known_positives: str | None = None


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
    # module:function of the folder returning a pandera schema of the stored rows: a blocking check.
    feature_schema: str | None = None
    # Bumped when a feature changes meaning (the features' code version, each model's record). YAML
    # reads 2 as a number: it is kept as text (quote a version such as "1.10").
    feature_set_version: Annotated[str, BeforeValidator(lambda v: v if v is None else str(v))] = "1"
    # The registry's name for its versions (tags <model_name>:<version>); default: the use case's name.
    model_name: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,63}$")
    label_column: str
    label_delay_days: int = Field(ge=0)
    reads: list[Reads] = Field(min_length=1)
    # The daily assets the labels come from: day D's label is in their partition D + label delay.
    labels_read: list[str] = Field(min_length=1)
    # Columns kept with each row that the model does not learn from: what a metric or a report groups
    # by (the card of a payment, for card precision). The features function returns them.
    attributes: list[str] = Field(default_factory=list)
    estimator: EstimatorSpec
    selection: SelectionSpec | None = None  # None: the estimator as declared
    baseline: BaselineSpec
    metrics: list[MetricSpec] = Field(min_length=1)
    gate: GateSpec
    windows: Windows
    judging: JudgingSpec = Field(default_factory=JudgingSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    serving: ServingSpec | None = None  # None: batch scores only
    retraining: RetrainingSpec = Field(default_factory=RetrainingSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    compute: ComputeSpec = Field(default_factory=ComputeSpec)
    seed: int = 42

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        folder = context.path if context.path.is_dir() else context.path.parent
        return lifecycle(self, References(folder, context.load_defs_relative_python_module))


class References:
    """What a reference in the spec names: ``module:name`` is ``name`` in the folder's ``module.py``
    when there is one (features, labels, a metric, an estimator factory), else an import path
    (``package.module:name`` or ``package.module.Name``, as ``sklearn.linear_model.Ridge``)."""

    def __init__(self, folder: Path, load_module: Callable[[Path], ModuleType]):
        self.folder, self.load_module = folder, load_module

    def in_folder(self, reference: str) -> bool:
        module_name, colon, _ = reference.partition(":")
        return bool(colon) and "." not in module_name and (self.folder / f"{module_name}.py").is_file()

    def __call__(self, reference: str) -> Any:
        from keel_core.judging import import_object

        if not self.in_folder(reference):
            return import_object(reference)
        module_name, _, name = reference.partition(":")
        path = self.folder / f"{module_name}.py"
        module = self.load_module(path)
        if not hasattr(module, name):
            raise ValueError(f"{reference!r}: {path} defines no {name}")
        return getattr(module, name)


DEFS = Path(__file__).parents[1] / "defs"  # the code location's folder of use cases and sources


def declared(defs: Path = DEFS) -> dict[str, tuple[UseCase, References]]:
    """Every use case a folder of ``defs`` declares, by name, with what its references name: what
    the command line needs (``keel reproduce``, ``keel models``) without loading the code location."""
    import importlib

    import yaml

    found = {}
    for path in sorted(defs.rglob("defs.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if not isinstance(document, dict) or document.get("type") != "keel.UseCase":
                continue  # a source, Python definitions, an empty document
            spec = UseCase.model_validate(document["attributes"])
            package = ".".join((defs.parent.name, defs.name, *path.parent.relative_to(defs).parts))

            def load(module: Path, package=package) -> ModuleType:
                return importlib.import_module(f"{package}.{module.stem}")

            found[spec.name] = (spec, References(path.parent, load))
    return found


def lifecycle(spec: UseCase, references: References) -> dg.Definitions:
    """The definitions of ``spec``'s lifecycle, with what its references name."""
    plan = Plan.of(spec, references)
    served = serving.assets(plan) if plan.serving is not None else []
    bento = [asset.key for asset in served if asset.key.path[-1] == "bento"]
    return dg.Definitions.merge(
        dg.Definitions(assets=[*training.assets(plan), *served]),
        monitoring.definitions(plan, bento),
    )
