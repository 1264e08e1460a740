"""The fraud use case as its folder declares it (``platform_assets/defs/fraud/defs.yaml``): its plan
(rows, metrics, gate, drift) and its lifecycle's definitions and asset keys, for tests that check one
part of it without loading the code location."""

from functools import cache

import dagster as dg

from platform_assets.components.plan import Plan, key
from platform_assets.components.use_case import declared, lifecycle

FEATURES, MODEL, EVALUATION, PRODUCTION_MODEL, SCORES = (
    key("fraud", asset) for asset in ("features", "model", "evaluation", "production_model", "scores")
)
DRIFT, LIVE_PERFORMANCE, ONLINE_FEATURES, BENTO, PREDICTION_LOG = (
    key("fraud", asset)
    for asset in ("drift", "live_performance", "online_features", "bento", "prediction_log")
)
LABELS = dg.AssetKey(["warehouse", "fraud_labels"])
PAYMENTS = dg.AssetKey(["lake", "raw_transactions"])
MODEL_NAME = "fraud_detector"


@cache
def plan() -> Plan:
    return Plan.of(*declared()["fraud"])


@cache
def definitions() -> dg.Definitions:
    return lifecycle(*declared()["fraud"])


def sensor(name: str) -> dg.SensorDefinition:
    (found,) = [s for s in definitions().sensors if s.name == name]
    return found


def fit(train, **hyper_parameters):
    """The use case's estimator (its spec's parameters, with ``hyper_parameters`` over them) fitted on
    ``train`` as the platform fits a model: behind the feature selector."""
    from keel_core import judging, learning

    params = {**plan().spec.estimator.params, **hyper_parameters}
    model = learning.pipeline(plan().rows, judging.estimator(plan().estimator, params))
    return model.fit(train, train[plan().rows.label])
