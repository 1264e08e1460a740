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

import gc
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from bentoml.exceptions import InvalidArgument, ServiceUnavailable
from bentoml.validators import ContentType
from pydantic import TypeAdapter, ValidationError

from keel.circuit_breaker import CircuitBreaker, CircuitOpen
from keel.features import ENTITY_FLAGS, FEATURES, online_feature_values
from keel.online_store import NoSnapshot, StoreUnavailable, open_store
from serving.auth import ApiKeyAuth
from serving.batching import MicroBatcher
from serving.bodies import ReadableBodies
from serving.model import BentoArguments, FraudModel
from serving.openapi import CorrectedOpenApi
from serving.prediction_log import PredictionLog
from serving.schemas import Score, Transaction, Transactions

ARGUMENTS = bentoml.use_arguments(BentoArguments)
PARQUET = "application/vnd.apache.parquet"
FACTS = list(Transaction.model_fields)
MAX_BATCH_ROWS = 2000  # rows per model call; /score_file reads its file in chunks of this size
# Backpressure: past this many requests in flight a worker answers 429 at once instead of queueing
# work it cannot finish in time; a request still running after REQUEST_TIMEOUT_SECONDS gets a 504.
MAX_CONCURRENCY = 256  # per service: BentoML divides it among the workers
REQUEST_TIMEOUT_SECONDS = 10
# What /score_file adds to each row of the file (null where the row could not be scored).
SCORE_FILE_COLUMNS = [
    pa.field("fraud_probability", pa.float64()),
    pa.field("decision", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("feature_snapshot_date", pa.date32()),
    pa.field("error", pa.string()),
]
_FILE_ROWS = TypeAdapter(list[Transaction])

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
store_failures = bentoml.metrics.Counter(
    name="keel_online_store_failures",
    documentation="Lookups that failed or were refused by the open circuit breaker, by reason",
    labelnames=["reason"],
)


@dataclass(frozen=True)
class Settings:
    online_store_url: str
    namespace: str  # whose online features (keys in a shared Redis)
    prediction_log_uri: str
    threshold: float
    store_timeout_seconds: float
    store_retry_seconds: float

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
            namespace=required("KEEL_NAMESPACE"),
            prediction_log_uri=required("KEEL_PREDICTION_LOG_URI"),
            threshold=threshold,
            store_timeout_seconds=float(os.environ.get("KEEL_ONLINE_STORE_TIMEOUT_SECONDS", "0.5")),
            store_retry_seconds=float(os.environ.get("KEEL_ONLINE_STORE_RETRY_SECONDS", "5")),
        )


@dataclass(frozen=True)
class Request:
    """Payments of one HTTP request on their way through the micro-batcher."""

    endpoint: str
    payments: list[Transaction]
    received: float  # time.perf_counter() when the service had the request parsed


@dataclass(frozen=True)
class Scored:
    """The model's answers for one request's payments, as arrays in the payments' order."""

    fraud_probability: np.ndarray
    decline: np.ndarray
    customer_is_new: np.ndarray
    terminal_is_new: np.ndarray
    snapshot_day: date


def _one_openmp_thread() -> None:
    # The trees are evaluated with OpenMP. Called from a thread other than the main one, each of the
    # 300 per-tree parallel regions paid for waking a second thread: a one-row call took 34 ms
    # instead of 2.7. The batch is the parallelism here; the other core parses HTTP.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="openmp")


