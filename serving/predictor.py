"""Any use case's prediction endpoint: an entity's key in, the model's answer for it out.

The Bento argument ``model_tag`` names a registered version; its record carries the use case's
``Endpoint`` (``keel_core.endpoint``): the entity a request names, the features the online store holds
for it, the defaults for an entity the snapshot lacks, and the name of the answer. From those, at
import, this module builds the request and response schemas (so the OpenAPI document states the use
case's own fields), then serves:

- ``POST /predict``: one ``{"<key>": id}``; ``POST /predict_batch``: up to ``MAX_BATCH`` of them, in order.
- ``/livez``, ``/readyz`` (the online store answers with a snapshot), ``/metrics``, ``/docs.json``.

Each answer: the key, the prediction (a probability for a classifier), the model version, the
snapshot's day and whether the entity was new to it. Requests go through the same admission, API
keys, drain and circuit breaker as every Keel service (``serving/``), and every answer is written to
the prediction log under ``<log>/<use case>/``.
"""

import asyncio
import time
import uuid
from datetime import date
from typing import Annotated

import bentoml
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.responses import JSONResponse

from keel_core.circuit_breaker import CircuitBreaker, CircuitOpen
from keel_core.contracts import MAX_ID, MIN_ID
from keel_core.model_record import ModelRecord
from keel_core.online_store import NoSnapshot, StoreUnavailable, open_store
from keel_core.prediction_log import PredictionLog
from serving.admission import Admission
from serving.auth import ApiKeyAuth
from serving.drain import Drain
from serving.openapi import CorrectedOpenApi
from serving.settings import Settings, settings
from serving.unavailable import Unavailable

MAX_BATCH = 1000  # keys per /predict_batch request
REQUEST_TIMEOUT_SECONDS = 10


class PredictorArguments(BaseModel):
    model_tag: str  # <use case>:<version>, a version in the local BentoML store


ARGUMENTS = bentoml.use_arguments(PredictorArguments)
ENDPOINT = ModelRecord.from_json(bentoml.models.get(ARGUMENTS.model_tag).info.metadata).served_endpoint()
KEY = ENDPOINT.key
_FORBID = ConfigDict(extra="forbid")

# The request: exactly the entity's key, an integer in the lake's id range (true/1.0/"1" refused).
Key = create_model(
    f"{ENDPOINT.use_case}_request",
    __config__=_FORBID,
    **{KEY: (Annotated[int, Field(strict=True, ge=MIN_ID, le=MAX_ID)], ...)},
)
Keys = Annotated[list[Key], Field(min_length=1, max_length=MAX_BATCH)]
Answer = create_model(
    f"{ENDPOINT.use_case}_answer",
    **{
        KEY: (int, ...),
        ENDPOINT.response: (float, ...),
        "model_version": (str, ...),
        "feature_snapshot_date": (date, ...),
        f"{ENDPOINT.entity}_is_new": (bool, Field(description="the snapshot had no row: defaults used")),
    },
)


@bentoml.service(
    name=ENDPOINT.use_case,
    workers="cpu_count",
    traffic={"timeout": REQUEST_TIMEOUT_SECONDS},
    logging={"access": {"enabled": False}},
    labels={"project": "keel", "model_tag": ARGUMENTS.model_tag},
)
class Predictor:
    # At class scope, so that `bentoml build` packs this model into the Bento.
    model_ref = bentoml.models.BentoModel(ARGUMENTS.model_tag)

    @bentoml.on_deployment
    def refuse_to_start_unsafe() -> None:
        """Settings that are missing or unsafe stop ``bentoml serve`` before it binds its port."""
        Settings.from_env()

    def __init__(self) -> None:
        self.settings = settings()
        self.model_version = ARGUMENTS.model_tag
        self.model = bentoml.sklearn.load_model(self.model_ref)
        self.store = open_store(
            self.settings.online_store_url,
            self.settings.namespace,
            ENDPOINT.view(),
            self.settings.store_timeout_seconds,
        )
        self.breaker = CircuitBreaker(
            "the online feature store", failures_to_open=3, reset_seconds=self.settings.store_retry_seconds
        )
        self.log = PredictionLog(
            f"{self.settings.prediction_log_uri.rstrip('/')}/{ENDPOINT.use_case}", day_column="scored_at"
        )
        self.defaults = np.asarray(ENDPOINT.default_values())

    @bentoml.api(route="/predict")
    async def predict(self, request: Key, /) -> Answer:
        """The prediction for one entity."""
        return await self._answer("/predict", [request])

    @bentoml.api(route="/predict_batch")
    async def predict_batch(self, requests: Keys, /) -> list[Answer]:
        """Predictions for up to MAX_BATCH entities, in the order asked."""
        return await self._answer("/predict_batch", list(requests))

    async def _answer(self, route: str, requests: list) -> list | JSONResponse:
        try:
            # The store and the model work in a thread: the event loop keeps answering probes.
            answers = await asyncio.to_thread(self._predict, route, [getattr(r, KEY) for r in requests])
        except Unavailable as unavailable:
            return unavailable.response(route, self.settings.store_retry_seconds)
        return answers[0] if route == "/predict" else answers

    def _predict(self, route: str, ids: list[int]) -> list:
        try:
            lookup = self.breaker.call(self.store.lookup, {ENDPOINT.entity: ids})
        except (StoreUnavailable, CircuitOpen, NoSnapshot) as error:
            raise Unavailable(error) from error
        new = np.isnan(lookup.values).any(axis=1)
        values = np.where(np.isnan(lookup.values), self.defaults, lookup.values)
        frame = pd.DataFrame(values, columns=list(ENDPOINT.features))
        if ENDPOINT.task == "classification":
            predictions = self.model.predict_proba(frame)[:, 1]
        else:
            predictions = np.asarray(self.model.predict(frame), dtype="float64")
        snapshot_day = lookup.snapshot.closed_day
        self.log.append(
            {
                KEY: np.asarray(ids, dtype="int64"),
                ENDPOINT.response: predictions,
                f"{ENDPOINT.entity}_is_new": new,
                "model_version": self.model_version,
                "feature_snapshot_date": snapshot_day,
                "endpoint": route,
                "prediction_id": [uuid.uuid4().hex for _ in ids],
                "scored_at": np.datetime64(time.time_ns(), "ns"),
            }
        )
        # model_construct: the values come from the model and the store, not from a caller.
        return [
            Answer.model_construct(
                **{
                    KEY: key,
                    ENDPOINT.response: float(prediction),
                    "model_version": self.model_version,
                    "feature_snapshot_date": snapshot_day,
                    f"{ENDPOINT.entity}_is_new": bool(is_new),
                }
            )
            for key, prediction, is_new in zip(ids, predictions, new, strict=True)
        ]

    def __is_ready__(self) -> bool:
        """Ready when the online store answers with a snapshot (and the breaker lets us ask)."""
        try:
            return self.breaker.call(self.store.current) is not None
        except (StoreUnavailable, CircuitOpen):
            return False

    @bentoml.on_shutdown
    def close(self) -> None:
        self.log.close()
        self.store.close()


Predictor.add_asgi_middleware(Drain)
Predictor.add_asgi_middleware(ApiKeyAuth)
Predictor.add_asgi_middleware(CorrectedOpenApi, service=Predictor, media_types={})
Predictor.add_asgi_middleware(Admission, service=Predictor, file_checks={}, media_types={})
