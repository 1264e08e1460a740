"""What the registry keeps with every trained version: one typed record, whatever the use case.

Training writes it when it registers a version (``resources.registry.ModelRegistry.register``);
everything after reads it back typed: the promotion gate's model card, ``keel models``, ``keel
reproduce``, the notebook client, and a Bento, which finds in it the endpoint it serves. It is
stored as JSON beside the version (``metadata.json``) and in the BentoML model's metadata. A field
that is misspelt or missing fails where the record is built, not three steps later where it is read.

Pure module (pydantic), no Dagster.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from keel_core.endpoint import Endpoint
from keel_core.windows import TrainingWindow


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Period(_Record):
    """The labelled rows of a training or test period."""

    rows: int = Field(ge=0)
    positives: int | None = Field(default=None, ge=0)  # a classifier's positive rows

    @model_validator(mode="before")
    @classmethod
    def _as_typed(cls, stored: Any) -> Any:
        """A period stored before the record was typed named its positive rows after what they were:
        ``{"rows": n, "<what>": k}``, read as ``positives`` (anything else is validated as it is)."""
        if isinstance(stored, dict) and "rows" in stored and "positives" not in stored and len(stored) == 2:
            ((named, count),) = [(k, v) for k, v in stored.items() if k != "rows"]
            if type(count) is int:
                return {"rows": stored["rows"], "positives": count}
        return stored

    @model_validator(mode="after")
    def _at_most_rows(self):
        if self.positives is not None and self.positives > self.rows:
            raise ValueError(f"{self.positives} positive rows of {self.rows}")
        return self


class CodeVersion(_Record):
    """The code a version was trained with (``keel_core.provenance.code_version``)."""

    git_commit: str
    git_dirty: bool
    source: str = "git"  # or KEEL_GIT_COMMIT, in an image built without .git


class ModelRecord(_Record):
    """A trained version: what it learned from, how it did on its test days, and where it came from."""

    description: str = ""  # the use case's, e.g. "Next-day payment volume per terminal"
    model: str  # the estimator, by import path
    baseline: str = ""  # what it was measured beside, e.g. "LogisticRegression (baseline)"
    training_window: TrainingWindow
    label_delay_days: int = Field(ge=0)
    train: Period
    test: Period
    unlabelled_rows: int = Field(default=0, ge=0)  # rows of the window whose label never arrived
    metrics: dict[str, float]  # on the test days
    baseline_metrics: dict[str, float]
    features: tuple[str, ...] = Field(min_length=1)
    feature_set_version: str
    hyper_parameters: dict[str, Any]
    seed: int
    training_seconds: float = Field(ge=0)
    code_version: CodeVersion
    lockfile_sha256: str
    dbt_manifest_sha256: str | None = None
    data_sha256: dict[str, str] = Field(default_factory=dict)  # per period: what reproducing checks
    # The DuckLake snapshot every row was read at (None: a DuckDB file, which keeps no history):
    # `keel reproduce` reads the warehouse as it was then.
    warehouse_snapshot: int | None = Field(default=None, ge=0)
    inputs: tuple[str, ...] = ()  # the assets it learned from, as asset keys
    dagster_run_id: str | None = None
    endpoint: Endpoint | None = None  # what a Bento of this version answers (None: batch only)

    @model_validator(mode="before")
    @classmethod
    def _as_typed(cls, stored: Any) -> Any:
        """A record stored before the record was typed, read as the typed one: its inputs were one
        Markdown string (`a`, `b`), and its metrics kept the test's counts (integers) beside them."""
        if not isinstance(stored, dict):
            return stored
        stored = dict(stored)
        if isinstance(stored.get("inputs"), str):
            stored["inputs"] = tuple(
                key.strip(" `") for key in stored["inputs"].split(",") if key.strip(" `")
            )
        for name in ("metrics", "baseline_metrics"):
            if isinstance(stored.get(name), dict):
                stored[name] = {m: v for m, v in stored[name].items() if not isinstance(v, int | bool)}
        return stored

    def to_json(self) -> dict[str, Any]:
        """The record as plain JSON types, an absent value left out (BentoML's metadata holds no null)."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_json(cls, stored: dict[str, Any]) -> ModelRecord:
        return cls.model_validate(stored)

    def served_endpoint(self) -> Endpoint:
        if self.endpoint is None:
            raise LookupError("this model version records no endpoint: its use case does not serve online")
        return self.endpoint