@bentoml.service(
    name="fraud_scorer",
    # One worker per core (in a container: per core of its CPU limit); each batches its own requests.
    workers="cpu_count",
    traffic={"timeout": REQUEST_TIMEOUT_SECONDS, "max_concurrency": MAX_CONCURRENCY},
    # The prediction log records every scored payment and /metrics counts every status; an access log
    # line per request on top cost ~20% of the throughput (BENTOML_CONFIG_OPTIONS turns it back on).
    logging={"access": {"enabled": False}},
    labels={"project": "keel", "model_tag": ARGUMENTS.model_tag},
)
class FraudScorer:
    # At class scope, so that `bentoml build` packs this model into the Bento.
    model_ref = bentoml.models.BentoModel(ARGUMENTS.model_tag)

    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self.model_version = ARGUMENTS.model_tag
        self.model = FraudModel(bentoml.sklearn.load_model(self.model_ref))  # resolved by now
        self.store = open_store(
            self.settings.online_store_url, self.settings.namespace, self.settings.store_timeout_seconds
        )
        self.breaker = CircuitBreaker(
            "the online feature store", failures_to_open=3, reset_seconds=self.settings.store_retry_seconds
        )
        self.log = PredictionLog(self.settings.prediction_log_uri)
        self.batcher = MicroBatcher(
            self._score_requests,
            rows=lambda request: len(request.payments),
            max_rows=MAX_BATCH_ROWS,
            thread_initializer=_one_openmp_thread,
        )
        # Everything loaded so far (BentoML, pandas, scikit-learn, the model) lives as long as the
        # worker: moved out of the collector's sight, a full collection no longer walks ~10^5 objects
        # in the middle of a request (stalls of 70-130 ms under load before this).
        gc.freeze()

    @bentoml.api(route="/score")
    async def score(self, transaction: Transaction, /) -> Score:
        """Score one payment."""
        request = Request("score", [transaction], time.perf_counter())
        return self._scores(request, await self.batcher(request))[0]

    @bentoml.api(route="/score_batch")
    async def score_batch(self, transactions: Transactions, /) -> list[Score]:
        """Score up to MAX_BATCH payments; the scores come back in the order of the payments."""
        request = Request("score_batch", list(transactions), time.perf_counter())
        return self._scores(request, await self.batcher(request))

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
        rows = 0
        try:
            with pq.ParquetWriter(output, schema) as writer:
                for batch in source.iter_batches(batch_size=MAX_BATCH_ROWS, columns=FACTS):
                    rows += batch.num_rows
                    writer.write_batch(await self._score_file_batch(batch, schema))
            if not rows:
                raise InvalidArgument("the file has no rows")
            # Bytes, not the Path: BentoML 1.4 cannot store a file response as a task result
            # (starlette 1.x's FileResponse needs a request method its task serializer does not give).
            return output.read_bytes()
        finally:
            output.unlink(missing_ok=True)
            output.parent.rmdir()

    async def _score_file_batch(self, batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
        """Validate each row as /score would (types coerced as a Parquet file may store them), score
        the valid ones, and name what is wrong with the others."""
        records = batch.to_pylist()
        errors: list[str | None] = [None] * len(records)
        try:
            payments = _FILE_ROWS.validate_python(records, strict=False)
            valid = list(range(len(records)))
        except ValidationError as error:
            for problem in error.errors(include_url=False):
                row, *field = problem["loc"]
                message = f"{'.'.join(map(str, field)) or 'row'}: {problem['msg']}"
                errors[row] = message if errors[row] is None else f"{errors[row]}; {message}"
            valid = [row for row, problem in enumerate(errors) if problem is None]
            payments = _FILE_ROWS.validate_python([records[row] for row in valid], strict=False)
        probability = np.full(len(records), np.nan)
        decision = np.full(len(records), None, dtype=object)
        snapshot_day = None
        if payments:
            scored = await self.batcher(Request("score_file", payments, time.perf_counter()))
            probability[valid] = scored.fraud_probability
            decision[valid] = np.where(scored.decline, "decline", "approve")
            snapshot_day = scored.snapshot_day
        scored_rows = np.zeros(len(records), dtype=bool)
        scored_rows[valid] = True
        columns = [batch.column(name) for name in FACTS] + [
            pa.array(probability, mask=~scored_rows),
            pa.array(decision, type=pa.string()),
            pa.array(np.where(scored_rows, self.model_version, None), type=pa.string()),
            pa.array([snapshot_day if ok else None for ok in scored_rows], type=pa.date32()),
            pa.array(errors, type=pa.string()),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=schema)

    def _score_requests(self, requests: list[Request]) -> list[Scored]:
        """One model call for the payments of several requests (the micro-batcher calls this in a
        worker thread): features from the online store, the model, the decision, the log."""
        payments = [payment for request in requests for payment in request.payments]
        facts = {
            name: np.fromiter((getattr(p, name) for p in payments), dtype, len(payments))
            for name, dtype in (
                ("transaction_id", "int64"),
                ("customer_id", "int64"),
                ("terminal_id", "int64"),
                ("amount", "float64"),
            )
        }
        facts["transacted_at"] = np.array([p.transacted_at for p in payments], dtype="datetime64[us]")
        try:
            lookup = self.breaker.call(
                self.store.lookup, facts["customer_id"].tolist(), facts["terminal_id"].tolist()
            )
        except (StoreUnavailable, CircuitOpen, NoSnapshot) as error:
            store_failures.labels(reason=type(error).__name__).inc()
            raise ServiceUnavailable(f"online feature store: {error}") from error
        features = online_feature_values(facts["amount"], facts["transacted_at"], lookup.values)
        probability = np.asarray(self.model.predict_proba(features.values), dtype="float64")
        decline = probability >= self.settings.threshold
        ends = np.cumsum([len(request.payments) for request in requests]).tolist()
        spans = list(zip([0, *ends[:-1]], ends, strict=True))  # each request's rows
        self._log(requests, spans, facts, features, probability, decline, lookup.snapshot.closed_day)
        return [
            Scored(
                probability[start:end],
                decline[start:end],
                features.customer_is_new[start:end],
                features.terminal_is_new[start:end],
                lookup.snapshot.closed_day,
            )
            for start, end in spans
        ]

    def _log(self, requests, spans, facts, features, probability, decline, snapshot_day) -> None:
        """Queue the scored rows for the prediction log (columns; the log's writer makes the frame)."""
        now = time.perf_counter()
        sizes = [end - start for start, end in spans]
        columns = {
            "transaction_id": facts["transaction_id"],
            "transacted_at": facts["transacted_at"].astype("datetime64[ns]"),
            "customer_id": facts["customer_id"],
            "terminal_id": facts["terminal_id"],
            **{
                feature.name: features.values[:, i].astype(feature.dtype)
                for i, feature in enumerate(FEATURES)
            },
            ENTITY_FLAGS["customer"]: features.customer_is_new,
            ENTITY_FLAGS["terminal"]: features.terminal_is_new,
            "fraud_probability": probability,
            "decision": np.where(decline, "decline", "approve"),
            "threshold": self.settings.threshold,
            "model_version": self.model_version,
            "feature_snapshot_date": snapshot_day,
            "endpoint": np.repeat([request.endpoint for request in requests], sizes),
            "prediction_id": [uuid.uuid4().hex for _ in range(len(probability))],
            "scored_at": np.datetime64(time.time_ns(), "ns"),
            # Per payment: the request's time in the service, from parsed body to scored.
            "latency_ms": np.repeat([(now - request.received) * 1000 for request in requests], sizes),
        }
        self.log.append(columns)
        for request, (start, end) in zip(requests, spans, strict=True):
            declined = int(decline[start:end].sum())
            scored_payments.labels(endpoint=request.endpoint, decision="decline").inc(declined)
            scored_payments.labels(endpoint=request.endpoint, decision="approve").inc(end - start - declined)
        for entity, flag in ENTITY_FLAGS.items():
            if unknown := int(columns[flag].sum()):
                new_entities.labels(entity=entity).inc(unknown)

    def _scores(self, request: Request, scored: Scored) -> list[Score]:
        # model_construct: the values come from the model and the store, not from a caller.
        return [
            Score.model_construct(
                transaction_id=payment.transaction_id,
                fraud_probability=float(scored.fraud_probability[i]),
                decision="decline" if scored.decline[i] else "approve",
                threshold=self.settings.threshold,
                model_version=self.model_version,
                feature_snapshot_date=scored.snapshot_day,
                customer_is_new=bool(scored.customer_is_new[i]),
                terminal_is_new=bool(scored.terminal_is_new[i]),
            )
            for i, payment in enumerate(request.payments)
        ]

    def __is_ready__(self) -> bool:
        """Ready when the online store answers with a snapshot (and the breaker lets us ask)."""
        try:
            return self.breaker.call(self.store.current) is not None
        except (StoreUnavailable, CircuitOpen):
            return False

    @bentoml.on_shutdown
    def flush_prediction_log(self) -> None:
        self.log.close()
        self.store.close()


FraudScorer.add_asgi_middleware(ApiKeyAuth)
FraudScorer.add_asgi_middleware(CorrectedOpenApi)
FraudScorer.add_asgi_middleware(ReadableBodies)
