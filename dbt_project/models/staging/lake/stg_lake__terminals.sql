with

source as (
    select * from {{ source('lake', 'terminals') }}
),

renamed as (
    select
        terminal_id,
        x as location_x,
        y as location_y
    from source
)

select * from renamed
