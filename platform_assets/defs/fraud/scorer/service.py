"""The fraud use case's scoring API: raw payment facts in, a fraud probability and a decision out.

For each payment the service reads its customer's and terminal's features from the online store,
records it in the store's event windows and reads what its card and terminal did in the minutes and
hours before it, computes the request features with ``transaction_features`` (the module the offline
pipeline uses), and asks ``FraudModel`` (batched) for the probability. Every scored payment goes to
the prediction log.

Endpoints: ``POST /score`` (one payment), ``POST /score_batch`` (up to ``MAX_BATCH``, in order),
``/score_file`` (also a task: a Parquet file of up to ``MAX_FILE_ROWS`` rows in, a Parquet file of
scores out), and BentoML's own ``/livez``, ``/readyz`` (model and online store reachable),
``/metrics`` (Prometheus) and ``/docs.json`` (OpenAPI). Every request is admitted first by
``serving/admission.py`` (bounds, content type, the request schema, the file's footer); a refusal is a
4xx naming the field, or a 503 naming the reason with ``Retry-After``.

Settings: ``serving/settings.py``, read once per process; checked before ``bentoml serve`` binds
its port (the deployment hook), so a misconfigured service never starts. The service is built on
Keel's serving runtime (``serving/``) and packed with it, this folder's scorer and transaction
features and the pure library (``bentofile.yaml``).
"""

from __future__ import annotations

import asyncio
import gc
import io
import logging
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
from bentoml.validators import ContentType
from starlette.responses import JSONResponse

from keel_core import contracts, parsing
from keel_core.circuit_breaker import CircuitBreaker, CircuitOpen
from keel_core.event_windows import Events, open_event_store
from keel_core.online_store import NoSnapshot, StoreUnavailable, open_store
from keel_core.prediction_log import PredictionLog
from platform_assets.defs.fraud.scorer.model import BentoArguments, FraudModel
from platform_assets.defs.fraud.scorer.schemas import (
    MAX_AMOUNT,
    MIN_AMOUNT,
    PAYMENT_COLUMNS,
    Score,
    Transaction,
    Transactions,
)
from platform_assets.defs.fraud.transaction_features import (
    ENTITY_FLAGS,
    FEATURES,
    ONLINE_VIEW,
    PAYMENT_WINDOWS,
    online_feature_values,
)
from serving.admission import Admission, Refused
from serving.auth import ApiKeyAuth
from serving.batching import MicroBatcher
from serving.drain import Drain
from serving.openapi import CorrectedOpenApi
from serving.settings import MAX_FILE_DECODED_BYTES, MAX_FILE_ROWS, Settings, settings
from serving.unavailable import Unavailable

