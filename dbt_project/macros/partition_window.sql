{#
    Incremental models are built one window of days at a time (min_date, max_date, inclusive);
    without a window a run covers every day, so a plain `dbt build` rebuilds everything. The
    window's rows are deleted first, so re-running any window replaces it exactly.

    A day is taken from, in order: the vars `min_date`/`max_date` (an analyst's `--vars`, the unit
    tests' overrides), the environment variables KEEL_MIN_DATE/KEEL_MAX_DATE (what Dagster sets),
    then the open default. Dagster does not pass vars: dbt re-parses the whole project whenever
    the command line's vars differ from its saved parse, which a new day always does. The
    environment is read only while executing: an env_var() read while parsing is recorded, and
    its models are re-parsed whenever its value changes.
#}

{% macro partition_window(column) -%}
    {{ column }} between cast('{{ window_day("min_date", "1900-01-01") }}' as date)
        and cast('{{ window_day("max_date", "9999-12-31") }}' as date)
{%- endmacro %}

{% macro window_day(name, default) -%}
    {%- if var(name, none) is not none -%}
        {{ var(name) }}
    {%- elif execute -%}
        {{ env_var("KEEL_" ~ name | upper, default) }}
    {%- else -%}
        {{ default }}
    {%- endif -%}
{%- endmacro %}

{% macro delete_partition_window(column) -%}
    {% if is_incremental() -%}
        delete from {{ this }} where {{ partition_window(column) }}
    {%- endif %}
{%- endmacro %}
