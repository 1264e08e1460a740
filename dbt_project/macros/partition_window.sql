{#
    Incremental models are built one window of days at a time. Dagster passes the partition
    range as vars (min_date, max_date, inclusive); without vars a run covers every day, so a
    plain `dbt build` rebuilds everything. The window's rows are deleted first, so re-running
    any window replaces it exactly.
#}

{% macro partition_window(column) -%}
    {{ column }} between cast('{{ var("min_date", "1900-01-01") }}' as date)
        and cast('{{ var("max_date", "9999-12-31") }}' as date)
{%- endmacro %}

{% macro delete_partition_window(column) -%}
    {% if is_incremental() -%}
        delete from {{ this }} where {{ partition_window(column) }}
    {%- endif %}
{%- endmacro %}
