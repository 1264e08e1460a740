"""The automation a use case's live performance follows, evaluated by Dagster on a small graph: a day
is judged when its labels arrive, not when it is scored again before they exist."""

import dagster as dg

from platform_assets.automation import follows_upstream

DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-01-10")  # the last: 01-09
LABEL_DAY = dg.TimeWindowPartitionMapping(
    start_offset=1, end_offset=1, allow_nonexistent_upstream_partitions=True
)


@dg.asset(partitions_def=DAYS)
def scores(): ...


@dg.asset(partitions_def=DAYS)
def labels(): ...


@dg.asset(
    partitions_def=DAYS,
    deps=[scores, dg.AssetDep(labels, partition_mapping=LABEL_DAY)],
    automation_condition=follows_upstream(ignore=scores.key, after_inputs_are_built=True),
)
def live_performance(): ...


def test_a_day_is_judged_when_its_labels_arrive_not_when_it_is_scored_again():
    definitions = dg.Definitions(assets=[scores, labels, live_performance])
    with dg.instance_for_test() as instance:

        def tick_after(*assets, day: str, cursor=None):
            dg.materialize(list(assets), partition_key=day, instance=instance)
            result = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=cursor)
            return result.get_requested_partitions(live_performance.key), result.cursor

        _, cursor = tick_after(scores, labels, day="2026-01-08")
        # The last day scored again (a re-delivery): its labels' day is after the calendar, nothing to judge.
        requested, cursor = tick_after(scores, day="2026-01-09", cursor=cursor)
        assert requested == set()
        # The labels of 01-08 arrive with 01-09: 01-08 is judged.
        requested, _ = tick_after(labels, day="2026-01-09", cursor=cursor)
        assert requested == {"2026-01-08"}
