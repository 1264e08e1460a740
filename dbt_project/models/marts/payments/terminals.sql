with

terminals as (
    select * from {{ ref('stg_lake__terminals') }}
)

select * from terminals
