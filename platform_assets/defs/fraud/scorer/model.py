"""The fraud model inside the service: which one (a Bento argument), and the fastest faithful call.

Which model: the Bento argument ``model_tag`` (``bentoml build --arg model_tag=fraud_detector:<v>``),
recorded in the Bento, so that a built Bento always serves the version it was built with.

The registry's models are scikit-learn pipelines that pick ``FEATURE_NAMES`` from a frame by name,
then classify. The service already holds the features as a matrix in that order, and building a
one-row DataFrame for the pipeline's column selector costs more than the trees themselves (about
1.3 of 3.5 ms here). So when the steps before the classifier leave such a matrix unchanged, checked
on probe rows when the model loads, the service calls the classifier directly; any other model
(a scaler in front, say) goes through its whole pipeline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel

from platform_assets.defs.fraud.transaction_features import FEATURE_NAMES


class BentoArguments(BaseModel):
    model_tag: str  # fraud_detector:<version>, a version in the local BentoML store


def _probe_rows() -> np.ndarray:
    rng = np.random.default_rng(0)
    scales = rng.uniform(0.5, 500, size=len(FEATURE_NAMES))
    return np.vstack([np.zeros(len(FEATURE_NAMES)), rng.uniform(0, 1, (64, len(FEATURE_NAMES))) * scales])


class FraudModel:
    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.classifier = self._classifier_if_steps_are_identity(pipeline)

    @staticmethod
    def _classifier_if_steps_are_identity(pipeline):
        steps = getattr(pipeline, "steps", None)
        if not steps or len(steps) < 2:
            return None
        probe = _probe_rows()
        preprocessed = pipeline[:-1].transform(pd.DataFrame(probe, columns=FEATURE_NAMES))
        if not (isinstance(preprocessed, np.ndarray) and np.array_equal(preprocessed, probe)):
            return None
        classifier = pipeline[-1]
        whole = pipeline.predict_proba(pd.DataFrame(probe, columns=FEATURE_NAMES))
        return classifier if np.array_equal(classifier.predict_proba(probe), whole) else None

    def predict_proba(self, values: np.ndarray) -> np.ndarray:
        """Fraud probability per row of ``values`` (columns in ``FEATURE_NAMES`` order)."""
        if self.classifier is not None:
            return self.classifier.predict_proba(values)[:, 1]
        return self.pipeline.predict_proba(pd.DataFrame(values, columns=FEATURE_NAMES))[:, 1]
