-- The feature table by hand: one DuckDB script, from the landing zone's Parquet files to
-- transaction_features, with no Keel code. It is the "raw engine" side of `make bench`'s full
-- build: it applies the same contract (parse, nulls, ranges, known ids, first of duplicate ids),
-- the same daily marts and the same windows (velocity included) as Keel, so the two tables must be equal.
-- Placeholders, replaced by benchmarks/data_path.py: $LANDING, $FIRST, $LAST, $MAX_AMOUNT.

create temp table known_customers as
select customer_id from read_parquet('$LANDING/customers/customers.parquet');

create temp table known_terminals as
select terminal_id from read_parquet('$LANDING/terminals/terminals.parquet');

-- The landing files are text: a number parses if it can, and an id must be a whole number (as
-- "12.0" would be); a value that does not parse is null and fails its rule.
create temp macro whole_number(text) as
    case when try_cast(text as double) = floor(try_cast(text as double)) then cast(try_cast(text as double) as bigint) end;

create temp table payments as
with
typed as (
    select
        cast("date" as date) as day,
        file_row_number,
        whole_number(transaction_id) as transaction_id,
        try_cast(transacted_at as timestamp) as transacted_at,
        whole_number(customer_id) as customer_id,
        whole_number(terminal_id) as terminal_id,
        try_cast(amount as double) as amount
    from read_parquet('$LANDING/transactions/*/*.parquet', hive_partitioning = true, file_row_number = true)
    where cast("date" as date) between date '$FIRST' and date '$LAST'
),
ranked as (
    select
        *,
        row_number() over (partition by day, transaction_id order by file_row_number) as occurrence
    from typed
)
select transaction_id, day as transaction_date, transacted_at, customer_id, terminal_id, amount
from ranked
where transaction_id is not null and occurrence = 1
    and transacted_at >= day and transacted_at < day + interval 1 day
    and customer_id in (select customer_id from known_customers)
    and terminal_id in (select terminal_id from known_terminals)
    and amount between 0 and $MAX_AMOUNT;

-- Fraud flags reported on day D are about payments of D - 7 that passed the contract.
create temp table flags as
with
typed as (
    select
        cast("date" as date) as reported_date,
        file_row_number,
        whole_number(transaction_id) as transaction_id,
        try_cast(is_fraud as double) as is_fraud,
        try_cast(fraud_scenario as double) as fraud_scenario
    from read_parquet('$LANDING/fraud_labels/*/*.parquet', hive_partitioning = true, file_row_number = true)
    where cast("date" as date) between date '$FIRST' and date '$LAST'
),
ranked as (
    select
        *,
        row_number() over (partition by reported_date, transaction_id order by file_row_number) as occurrence
    from typed
)
select ranked.transaction_id, ranked.reported_date, ranked.is_fraud = 1 as is_fraud, payments.terminal_id
from ranked
join payments
    on ranked.transaction_id = payments.transaction_id
    and payments.transaction_date = ranked.reported_date - 7
where ranked.occurrence = 1 and ranked.is_fraud in (0, 1) and ranked.fraud_scenario between 0 and 4;

-- Daily marts, then windows over the 1, 7 and 30 days before each payment's day.
create temp table customer_days as
select customer_id, transaction_date as day, count(*) as n, sum(amount) as amount_sum
from payments group by all;

create temp table terminal_days as
select terminal_id, transaction_date as day, count(*) as n from payments group by all;

create temp table terminal_reports as
select terminal_id, reported_date as day, count(*) as labelled, count(*) filter (where is_fraud) as frauds
from flags group by all;

create temp table as_of as
select cast(unnest(range(date '$FIRST', date '$LAST' + 1, interval 1 day)) as date) as as_of_date;

create temp table customer_windows as
select
    as_of_date,
    customer_id,
    sum(n) filter (where day >= as_of_date - 1) as customer_transactions_1d,
    sum(amount_sum) filter (where day >= as_of_date - 1)
    / nullif(sum(n) filter (where day >= as_of_date - 1), 0) as customer_mean_amount_1d,
    sum(n) filter (where day >= as_of_date - 7) as customer_transactions_7d,
    sum(amount_sum) filter (where day >= as_of_date - 7)
    / nullif(sum(n) filter (where day >= as_of_date - 7), 0) as customer_mean_amount_7d,
    sum(n) as customer_transactions_30d,
    sum(amount_sum) / nullif(sum(n), 0) as customer_mean_amount_30d
from as_of
join customer_days on day between as_of_date - 30 and as_of_date - 1
group by all;

create temp table terminal_windows as
with
traffic as (
    select
        as_of_date,
        terminal_id,
        sum(n) filter (where day >= as_of_date - 1) as terminal_transactions_1d,
        sum(n) filter (where day >= as_of_date - 7) as terminal_transactions_7d,
        sum(n) as terminal_transactions_30d
    from as_of
    join terminal_days on day between as_of_date - 30 and as_of_date - 1
    group by all
),
risk as (
    select
        as_of_date,
        terminal_id,
        sum(frauds) filter (where day >= as_of_date - 1)
        / nullif(sum(labelled) filter (where day >= as_of_date - 1), 0) as terminal_fraud_rate_1d,
        sum(frauds) filter (where day >= as_of_date - 7)
        / nullif(sum(labelled) filter (where day >= as_of_date - 7), 0) as terminal_fraud_rate_7d,
        sum(frauds) / nullif(sum(labelled), 0) as terminal_fraud_rate_30d
    from as_of
    join terminal_reports on day between as_of_date - 30 and as_of_date - 1
    group by all
)
select * from traffic full outer join risk using (as_of_date, terminal_id);

