"""What a use case's prediction endpoint takes and answers, recorded with each model version.

A use case that serves online declares the entity a request names (its integer key) and the name of
the answer; the component writes this ``Endpoint`` into the model's record (``keel_core.model_record``)
when it registers a version, so a Bento built from that version knows everything it needs from the
model alone: the request schema, the online feature view to read, the defaults for an entity the
snapshot lacks, and whether to answer a probability or a value. Pure module: no Dagster, no BentoML.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keel_core.online_store import Entity, FeatureView


@dataclass(frozen=True)
class Endpoint:
    use_case: str
    entity: str  # the entity a request names, e.g. "terminal"
    key: str  # its integer key column, e.g. "terminal_id"
    features: tuple[str, ...]  # the model's features, all looked up by the key
    feature_set_version: str
    task: str  # "classification": a probability is answered; "regression": a value
    response: str  # the answer's field name, e.g. "forecast"
    # The features of an entity the snapshot does not hold (new since the snapshot): each feature's
    # value for "no history", flagged in the answer.
    defaults: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in ("classification", "regression"):
            raise ValueError(f"endpoint of {self.use_case}: unknown task {self.task!r}")
        if unknown := sorted(set(self.defaults) - set(self.features)):
            raise ValueError(f"endpoint of {self.use_case}: defaults for unknown features {unknown}")
        taken = {self.key, "model_version", "feature_snapshot_date", f"{self.entity}_is_new"}
        if self.response in taken:
            raise ValueError(f"endpoint of {self.use_case}: the response cannot be named {self.response!r}")
        self.view()  # the names must make a valid feature view

    def view(self) -> FeatureView:
        """The online feature view the endpoint reads (its name is the use case's)."""
        return FeatureView(
            self.use_case, (Entity(self.entity, self.key, self.features),), self.feature_set_version
        )

    def default_values(self) -> list[float]:
        return [float(self.defaults.get(name, 0.0)) for name in self.features]