ARGUMENTS = bentoml.use_arguments(BentoArguments)
# As declared in ../defs.yaml: the service's name (its Bentos: fraud_scorer_<namespace>) and its use
# case's (the spool's folder it writes to, which fraud/prediction_log compacts).
SERVICE, USE_CASE = "fraud_scorer", "fraud"
PARQUET = "application/vnd.apache.parquet"
FACTS = list(Transaction.model_fields)
MAX_BATCH_ROWS = 2000  # rows per model call; /score_file reads its file in chunks of this size
# A request still running after this long gets a 504 (BentoML cancels it); past its in-flight limit
# a worker refuses at once with a 503 (serving/admission.py), rather than queueing work.
REQUEST_TIMEOUT_SECONDS = 10
logger = logging.getLogger("keel.serving")
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
store_failures = bentoml.metrics.Counter(
    name="keel_online_store_failures",
    documentation="Lookups that failed or were refused by the open circuit breaker, by reason",
    labelnames=["reason"],
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


def check_payments_file(content: bytes) -> None:
    """Admission of /score_file's upload (``serving/admission.py``): a Parquet file whose footer shows
    the payment columns, in types the lake's contract reads, at most ``MAX_FILE_ROWS`` rows and at
    most ``MAX_FILE_DECODED_BYTES`` once decompressed. Rows are judged one by one while scoring."""

    def refused(status: int, message: str) -> Refused:
        return Refused(
            status, f"payments: {message}", [{"loc": ["payments"], "msg": message, "type": "file"}]
        )

    try:
        footer = pq.ParquetFile(io.BytesIO(content)).metadata
        schema = footer.schema.to_arrow_schema()
    except (pa.ArrowException, OSError) as error:
        raise refused(400, f"not a readable Parquet file ({error})") from None
    if repeated := sorted({name for name in schema.names if schema.names.count(name) > 1}):
        raise refused(400, f"the file repeats the columns {repeated}")
    present = [column for column in FACTS if column in schema.names]
    if missing := [column for column in FACTS if column not in present]:
        raise refused(400, f"the file lacks the columns {missing} (expected {FACTS})")
    try:
        contracts.parse_extract(schema.empty_table().select(FACTS), PAYMENT_COLUMNS)
    except contracts.ContractError as error:
        raise refused(400, str(error).removeprefix("extract: ")) from None
    if footer.num_rows == 0:
        raise refused(400, "the file has no rows")
    if footer.num_rows > MAX_FILE_ROWS:
        raise refused(413, f"{footer.num_rows:,} rows: at most {MAX_FILE_ROWS:,} (split the file)")
    # Parquet counts leaf columns (a nested column has several): each leaf by the column it is in.
    decoded = sum(
        group.column(i).total_uncompressed_size
        for group in (footer.row_group(g) for g in range(footer.num_row_groups))
        for i in range(group.num_columns)
        if group.column(i).path_in_schema.split(".")[0] in FACTS
    )
    if decoded > MAX_FILE_DECODED_BYTES:
        raise refused(
            413, f"its payment columns decompress to {decoded:,} bytes: at most {MAX_FILE_DECODED_BYTES:,}"
        )


@bentoml.service(
    name=SERVICE,
    # One worker per core (in a container: per core of its CPU limit); each batches its own requests.
    workers="cpu_count",
    traffic={"timeout": REQUEST_TIMEOUT_SECONDS},
    # The prediction log records every scored payment and /metrics counts every status; an access log
    # line per request on top cost ~20% of the throughput (BENTOML_CONFIG_OPTIONS turns it back on).
    logging={"access": {"enabled": False}},
    labels={"project": "keel", "model_tag": ARGUMENTS.model_tag},
)
class FraudScorer:
    # At class scope, so that `bentoml build` packs this model into the Bento.
    model_ref = bentoml.models.BentoModel(ARGUMENTS.model_tag)

    @bentoml.on_deployment
    def refuse_to_start_unsafe() -> None:
        """In ``bentoml serve``'s own process, before it binds its port: settings that are missing or
        unsafe (no API keys in staging or prod) stop it there, exiting non-zero with the reason."""
        Settings.from_env()

    def __init__(self) -> None:
        self.settings = settings()
        logging.getLogger("keel").setLevel(
            logging.INFO
        )  # refusals are INFO lines; BentoML's default is WARNING
        self.model_version = ARGUMENTS.model_tag
        self.model = FraudModel(bentoml.sklearn.load_model(self.model_ref))  # resolved by now
        self.store = open_store(
            self.settings.online_store_url,
            self.settings.namespace,
            ONLINE_VIEW,
            self.settings.store_timeout_seconds,
        )
        self.events = open_event_store(
            self.settings.online_store_url,
            self.settings.namespace,
            PAYMENT_WINDOWS,
            self.settings.store_timeout_seconds,
        )
        self.breaker = CircuitBreaker(
            "the online feature store", failures_to_open=3, reset_seconds=self.settings.store_retry_seconds
        )
        # The use case's own folder of the spool, which fraud/prediction_log compacts.
        self.log = PredictionLog(f"{self.settings.prediction_log_uri.rstrip('/')}/{USE_CASE}")
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
        try:
            return self._scores(request, await self.batcher(request))[0]
        except Unavailable as unavailable:
            return self._unavailable("/score", unavailable)

    @bentoml.api(route="/score_batch")
    async def score_batch(self, transactions: Transactions, /) -> list[Score]:
        """Score up to MAX_BATCH payments; the scores come back in the order of the payments."""
        request = Request("score_batch", list(transactions), time.perf_counter())
        try:
            return self._scores(request, await self.batcher(request))
        except Unavailable as unavailable:
            return self._unavailable("/score_batch", unavailable)

    @bentoml.task(route="/score_file")
    async def score_file(
        self, payments: Annotated[Path, ContentType(PARQUET)]
    ) -> Annotated[bytes, ContentType(PARQUET)]:
        """Score a Parquet file of payments: the columns of Transaction (text as the lake takes it, or
        typed), at most MAX_FILE_ROWS rows.

        The result has one row per input row, in order: the facts as sent, ``fraud_probability``,
        ``decision``, ``model_version``, ``feature_snapshot_date``, and ``error``, which names what is
        wrong with a row that could not be scored (its score is then empty). Nothing is dropped.
        """
        source = pq.ParquetFile(payments)  # admitted: a readable footer, the columns, within bounds
        schema = pa.schema([source.schema_arrow.field(column) for column in FACTS] + SCORE_FILE_COLUMNS)
        output = Path(tempfile.mkdtemp(prefix="keel-scores-")) / "scores.parquet"
        try:
            # Reading and judging the rows run in threads: the event loop keeps serving other
            # requests, and the time limit (504) can end the work between batches.
            batches = source.iter_batches(batch_size=MAX_BATCH_ROWS, columns=FACTS)
            with pq.ParquetWriter(output, schema) as writer:
                while (batch := await asyncio.to_thread(next, batches, None)) is not None:
                    writer.write_batch(await self._score_file_batch(batch, schema))
            # Bytes, not the Path: BentoML 1.4 cannot store a file response as a task result
            # (starlette 1.x's FileResponse needs a request method its task serializer does not give).
            return output.read_bytes()
        except Unavailable as unavailable:
            return self._unavailable("/score_file", unavailable)
        except (pa.ArrowException, OSError):  # pages the footer promised but the file lacks
            # Arrow's own message can quote values of the file: not in the answer, not in the log.
            message = "payments: not a readable Parquet file (its pages do not match its footer)"
            logger.info("400 /score_file: %s", message)
            return JSONResponse({"error": message}, status_code=400)
        finally:
            output.unlink(missing_ok=True)
            output.parent.rmdir()

    async def _score_file_batch(self, batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
        """Judge each row as the lake would (``keel_core.contracts``: exact values, the platform's time
        zone, the id and amount ranges), score the valid ones, and name what is wrong with the others."""
        parsed = await asyncio.to_thread(
            contracts.parse_extract,
            pa.Table.from_batches([batch]),
            PAYMENT_COLUMNS,
            self.settings.time_zone,
            "payments",
        )
        facts, reasons = parsed.frame, parsed.reasons
        for column in FACTS:
            low, high = (MIN_AMOUNT, MAX_AMOUNT) if column == "amount" else (contracts.MIN_ID, None)
            values = facts[column]
            for row in np.flatnonzero(values.isna().to_numpy()):
                reasons.setdefault(int(row), {}).setdefault(column, ["missing"])
            if column == "transacted_at":
                continue
            outside = (values < low) | ((values > high) if high is not None else False)
            for row in np.flatnonzero(outside.fillna(False).to_numpy()):
                reasons.setdefault(int(row), {}).setdefault(
                    column,
                    [f"must be from {low:,} to {high:,}" if high is not None else f"must be at least {low}"],
                )
        errors = [
            "; ".join(f"{c}: {text}" for c, texts in reasons[row].items() for text in texts)
            if row in reasons
            else None
            for row in range(batch.num_rows)
        ]
        valid = [row for row in range(batch.num_rows) if row not in reasons]
        rows = facts.iloc[valid]
        payments = [
            Transaction.model_construct(
                transaction_id=int(p.transaction_id),
                transacted_at=p.transacted_at.to_pydatetime(),
                customer_id=int(p.customer_id),
                terminal_id=int(p.terminal_id),
                amount=float(p.amount),
            )
            for p in rows.itertuples(index=False)
        ]
        probability = np.full(batch.num_rows, np.nan)
        decision = np.full(batch.num_rows, None, dtype=object)
        snapshot_day = None
        if payments:
            scored = await self.batcher(Request("score_file", payments, time.perf_counter()))
            probability[valid] = scored.fraud_probability
            decision[valid] = np.where(scored.decline, "decline", "approve")
            snapshot_day = scored.snapshot_day
        scored_rows = np.zeros(batch.num_rows, dtype=bool)
        scored_rows[valid] = True
        columns = [batch.column(name) for name in FACTS] + [
            pa.array(probability, mask=~scored_rows),
            pa.array(decision, type=pa.string()),
            pa.array(np.where(scored_rows, self.model_version, None), type=pa.string()),
            pa.array([snapshot_day if ok else None for ok in scored_rows], type=pa.date32()),
            pa.array(errors, type=pa.string()),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=schema)

    def _unavailable(self, route: str, unavailable: Unavailable) -> JSONResponse:
        return unavailable.response(route, self.settings.store_retry_seconds)

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
        # Wall times of the platform's zone, as the lake stores them (an offset sent is converted).
        zone = self.settings.time_zone
        facts["transacted_at"] = np.array(
            [parsing.wall_time(p.transacted_at, zone) for p in payments], dtype="datetime64[us]"
        )
        try:
            lookup = self.breaker.call(
                self.store.lookup,
                {"customer": facts["customer_id"].tolist(), "terminal": facts["terminal_id"].tolist()},
            )
            # Recorded as scored, so that the next payment of the card or terminal sees this one.
            velocity = self.breaker.call(
                self.events.record,
                Events(
                    facts["transaction_id"],
                    facts["transacted_at"],
                    {"customer": facts["customer_id"], "terminal": facts["terminal_id"]},
                    facts["amount"],
                ),
            )
        except (StoreUnavailable, CircuitOpen, NoSnapshot) as error:
            store_failures.labels(reason=type(error).__name__).inc()
            raise Unavailable(error) from error
        features = online_feature_values(facts["amount"], facts["transacted_at"], lookup.values, velocity)
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
        self.events.close()


# Outermost first: after SIGTERM every answer closes its connection (a lame duck until the worker's
# connections are answered); a caller without a key learns nothing more; the document is served as
# corrected; then every request to a scoring route is admitted (bounded, typed, validated) before
# BentoML reads it.
FILES = {"payments": PARQUET}  # the file fields of the routes, and their media type
FraudScorer.add_asgi_middleware(Drain)
FraudScorer.add_asgi_middleware(ApiKeyAuth)
FraudScorer.add_asgi_middleware(CorrectedOpenApi, service=FraudScorer, media_types=FILES)
FraudScorer.add_asgi_middleware(
    Admission, service=FraudScorer, file_checks={"payments": check_payments_file}, media_types=FILES
)
