{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        partitioned_by=['transaction_date'],
        pre_hook="{{ delete_partition_window('transaction_date') }}",
        on_schema_change='fail',
    )
}}

with

transactions as (
    select * from {{ ref('stg_lake__transactions') }}
    where {{ partition_window('transaction_date') }}
),

final as (
    select
        transaction_id,
        transaction_date,
        transacted_at,
        customer_id,
        terminal_id,
        amount
    from transactions
)

select * from final
