"""The model registry: every trained version of a model, its stage, and who moved it.

Artifacts are immutable BentoML models (``bentoml.sklearn``). Each is saved to the local BentoML
store (``BENTOML_HOME``, where ``bentoml build`` and ``bentoml serve`` find it) and exported to the
lake, which is the registry of record: any machine that can read the lake (a folder here, S3 in
production) can import any version.

Stages are not written into the artifacts but kept as an append-only log of events beside them, so
a promotion or a rollback is an alias change with who, when and why, and nothing is ever rewritten::

    <lake>/registry/<model>/versions/<version>/model.bentomodel   the exported model
    <lake>/registry/<model>/versions/<version>/metadata.json     its record (keel_core.model_record)
    <lake>/registry/<model>/versions/<version>/model_card.md     written when it is first promoted
    <lake>/registry/<model>/versions/<version>/<attachment>      plots
    <lake>/registry/<model>/events/<time>-<id>.json              one stage change each

A version is ``candidate`` when trained, then ``approved`` or ``refused`` by the promotion gate.
``production`` is the version of the latest promotion; a version that was in production and was
replaced is ``archived``. Only a version the gate approved can ever be promoted.
"""

import json
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from keel_core import model_card
from keel_core.model_record import ModelRecord
from keel_core.provenance import current_user
from resources.lake import Lake, LakeError

MODEL_FILE, METADATA_FILE, CARD_FILE = "model.bentomodel", "metadata.json", "model_card.md"
CANDIDATE, APPROVED, REFUSED, PRODUCTION, ARCHIVED = (
    "candidate",
    "approved",
    "refused",
    "production",
    "archived",
)
RECORDED_STAGES = (CANDIDATE, APPROVED, REFUSED, PRODUCTION)  # archived is derived, never recorded


class RegistryError(LookupError):
    """A model version or a stage change the registry cannot honour."""


@dataclass(frozen=True)
class Event:
    tag: str
    stage: str
    at: str
    by: str
    reason: str
    run_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelVersion:
    tag: str
    created_at: str
    stage: str
    record: ModelRecord
    history: tuple[Event, ...]

    @property
    def version(self) -> str:
        return self.tag.partition(":")[2]

    def verdict(self) -> Event | None:
        """The promotion gate's latest evaluation of this version (approved or refused), if any."""
        verdicts = [event for event in self.history if event.stage in (APPROVED, REFUSED)]
        return verdicts[-1] if verdicts else None

    def approval(self) -> Event | None:
        """The gate's approval of this version, if its latest evaluation approved it."""
        verdict = self.verdict()
        return verdict if verdict is not None and verdict.stage == APPROVED else None


