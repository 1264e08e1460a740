"""How the layers after ingestion keep up by themselves: declarative automation.

The landing sensor (``defs/landing.py``) ingests each file that lands; from there every daily asset
downstream follows its inputs: when an input partition is updated (or will be in the same tick),
the asset's matching partitions are requested, once every input is there and none is being
written. Dagster's ``eager()`` does this for the latest day only; Keel's days are those that land,
which may be any day (a late file, a re-delivery, a simulated world), so the latest-window rule is
dropped. Partitions never built are not caught up on by themselves (no "missing" trigger): a
backfill does that, on purpose, rather than a storm of runs on the first tick.

Whether that keeps up is declared too: an asset's freshness policy says how often it is expected to
be updated (``expected_every``).
"""

from datetime import timedelta

import dagster as dg


def follows_upstream(
    ignore: dg.AssetKey | None = None, after_inputs_are_built: bool = False
) -> dg.AutomationCondition:
    """Requested when an input was updated since this partition was last requested or built, once
    no input is missing or in progress. ``ignore``: an input whose updates do not count (a new
    production model does not make every past day's scores or drift stale).

    By default an input requested in the same tick counts as updated (one run carries a day from
    the warehouse to the drift report). An asset that reads a *later* day's partition (a day's
    performance needs the flags reported a week later) is in another run of that tick, which may
    run first: ``after_inputs_are_built`` waits until its inputs are actually materialized.
    """
    if after_inputs_are_built:
        updated = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated())
        missing = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.missing())
    else:
        updated = dg.AutomationCondition.any_deps_updated()
        missing = dg.AutomationCondition.any_deps_missing()
    if ignore is not None:
        updated = updated.ignore(dg.AssetSelection.assets(ignore))
    return (
        updated.since_last_handled()
        & ~missing
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("follows upstream")


def expected_every(hours: float | None) -> dg.FreshnessPolicy | None:
    """An asset expected to be updated at least every ``hours`` (None: no expectation). Dagster's
    freshness daemon marks it late in the UI after that; ``freshness_alerts`` (``defs/alerts.py``)
    sends it. A policy, not a check: it runs in no job, so no job has to leave it out."""
    if hours is None:
        return None
    return dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=hours))
