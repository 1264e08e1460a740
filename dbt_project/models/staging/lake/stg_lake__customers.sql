with

source as (
    select * from {{ source('lake', 'customers') }}
),

renamed as (
    select
        customer_id,
        x as location_x,
        y as location_y,
        mean_amount,
        std_amount,
        mean_transactions_per_day
    from source
)

select * from renamed
