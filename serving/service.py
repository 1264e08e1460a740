"""Keel's fraud-scoring API: raw payment facts in, a fraud probability and a decision out.

For each payment the service reads its customer's and terminal's features from the online store,
computes the request features with ``keel.features`` (the module the offline pipeline uses), and asks
``FraudModel`` (batched) for the probability. Every scored payment goes to the prediction log.

Endpoints: ``POST /score`` (one payment), ``POST /score_batch`` (up to ``MAX_BATCH``, in order),
``/score_file`` (a task: a Parquet file of any size in, a Parquet file of scores out), and BentoML's
own ``/livez``, ``/readyz`` (model and online store reachable), ``/metrics`` (Prometheus) and
``/docs.json`` (OpenAPI).

Settings, read when a worker starts (``.env.example`` lists them):
``KEEL_ONLINE_STORE_URL`` (``sqlite:////abs/path`` or ``redis://host:port/db``),
``KEEL_PREDICTION_LOG_URI`` (a folder or ``s3://bucket/prefix``), ``KEEL_DECISION_THRESHOLD``
(default 0.5) and ``KEEL_ONLINE_STORE_TIMEOUT_SECONDS`` (default 0.5).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import anyio
import bentoml
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from bentoml.exceptions import InvalidArgument, ServiceUnavailable
from bentoml.validators import ContentType
from pydantic import ValidationError

from keel.features import ENTITY_FLAGS, FEATURE_NAMES, online_features
from keel.online_store import NoSnapshot, StoreUnavailable, open_store
from serving.model import ARGUMENTS, MAX_BATCH_ROWS, FraudModel
from serving.prediction_log import PredictionLog
from serving.schemas import Score, Transaction, Transactions

PARQUET = "application/vnd.apache.parquet"
FACTS = list(Transaction.model_fields)
# What /score_file adds to each row of the file (null where the row could not be scored).
SCORE_FILE_COLUMNS = [
    pa.field("fraud_probability", pa.float64()),
    pa.field("decision", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("feature_snapshot_date", pa.date32()),
    pa.field("error", pa.string()),
]

scored_payments = bentoml.metrics.Counter(
    name="keel_scored_payments",
    documentation="Payments scored, by endpoint and decision",
    labelnames=["endpoint", "decision"],
)
new_entities = bentoml.metrics.Counter(
    name="keel_new_entities",
    documentation="Payments whose customer or terminal the feature snapshot did not know (defaults used)",
    labelnames=["entity"],
)


@dataclass(frozen=True)
class Settings:
    online_store_url: str
    prediction_log_uri: str
    threshold: float
    store_timeout_seconds: float

    @classmethod
    def from_env(cls) -> Settings:
        def required(name: str) -> str:
            value = os.environ.get(name)
            if not value:
                raise RuntimeError(f"{name} is not set: the service cannot start without it (.env.example)")
            return value

        threshold = float(os.environ.get("KEEL_DECISION_THRESHOLD", "0.5"))
        if not 0 < threshold <= 1:
            raise RuntimeError(f"KEEL_DECISION_THRESHOLD={threshold}: expected a probability in (0, 1]")
        return cls(
            online_store_url=required("KEEL_ONLINE_STORE_URL"),
            prediction_log_uri=required("KEEL_PREDICTION_LOG_URI"),
            threshold=threshold,
            store_timeout_seconds=float(os.environ.get("KEEL_ONLINE_STORE_TIMEOUT_SECONDS", "0.5")),
        )


@bentoml.service(
    name="fraud_scorer",
    workers=1,
    traffic={"timeout": 30},
    labels={"project": "keel", "model_tag": ARGUMENTS.model_tag},
)
class FraudScorer:
    fraud_model = bentoml.depends(FraudModel)

    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self.model_version = ARGUMENTS.model_tag
        self.store = open_store(self.settings.online_store_url, self.settings.store_timeout_seconds)
        self.log = PredictionLog(self.settings.prediction_log_uri)

    @bentoml.api(route="/score")
    async def score(self, transaction: Transaction, /) -> Score:
        """Score one payment."""
        scored = await self._score(pd.DataFrame([transaction.model_dump()], columns=FACTS), "score")
        return _scores(scored)[0]

    @bentoml.api(route="/score_batch")
    async def score_batch(self, transactions: Transactions, /) -> list[Score]:
        """Score up to MAX_BATCH payments; the scores come back in the order of the payments."""
        payments = pd.DataFrame([t.model_dump() for t in transactions], columns=FACTS)
        return _scores(await self._score(payments, "score_batch"))

    @bentoml.task(route="/score_file")
    async def score_file(
        self, payments: Annotated[Path, ContentType(PARQUET)]
    ) -> Annotated[bytes, ContentType(PARQUET)]:
        """Score a Parquet file of payments (columns: the fields of Transaction), any size.

        The result has one row per input row, in order: the facts, ``fraud_probability``,
        ``decision``, ``model_version``, ``feature_snapshot_date``, and ``error``, which names what is
        wrong with a row that could not be scored (its score is then empty). Nothing is dropped.
        """
        try:
            source = pq.ParquetFile(payments)
        except (pa.ArrowInvalid, OSError) as error:
            raise InvalidArgument(f"not a readable Parquet file: {error}") from error
        missing = [column for column in FACTS if column not in source.schema_arrow.names]
        if missing:
            raise InvalidArgument(f"the file lacks columns {missing} (expected {FACTS})")
        schema = pa.schema([source.schema_arrow.field(column) for column in FACTS] + SCORE_FILE_COLUMNS)
        output = Path(tempfile.mkdtemp(prefix="keel-scores-")) / "scores.parquet"
        writer = None
        try:
            for batch in source.iter_batches(batch_size=MAX_BATCH_ROWS, columns=FACTS):
                rows = batch.to_pandas()
                chunk = _score_file_chunk(rows, await self._score_valid(rows))
                writer = writer or pq.ParquetWriter(output, schema)
                writer.write_table(pa.Table.from_pandas(chunk, schema=schema, preserve_index=False))
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise InvalidArgument("the file has no rows")
        # Bytes, not the Path: BentoML 1.4 cannot store a file response as a task result (starlette
        # 1.x's FileResponse needs a request method its task serializer does not give).
        try:
            return output.read_bytes()
        finally:
            shutil.rmtree(output.parent, ignore_errors=True)

    async def _score_valid(self, rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
        """Validate each row as /score would; score the valid ones. Returns (scored, errors by row)."""
        errors = pd.Series(None, index=rows.index, dtype="object")
        valid = []
        for index, record in zip(rows.index, rows.to_dict("records"), strict=True):
            try:
                valid.append(Transaction.model_validate(_python_values(record)).model_dump())
            except ValidationError as error:
                errors[index] = "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in error.errors()
                )
        payments = pd.DataFrame(valid, columns=FACTS, index=errors.index[errors.isna()])
        scored = await self._score(payments, "score_file") if len(payments) else payments
        return scored, errors

    async def _score(self, payments: pd.DataFrame, endpoint: str) -> pd.DataFrame:
        """Features, model, decision and log for validated payments; the rows as logged."""
        started = time.perf_counter()
        try:
            lookup = await anyio.to_thread.run_sync(
                self.store.lookup, payments["customer_id"].tolist(), payments["terminal_id"].tolist()
            )
        except (StoreUnavailable, NoSnapshot) as error:
            raise ServiceUnavailable(f"online feature store: {error}") from error
        features = online_features(payments, lookup.entities.set_axis(payments.index))
        probabilities = await self.fraud_model.to_async.predict_proba(
            features[FEATURE_NAMES].to_numpy(dtype="float64")
        )
        scored = payments.join(features.drop(columns="amount"))
        scored["fraud_probability"] = np.asarray(probabilities, dtype="float64")
        scored["decision"] = np.where(
            scored["fraud_probability"] >= self.settings.threshold, "decline", "approve"
        )
        scored["threshold"] = self.settings.threshold
        scored["model_version"] = self.model_version
        scored["feature_snapshot_date"] = lookup.snapshot.closed_day
        scored["endpoint"] = endpoint
        scored["prediction_id"] = [uuid.uuid4().hex for _ in range(len(scored))]
        scored["scored_at"] = pd.Timestamp.now(tz="UTC").tz_localize(None)
        scored["latency_ms"] = (time.perf_counter() - started) * 1000 / max(len(scored), 1)
        self.log.append(scored)
        for decision, count in scored["decision"].value_counts().items():
            scored_payments.labels(endpoint=endpoint, decision=decision).inc(count)
        for entity, flag in ENTITY_FLAGS.items():
            if unknown := int(scored[flag].sum()):
                new_entities.labels(entity=entity).inc(unknown)
        return scored

    def __is_ready__(self) -> bool:
        """Ready when the online store answers with a snapshot (BentoML also probes FraudModel)."""
        try:
            return self.store.current() is not None
        except StoreUnavailable:
            return False

    @bentoml.on_shutdown
    def flush_prediction_log(self) -> None:
        self.log.close()
        self.store.close()


def _scores(scored: pd.DataFrame) -> list[Score]:
    return [
        Score(
            transaction_id=row.transaction_id,
            fraud_probability=row.fraud_probability,
            decision=row.decision,
            threshold=row.threshold,
            model_version=row.model_version,
            feature_snapshot_date=row.feature_snapshot_date,
            customer_is_new=row.customer_is_new,
            terminal_is_new=row.terminal_is_new,
        )
        for row in scored.itertuples(index=False)
    ]


def _python_values(record: dict) -> dict:
    # Parquet gives numpy scalars, NaN and pandas timestamps; pydantic judges plain Python values.
    values = {}
    for key, value in record.items():
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
            values[key] = None
        elif isinstance(value, pd.Timestamp):
            values[key] = value.to_pydatetime()
        elif isinstance(value, np.generic):
            values[key] = value.item()
        else:
            values[key] = value
    return values


def _score_file_chunk(rows: pd.DataFrame, outcome: tuple[pd.DataFrame, pd.Series]) -> pd.DataFrame:
    scored, errors = outcome
    columns = [field.name for field in SCORE_FILE_COLUMNS if field.name != "error"]
    result = rows.join(scored[columns]) if len(scored) else rows.assign(**dict.fromkeys(columns))
    result["error"] = errors
    return result
