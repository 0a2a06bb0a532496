-- One row per DICOM study: the patient's age at the study, the diagnoses known by then, the reports on it.
with study_series as (
    select study_instance_uid,
           list(distinct body_part_examined order by body_part_examined)
               filter (where body_part_examined is not null) as body_parts,
           list(distinct modality order by modality) filter (where modality is not null) as series_modalities
    from {{ source('lake', 'series') }}
    group by study_instance_uid
),
patient_map as (
    select patient_id, min(fhir_patient_id) as fhir_patient_id, any_value(sex) as sex,
           any_value(birth_date) as birth_date
    from {{ source('lake', 'patients') }}
    where patient_id is not null
    group by patient_id
),
study_conditions as (
    select st.study_instance_uid,
           list(struct_pack(id := c.id, text := c.text, diagnosis_date := c.diagnosis_date,
                            codes := c.codings) order by c.diagnosis_date, c.id) as conditions
    from {{ source('lake', 'studies') }} st
    join {{ source('lake', 'conditions') }} c on c.patient_id = st.patient_id
    where c.diagnosis_date is null or c.diagnosis_date <= st.study_date
    group by st.study_instance_uid
),
study_reports as (
    select study_instance_uid,
           list(struct_pack(id := id, status := status, code := code, display := display,
                            issued := issued, conclusion := conclusion) order by issued, id) as reports
    from {{ source('lake', 'reports') }}
    where study_instance_uid is not null
    group by study_instance_uid
)
select
    st.study_instance_uid,
    st.patient_id,
    pm.fhir_patient_id,
    st.accession_number,
    st.study_date,
    st.study_description,
    st.modalities_in_study,
    coalesce(ss.body_parts, []) as body_parts,
    coalesce(pm.sex, st.patient_sex) as sex,
    coalesce(pm.birth_date, st.patient_birth_date) as birth_date,
    {{ age_at('coalesce(pm.birth_date, st.patient_birth_date)', 'st.study_date') }} as age_at_study,
    st.number_of_study_related_series as number_of_series,
    st.number_of_study_related_instances as number_of_instances,
    coalesce(sc.conditions, []) as conditions,
    len(coalesce(sc.conditions, [])) as condition_count,
    coalesce(sr.reports, []) as reports,
    len(coalesce(sr.reports, [])) as report_count
from {{ source('lake', 'studies') }} st
left join study_series ss using (study_instance_uid)
left join patient_map pm on pm.patient_id = st.patient_id
left join study_conditions sc using (study_instance_uid)
left join study_reports sr using (study_instance_uid)
