with

source as (
    select * from {{ source('lake', 'raw_fraud_labels') }}
),

renamed as (
    select
        transaction_id,
        cast(is_fraud as boolean) as is_fraud,
        fraud_scenario,
        -- "date" is the hive partition column (one folder per day); quoted, as date is also a type
        cast("date" as date) as reported_date  -- noqa: RF06
    from source
)

select * from renamed
