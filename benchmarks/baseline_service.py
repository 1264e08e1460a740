"""The naive baseline the serving benchmark compares Keel's Bento with: what a data scientist writes
first. A plain Starlette app (uvicorn) that, for each request, validates the body with the same
pydantic model, looks the customer and terminal up in the same online store, builds the features
with the same ``transaction_features`` function, and calls the registered pipeline's ``predict_proba`` once.
No batching, no prediction log, no metrics: only the scoring path.

    KEEL_ONLINE_STORE_URL=... KEEL_MODEL_TAG=fraud_detector:<v> \
        uvicorn --app-dir benchmarks baseline_service:app --workers 2

Benchmark code, not Keel: it exists to be measured against (``serving_load.py`` starts it).
"""

import os

import bentoml
import pandas as pd
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keel_core.event_windows import open_event_store
from keel_core.online_store import open_store
from platform_assets.defs.fraud.scorer.schemas import Transaction
from platform_assets.defs.fraud.transaction_features import (
    FEATURE_NAMES,
    ONLINE_VIEW,
    PAYMENT_WINDOWS,
    online_features,
    payment_events,
)

THRESHOLD = 0.5
store = open_store(os.environ["KEEL_ONLINE_STORE_URL"], os.environ["KEEL_NAMESPACE"], ONLINE_VIEW)
events = open_event_store(os.environ["KEEL_ONLINE_STORE_URL"], os.environ["KEEL_NAMESPACE"], PAYMENT_WINDOWS)
model_tag = os.environ["KEEL_MODEL_TAG"]
model = bentoml.sklearn.load_model(model_tag)


async def score(request: Request) -> JSONResponse:
    try:
        payment = Transaction.model_validate_json(await request.body())
    except ValidationError as error:
        return JSONResponse(
            {"error": error.errors(include_url=False, include_context=False)}, status_code=400
        )
    lookup = store.lookup({"customer": [payment.customer_id], "terminal": [payment.terminal_id]})
    payments = pd.DataFrame([payment.model_dump()])
    features = online_features(payments, lookup.entities, events.record(payment_events(payments)))
    probability = float(model.predict_proba(features[FEATURE_NAMES])[0, 1])
    return JSONResponse(
        {
            "transaction_id": payment.transaction_id,
            "fraud_probability": probability,
            "decision": "decline" if probability >= THRESHOLD else "approve",
            "threshold": THRESHOLD,
            "model_version": model_tag,
            "feature_snapshot_date": lookup.snapshot.closed_day.isoformat(),
            "customer_is_new": bool(features["customer_is_new"].iloc[0]),
            "terminal_is_new": bool(features["terminal_is_new"].iloc[0]),
        }
    )


async def livez(request: Request) -> JSONResponse:
    return JSONResponse({})


app = Starlette(routes=[Route("/score", score, methods=["POST"]), Route("/livez", livez)])
