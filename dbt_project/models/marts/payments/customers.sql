with

customers as (
    select * from {{ ref('stg_lake__customers') }}
)

select * from customers
