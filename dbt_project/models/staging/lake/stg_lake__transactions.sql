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
        cast("date" as date) as transaction_date
    from source
)

select * from renamed
