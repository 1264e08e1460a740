"""The fraud model behind the API, as its own BentoML service so that its calls are batched.

Every scoring request, one payment or a thousand, reaches ``predict_proba`` here; BentoML's adaptive
batching merges the rows of concurrent requests into one model call (up to ``MAX_BATCH_ROWS`` rows),
waiting for company only as long as recent traffic says it pays, which is what makes many single
requests cheap.

Which model: the Bento argument ``model_tag`` (``bentoml build --arg model_tag=fraud_detector:<v>``),
recorded in the Bento, so that a built Bento always serves the version it was built with.
"""

from __future__ import annotations

import bentoml
import numpy as np
import pandas as pd
from pydantic import BaseModel

from keel.features import FEATURE_NAMES

MAX_BATCH_ROWS = 2000
# Not how long a call waits for company (BentoML adapts that to the traffic) but when it gives up:
# a call whose estimated latency passes this is refused with a 503.
MAX_LATENCY_MS = 500


class BentoArguments(BaseModel):
    model_tag: str  # fraud_detector:<version>, a version in the local BentoML store


ARGUMENTS = bentoml.use_arguments(BentoArguments)


@bentoml.service(name="fraud_model", workers=1, traffic={"timeout": 30})
class FraudModel:
    # At class scope, so that `bentoml build` packs this model into the Bento.
    model_ref = bentoml.models.BentoModel(ARGUMENTS.model_tag)

    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(self.model_ref)  # resolved to the stored model by now

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=MAX_BATCH_ROWS, max_latency_ms=MAX_LATENCY_MS)
    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Fraud probability per row of ``features`` (columns in ``keel.features.FEATURE_NAMES`` order)."""
        # The model's pipeline selects its columns by name, as in training.
        return self.model.predict_proba(pd.DataFrame(features, columns=FEATURE_NAMES))[:, 1]
