-- OMOP Medical Imaging CDM (MI-CDM) IMAGE_OCCURRENCE: one row per DICOM series.
-- Concept ids are 0 ("no matching concept", the OMOP convention): no OMOP vocabulary is shipped, and
-- no modality or anatomic-site concept id could be checked against Athena (the OHDSI vocabulary
-- service) when this was written, so none is written in rather than invented. A deployment that
-- loads the vocabularies maps them from the *_source_value columns (DICOM Modality, BodyPartExamined).
-- Integer ids are the first 60 bits of the MD5 of the DICOM identifier: stable across rebuilds.
select
    ('0x' || substr(md5(se.series_instance_uid), 1, 15))::bigint as image_occurrence_id,
    ('0x' || substr(md5(st.patient_id), 1, 15))::bigint as person_id,
    ('0x' || substr(md5(st.study_instance_uid), 1, 15))::bigint as procedure_occurrence_id,
    null::bigint as visit_occurrence_id,
    0 as anatomic_site_concept_id,
    '{{ var("dicomweb_url") }}/tenants/{{ var("tenant", env_var("DICOMLAKE_TENANT", "default")) }}/dicomweb/studies/'
        || st.study_instance_uid as wadors_uri,
    'blobs/' as local_path,
    coalesce(se.series_date, st.study_date) as image_occurrence_date,
    st.study_instance_uid as image_study_uid,
    se.series_instance_uid as image_series_uid,
    0 as modality_concept_id,
    -- source values and lineage (MI-CDM permits extra columns; these are ours)
    se.modality as modality_source_value,
    se.body_part_examined as anatomic_site_source_value,
    st.patient_id as person_source_value,
    st.accession_number,
    st.study_description,
    se.series_description,
    se.number_of_series_related_instances as number_of_instances
from {{ source('lake', 'series') }} se
join {{ source('lake', 'studies') }} st using (study_instance_uid)
