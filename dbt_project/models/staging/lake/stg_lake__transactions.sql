with

source as (
    select * from {{ source('lake', 'raw_transactions') }}
),

renamed as (
    select
        transaction_id,
        customer_id,
        terminal_id,
        amount,
        transacted_at,
        -- "date" is the hive partition column (one folder per day); quoted, as date is also a type
        cast("date" as date) as transaction_date  -- noqa: RF06
    from source
)

select * from renamed
