"""The automation sensor: it evaluates every asset's condition (``platform_assets/automation.py``)."""

import dagster as dg

from platform_assets.steps import WAREHOUSE_RUNS

# Evaluates every asset's condition. Its own sensor (rather than Dagster's implicit one) so that
# its cadence is set here and it is on by default wherever the daemon runs.
keel_automation = dg.AutomationConditionSensorDefinition(
    "keel_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=10,
    # When a tick asks for several days of one asset (files for several days landed at once), one
    # backfill, which runs each day after the days its windows read; otherwise one run per day.
    emit_backfills=True,
    run_tags=WAREHOUSE_RUNS,  # its runs build the warehouse and what follows it
    description="Requests the partitions of every asset whose automation condition holds: the "
    "warehouse, features, scores, online features and monitoring follow each landed day.",
)
