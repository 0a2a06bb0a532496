-- Every dated event of every patient, imaging and clinical, in one long table.
with events as (
    select patient_id, null::varchar as fhir_patient_id, 'study' as event_type, study_instance_uid as event_id,
           study_datetime::timestamptz as event_time, study_date as event_date,
           null::varchar as system, null::varchar as code, study_description as display, study_instance_uid
    from {{ source('lake', 'studies') }}
    union all
    select patient_id, fhir_patient_id, 'condition', id, diagnosis_date::timestamptz, diagnosis_date,
           codings[1].system, codings[1].code, coalesce(text, codings[1].display), null
    from {{ source('lake', 'conditions') }}
    union all
    select patient_id, fhir_patient_id, 'medication', resource_type || '/' || id, date, date::date,
           system, code, coalesce(display, text), null
    from {{ source('lake', 'medications') }}
    union all
    select patient_id, fhir_patient_id, 'report', id, coalesce(effective, issued), coalesce(effective, issued)::date,
           system, code, display, study_instance_uid
    from {{ source('lake', 'reports') }}
    union all
    select patient_id, fhir_patient_id, 'observation', id, effective, effective::date, system, code, display, null
    from {{ source('lake', 'observations') }}
    union all
    select patient_id, fhir_patient_id, 'encounter', id, period_start, period_start::date,
           null, type_code, type_display, null
    from {{ source('lake', 'encounters') }}
    union all
    select patient_id, fhir_patient_id, 'procedure', id, performed_start, performed_start::date,
           system, code, display, null
    from {{ source('lake', 'procedures') }}
    union all
    select patient_id, fhir_patient_id, 'document', id, date, date::date, null, type_code,
           coalesce(type_display, description), study_instance_uid
    from {{ source('lake', 'documents') }}
)
select
    coalesce(patient_id, 'fhir:' || fhir_patient_id) as person_key,
    patient_id,
    fhir_patient_id,
    event_type || '/' || event_id as event_key,
    event_type,
    event_id,
    event_time,
    event_date,
    system,
    code,
    display,
    study_instance_uid
from events
where patient_id is not null or fhir_patient_id is not null
