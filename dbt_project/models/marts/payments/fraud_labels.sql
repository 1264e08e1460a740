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
    select * from {{ ref('int_fraud_labels_joined_to_transactions') }}
    where {{ partition_window('reported_date') }}
),

final as (
    select
        transaction_id,
        reported_date,
        transaction_date,
        customer_id,
        terminal_id,
        is_fraud,
        fraud_scenario,
        reported_date - transaction_date as label_delay_days
    from labels
)

select * from final
