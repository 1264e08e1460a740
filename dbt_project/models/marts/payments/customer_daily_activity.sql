{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        partitioned_by=['activity_date'],
        pre_hook="{{ delete_partition_window('activity_date') }}",
        on_schema_change='fail',
    )
}}

with

transactions as (
    select * from {{ ref('transactions') }}
    where {{ partition_window('transaction_date') }}
),

daily as (
    select
        customer_id,
        transaction_date as activity_date,
        count(*) as transaction_count,
        sum(amount) as amount_sum
    from transactions
    group by customer_id, transaction_date
)

select * from daily
