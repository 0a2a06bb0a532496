"""DICOMcast: imaging metadata as FHIR R4 resources (Patient, ImagingStudy, Endpoint).

`mapping` holds the pure DICOM JSON -> FHIR functions; `sync` keeps the FHIR output of a tenant
up to date from its change feed (Delta tables + Bulk Data NDJSON files).
"""

from dicomlake.fhir.mapping import MappingError, endpoint, imaging_study, patient, resource_id

__all__ = ["MappingError", "endpoint", "imaging_study", "patient", "resource_id"]
