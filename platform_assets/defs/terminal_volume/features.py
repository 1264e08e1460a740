"""The rows of the terminal-volume forecast: one per terminal and day, from the warehouse's marts.

For the close of day D (``as_of_date``) the features describe the terminal's payments up to D, and
the label is its payments on D + 1 (0 when it had none). Pure functions of a DuckDB connection.
"""

from datetime import date

import pandas as pd

WINDOW_DAYS = 28


def _grid(first: date, last: date) -> str:
    return f"""
        days as (
            select cast(unnest(range(date '{first}', date '{last}' + 1, interval 1 day)) as date)
                as as_of_date
        ),
        grid as (select terminal_id, as_of_date from terminals cross join days)
    """


def features(connection, first: date, last: date) -> pd.DataFrame:
    """Payments at each terminal over the day, the week and the four weeks to ``as_of_date``, the
    payments of the same weekday a week before the forecast day, and the forecast day's weekday."""
    return connection.execute(
        f"""
        with {_grid(first, last)},
        activity as (
            select terminal_id, activity_date, transaction_count
            from terminal_daily_activity
            where activity_date between date '{first}' - {WINDOW_DAYS - 1} and date '{last}'
        )
        select
            grid.terminal_id,
            grid.as_of_date,
            coalesce(sum(transaction_count) filter (where activity_date = grid.as_of_date), 0)
                as payments_1d,
            coalesce(sum(transaction_count) filter (where activity_date > grid.as_of_date - 7), 0)
                as payments_7d,
            coalesce(sum(transaction_count), 0) / {WINDOW_DAYS}.0 as daily_mean_28d,
            coalesce(sum(transaction_count) filter (where activity_date = grid.as_of_date - 6), 0)
                as same_weekday_last_week,
            isodow(grid.as_of_date + 1) as forecast_weekday
        from grid
        left join activity
            on activity.terminal_id = grid.terminal_id
            and activity_date between grid.as_of_date - {WINDOW_DAYS - 1} and grid.as_of_date
        group by grid.terminal_id, grid.as_of_date
        order by grid.as_of_date, grid.terminal_id
        """
    ).df()


def labels(connection, first: date, last: date) -> pd.DataFrame:
    """Each terminal's payments on the day after ``as_of_date``, for the days whose next day is built."""
    return connection.execute(
        f"""
        with {_grid(first, last)}
        select grid.terminal_id, grid.as_of_date, coalesce(transaction_count, 0) as payments_next_day
        from grid
        left join terminal_daily_activity
            on terminal_daily_activity.terminal_id = grid.terminal_id
            and activity_date = grid.as_of_date + 1
        where grid.as_of_date + 1 <= (select max(activity_date) from terminal_daily_activity)
        """
    ).df()