-- Velocity: for each payment, the earlier payments (in time, then id) of its card and of its terminal
-- within the day before it, aged in microseconds; then counted and summed per window.
create temp table velocity as
with
pairs as (
    select p.transaction_id, 'customer' as side, p.transacted_at, q.transacted_at as earlier_at,
        q.transaction_id as earlier_id, q.amount
    from payments as p join payments as q on q.customer_id = p.customer_id
    where q.transacted_at between p.transacted_at - interval 1 day and p.transacted_at
    union all
    select p.transaction_id, 'terminal', p.transacted_at, q.transacted_at, q.transaction_id, q.amount
    from payments as p join payments as q on q.terminal_id = p.terminal_id
    where q.transacted_at between p.transacted_at - interval 1 day and p.transacted_at
),
earlier as (
    select transaction_id, side, date_diff('microsecond', earlier_at, transacted_at) as age_us, amount
    from pairs
    where earlier_at < transacted_at or earlier_id < transaction_id
),
per_side as (
    select
        transaction_id,
        side,
        count(*) filter (where age_us <= 600000000) as n_10m,
        count(*) filter (where age_us <= 3600000000) as n_1h,
        count(*) as n_24h,
        coalesce(sum(amount) filter (where age_us <= 600000000), 0.0) as amount_10m,
        coalesce(sum(amount) filter (where age_us <= 3600000000), 0.0) as amount_1h,
        sum(amount) as amount_24h,
        min(age_us) / 1e6 as since_previous
    from earlier
    group by all
)
select
    p.transaction_id,
    coalesce(c.n_10m, 0) as customer_transactions_10m,
    coalesce(c.n_1h, 0) as customer_transactions_1h,
    coalesce(c.n_24h, 0) as customer_transactions_24h,
    coalesce(c.amount_10m, 0.0) as customer_amount_10m,
    coalesce(c.amount_1h, 0.0) as customer_amount_1h,
    coalesce(c.amount_24h, 0.0) as customer_amount_24h,
    coalesce(c.since_previous, 86400.0) as customer_seconds_since_previous,
    coalesce(t.n_10m, 0) as terminal_transactions_10m,
    coalesce(t.n_1h, 0) as terminal_transactions_1h,
    coalesce(t.n_24h, 0) as terminal_transactions_24h,
    coalesce(t.amount_10m, 0.0) as terminal_amount_10m,
    coalesce(t.amount_1h, 0.0) as terminal_amount_1h,
    coalesce(t.amount_24h, 0.0) as terminal_amount_24h,
    coalesce(t.since_previous, 86400.0) as terminal_seconds_since_previous
from payments as p
left join per_side as c on c.transaction_id = p.transaction_id and c.side = 'customer'
left join per_side as t on t.transaction_id = p.transaction_id and t.side = 'terminal';

create or replace table transaction_features as
select
    p.transaction_id,
    cast(p.transaction_date as timestamp) as transaction_date,
    p.transacted_at,
    p.customer_id,
    p.terminal_id,
    c.customer_id is null as customer_is_new,
    t.terminal_id is null as terminal_is_new,
    p.amount,
    cast(isodow(p.transacted_at) >= 6 as tinyint) as is_weekend,
    cast(hour(p.transacted_at) < 6 as tinyint) as is_night,
    coalesce(c.customer_transactions_1d, 0) as customer_transactions_1d,
    coalesce(c.customer_mean_amount_1d, 0.0) as customer_mean_amount_1d,
    coalesce(c.customer_transactions_7d, 0) as customer_transactions_7d,
    coalesce(c.customer_mean_amount_7d, 0.0) as customer_mean_amount_7d,
    coalesce(c.customer_transactions_30d, 0) as customer_transactions_30d,
    coalesce(c.customer_mean_amount_30d, 0.0) as customer_mean_amount_30d,
    coalesce(t.terminal_transactions_1d, 0) as terminal_transactions_1d,
    coalesce(t.terminal_fraud_rate_1d, 0.0) as terminal_fraud_rate_1d,
    coalesce(t.terminal_transactions_7d, 0) as terminal_transactions_7d,
    coalesce(t.terminal_fraud_rate_7d, 0.0) as terminal_fraud_rate_7d,
    coalesce(t.terminal_transactions_30d, 0) as terminal_transactions_30d,
    coalesce(t.terminal_fraud_rate_30d, 0.0) as terminal_fraud_rate_30d,
    v.* exclude (transaction_id),
    case when c.customer_mean_amount_30d > 0 then p.amount / c.customer_mean_amount_30d else 1.0 end
        as amount_to_customer_mean_30d
from payments as p
join velocity as v on v.transaction_id = p.transaction_id
left join customer_windows as c on p.customer_id = c.customer_id and p.transaction_date = c.as_of_date
left join terminal_windows as t on p.terminal_id = t.terminal_id and p.transaction_date = t.as_of_date
order by p.transaction_id;
