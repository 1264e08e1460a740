"""The fraud use case's retraining sensor (alerts, freshness's too, are the platform's: ``defs/alerts.py``).

- ``retraining_sensor``: asks for one ``train_and_promote`` run when enough days were labelled since
  the last training, or a drift or performance check failed since then. The run goes through the
  promotion gate; a promotion builds the Bento in the same run.
"""

import dagster as dg

from platform_assets import retraining
from platform_assets.defs.fraud.jobs import train_and_promote
from platform_assets.defs.fraud.models import FEATURES, FRAUD_MODEL, LABELS
from platform_assets.defs.fraud.monitoring import (
    DRIFT_CHECK,
    FEATURE_DRIFT,
    LIVE_PERFORMANCE,
    PERFORMANCE_CHECK,
)

retraining_sensor = retraining.retraining_sensor(
    "retraining_sensor",
    train_and_promote,
    retraining.Watched(
        trained=FRAUD_MODEL,
        labels=LABELS,
        drift_check=dg.AssetCheckKey(FEATURE_DRIFT, DRIFT_CHECK),
        performance_check=dg.AssetCheckKey(LIVE_PERFORMANCE, PERFORMANCE_CHECK),
        training_inputs=frozenset({FEATURES, LABELS}),
    ),
)