class ModelRegistry(dg.ConfigurableResource):
    """Versions and stages of one model, stored in the lake (see the module docstring). The
    resource a code location binds names no model: each use case asks for its own (``of``)."""

    lake: dg.ResourceDependency[Lake]
    model_name: str = ""  # "" : the namespace's registry, no model yet (``of``, ``models``)

    def of(self, model_name: str) -> "ModelRegistry":
        """The registry of ``model_name``, in the same lake (each use case registers its own model)."""
        return ModelRegistry(lake=self.lake, model_name=model_name)

    def of_tag(self, tag: str) -> "ModelRegistry":
        """The registry of the model ``tag`` is a version of (``<model>:<version>``)."""
        model, colon, version = tag.partition(":")
        if not (model and colon and version):
            raise RegistryError(f"{tag!r} is not a model version (expected <model>:<version>)")
        return self.of(model)

    def models(self) -> list[str]:
        """The models with versions in this lake, by name."""
        return sorted(
            {path.split("/")[1] for path in self.lake.list_files("registry") if path.count("/") > 2}
        )

    # Paths ---------------------------------------------------------------------------------------

    @property
    def _root(self) -> str:
        if not self.model_name:
            raise RegistryError(
                f"the registry at {self.lake.uri}/registry names no model: ask for one with of()"
            )
        return f"registry/{self.model_name}"

    def _version_file(self, tag: str, name: str) -> str:
        model, _, version = tag.partition(":")
        if model != self.model_name or not version:
            raise RegistryError(
                f"{tag!r} is not a version of {self.model_name} (expected {self.model_name}:<version>)"
            )
        return f"{self._root}/versions/{version}/{name}"

    @property
    def uri(self) -> str:
        return f"{self.lake.uri}/{self._root}"

    # Writing -------------------------------------------------------------------------------------

    def register(self, model, record: ModelRecord, run_id: str | None = None) -> str:
        """Save a trained scikit-learn model as a new ``candidate`` version; returns its tag."""
        import bentoml

        metadata = record.to_json()
        labels = {"feature_set": record.feature_set_version, "dagster_run_id": run_id or ""}
        # BentoML's metadata holds no null: a None hyper-parameter (class_weight=None, say) is left out
        # of BentoML's copy; the lake's manifest below, the record of truth, keeps it.
        saved = bentoml.sklearn.save_model(
            self.model_name, model, labels=labels, metadata=_without_nulls(metadata)
        )
        tag = str(saved.tag)
        with tempfile.TemporaryDirectory() as folder:
            exported = bentoml.models.export_model(tag, str(Path(folder, f"{saved.tag.version}.bentomodel")))
            self.lake.write_file(self._version_file(tag, MODEL_FILE), Path(exported).read_bytes())
        manifest = {"tag": tag, "created_at": saved.creation_time.isoformat(), "metadata": metadata}
        self.lake.write_file(self._version_file(tag, METADATA_FILE), json.dumps(manifest, indent=2).encode())
        self.record(tag, CANDIDATE, reason="trained", run_id=run_id)
        return tag

    def record(
        self,
        tag: str,
        stage: str,
        reason: str,
        run_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> Event:
        """Append a stage change for ``tag``."""
        if stage not in RECORDED_STAGES:
            raise RegistryError(f"unknown stage {stage!r}: expected one of {', '.join(RECORDED_STAGES)}")
        self._manifest(tag)  # the version must exist
        event = Event(
            tag=tag,
            stage=stage,
            at=datetime.now(UTC).isoformat(),
            by=current_user(),
            reason=reason,
            run_id=run_id,
            details=json.loads(json.dumps(details or {})),
        )
        # Nanoseconds first: file names sort in the order events happened; the id keeps them unique.
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        self.lake.write_file(f"{self._root}/events/{name}", json.dumps(event.__dict__).encode())
        return event

    def promote(self, tag: str, reason: str, run_id: str | None = None) -> Event:
        """Make ``tag`` the production version and write its model card; returns the promotion.

        Only versions the gate approved can be promoted: a rollback re-promotes an earlier version,
        it never lets a refused or unevaluated one through.
        """
        versions = self.versions()
        version = self._find(versions, tag)
        approval = version.approval()
        if approval is None:
            raise RegistryError(
                f"{tag} was never approved by the promotion gate, or its latest evaluation refused it "
                f"(stage {version.stage}): only approved versions can be promoted"
            )
        previous = next((v for v in versions if v.stage == PRODUCTION), None)
        if previous is not None and previous.tag == tag:
            raise RegistryError(f"{tag} is already in production")
        promotion = self.record(
            tag,
            PRODUCTION,
            reason=reason,
            run_id=run_id,
            details={"replaces": previous.tag if previous else None},
        )
        card = model_card.render(tag, version.record, approval.details, promotion)
        self.attach(tag, CARD_FILE, card.encode())
        return promotion

    def card(self, tag: str) -> str:
        try:
            return self.lake.read_file(self._version_file(tag, CARD_FILE)).decode()
        except LakeError:
            raise RegistryError(f"{tag} has no model card: it was never promoted") from None

    def attach(self, tag: str, name: str, payload: bytes) -> str:
        """Store a file that belongs to a version (a plot, its model card); returns its URI."""
        if name in (MODEL_FILE, METADATA_FILE):
            raise RegistryError(f"{name} is the version's own file and cannot be replaced")
        self._manifest(tag)
        return self.lake.write_file(self._version_file(tag, name), payload)

    def attachment_uri(self, tag: str, name: str) -> str:
        return f"{self.lake.uri}/{self._version_file(tag, name)}"

    def attachment(self, tag: str, name: str) -> bytes:
        try:
            return self.lake.read_file(self._version_file(tag, name))
        except LakeError:
            raise RegistryError(f"{tag} has no {name} in the registry at {self.uri}") from None

    # Reading -------------------------------------------------------------------------------------

    def _manifest(self, tag: str) -> dict[str, Any]:
        try:
            return json.loads(self.lake.read_file(self._version_file(tag, METADATA_FILE)))
        except LakeError:
            raise RegistryError(f"no version {tag} in the registry at {self.uri}") from None

    def _events(self) -> list[Event]:
        return [
            Event(**json.loads(self.lake.read_file(path)))
            for path in self.lake.list_files(f"{self._root}/events")
        ]

    def versions(self) -> list[ModelVersion]:
        """Every version, oldest first, with its current stage and its history."""
        events = self._events()
        promotions = [event.tag for event in events if event.stage == PRODUCTION]
        champion = promotions[-1] if promotions else None
        versions = []
        for path in self.lake.list_files(f"{self._root}/versions"):
            if not path.endswith(f"/{METADATA_FILE}"):
                continue
            manifest = json.loads(self.lake.read_file(path))
            tag = manifest["tag"]
            history = tuple(event for event in events if event.tag == tag)
            if tag == champion:
                stage = PRODUCTION
            elif tag in promotions:
                stage = ARCHIVED
            else:
                stage = history[-1].stage if history else CANDIDATE
            record = ModelRecord.from_json(manifest["metadata"])
            versions.append(ModelVersion(tag, manifest["created_at"], stage, record, history))
        return sorted(versions, key=lambda version: version.created_at)

    def version(self, tag: str) -> ModelVersion:
        return self._find(self.versions(), tag)

    def _find(self, versions: list[ModelVersion], tag: str) -> ModelVersion:
        for version in versions:
            if version.tag == tag:
                return version
        raise RegistryError(f"no version {tag} in the registry at {self.uri}")

    def latest(self) -> ModelVersion:
        versions = self.versions()
        if not versions:
            raise RegistryError(f"no model in the registry at {self.uri}: train one first")
        return versions[-1]

    def champion(self) -> ModelVersion | None:
        """The version in production, or None before the first promotion."""
        for version in self.versions():
            if version.stage == PRODUCTION:
                return version
        return None

    def load(self, tag: str):
        """The scikit-learn model of ``tag``, imported from the lake into the local store if needed."""
        import bentoml

        self._manifest(tag)
        try:
            bentoml.models.get(tag)
        except bentoml.exceptions.NotFound:
            with tempfile.TemporaryDirectory() as folder:
                export = Path(folder, "model.bentomodel")
                export.write_bytes(self.lake.read_file(self._version_file(tag, MODEL_FILE)))
                bentoml.models.import_model(str(export))
        return bentoml.sklearn.load_model(tag)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value
