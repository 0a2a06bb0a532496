{# Completed years between a birth date and a day: what "aged 45" means. Same rule as dicomlake.sql. #}
{% macro age_at(birth, on_day) -%}
    (date_diff('year', {{ birth }}, {{ on_day }})
     - case when strftime({{ on_day }}, '%m%d') < strftime({{ birth }}, '%m%d') then 1 else 0 end)
{%- endmacro %}
