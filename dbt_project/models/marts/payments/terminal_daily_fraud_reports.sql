-- Fraud flags counted on the day they became known, not the day of the payment: a window
-- over reported_date < D only uses what was known before day D, so features built on this
-- table cannot peek at labels from the future.

{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        partitioned_by=['reported_date'],
        pre_hook="{{ delete_partition_window('reported_date') }}",
        on_schema_change='fail',
    )
}}

with

labels as (
    select * from {{ ref('fraud_labels') }}
    where {{ partition_window('reported_date') }}
),

daily as (
    select
        terminal_id,
        reported_date,
        count(*) as labelled_transaction_count,
        count(*) filter (where is_fraud) as fraud_count
    from labels
    group by terminal_id, reported_date
)

select * from daily
