-- Each fraud flag with the payment it is about. A left join: a flag whose payment is missing
-- keeps null payment columns, and the not_null tests downstream fail loudly instead of the
-- flag disappearing.

with

labels as (
    select * from {{ ref('stg_lake__fraud_labels') }}
),

transactions as (
    select * from {{ ref('stg_lake__transactions') }}
),

joined as (
    select
        labels.transaction_id,
        labels.reported_date,
        labels.is_fraud,
        labels.fraud_scenario,
        transactions.transaction_date,
        transactions.customer_id,
        transactions.terminal_id,
        transactions.amount
    from labels
    left join transactions on labels.transaction_id = transactions.transaction_id
)

select * from joined
