"""The rows of __NAME__: one per customer and day, from the warehouse's marts.

For the close of day D (``as_of_date``), the features describe the customer's payments up to D and
the label says whether they paid on D + 1. Pure functions of a DuckDB connection to the warehouse.
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
        grid as (select customer_id, as_of_date from customers cross join days)
    """


def features(connection, first: date, last: date) -> pd.DataFrame:
    """The customer's payments on the day, over the week and the four weeks to ``as_of_date``, the
    amount paid over the week, and the days with a payment in the four weeks."""
    return connection.execute(
        f"""
        with {_grid(first, last)},
        activity as (
            select customer_id, activity_date, transaction_count, amount_sum
            from customer_daily_activity
            where activity_date between date '{first}' - {WINDOW_DAYS - 1} and date '{last}'
        )
        select
            grid.customer_id,
            grid.as_of_date,
            coalesce(sum(transaction_count) filter (where activity_date = grid.as_of_date), 0)
                as payments_1d,
            coalesce(sum(transaction_count) filter (where activity_date > grid.as_of_date - 7), 0)
                as payments_7d,
            coalesce(sum(transaction_count), 0) as payments_28d,
            coalesce(sum(amount_sum) filter (where activity_date > grid.as_of_date - 7), 0) as amount_7d,
            count(activity_date) as days_active_28d
        from grid
        left join activity
            on activity.customer_id = grid.customer_id
            and activity_date between grid.as_of_date - {WINDOW_DAYS - 1} and grid.as_of_date
        group by grid.customer_id, grid.as_of_date
        order by grid.as_of_date, grid.customer_id
        """
    ).df()


def labels(connection, first: date, last: date) -> pd.DataFrame:
    """1 if the customer paid on the day after ``as_of_date``, else 0, for days whose next day is built."""
    return connection.execute(
        f"""
        with {_grid(first, last)}
        select
            grid.customer_id,
            grid.as_of_date,
            cast(customer_daily_activity.customer_id is not null as integer) as pays_next_day
        from grid
        left join customer_daily_activity
            on customer_daily_activity.customer_id = grid.customer_id
            and activity_date = grid.as_of_date + 1
        where grid.as_of_date + 1 <= (select max(activity_date) from customer_daily_activity)
        """
    ).df()
