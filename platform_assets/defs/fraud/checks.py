"""Freshness checks: the raw payments, the features and the prediction log must each have been
updated within a day and a bit. A landing zone that stays empty, a stuck automation or a silent
scoring service shows here (evaluated by ``freshness_checks_sensor``, alerted on like any check)."""

from datetime import timedelta

import dagster as dg

from platform_assets.defs.fraud.models import FEATURES, PAYMENTS
from platform_assets.defs.fraud.serving import PREDICTION_LOG

FRESHNESS_WINDOW = timedelta(hours=26)

freshness_checks = dg.build_last_update_freshness_checks(
    assets=[PAYMENTS, FEATURES, dg.AssetKey(["serving", PREDICTION_LOG])],
    lower_bound_delta=FRESHNESS_WINDOW,
)
# Evaluated on their own sensor, not inside the runs that materialize the assets.
FRESHNESS_CHECKS = dg.AssetSelection.checks(*freshness_checks)
