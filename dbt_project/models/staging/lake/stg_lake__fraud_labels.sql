with

source as (
    select * from {{ source('lake', 'raw_fraud_labels') }}
),

renamed as (
    select
        transaction_id,
        cast(is_fraud as boolean) as is_fraud,
        fraud_scenario,
        cast("date" as date) as reported_date
    from source
)

select * from renamed
