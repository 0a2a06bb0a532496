"""De-identification: DICOM PS3.15 Annex E, the Basic Application Level Confidentiality Profile with
the Retain Longitudinal Temporal Information with Modified Dates, Retain Patient Characteristics and
Clean Descriptors options; keyed pseudonyms, UIDs and date shifts so de-identified cohorts still join.

    from dicomlake.deid import DeidOptions, Deidentifier
    deid = Deidentifier(DeidOptions(project_key="...", retain_longitudinal_modified_dates=True))
    new_ds = deid.deidentify(ds)            # or deid.deidentify_bytes(part10_bytes)

`dicomlake.deid.profile` holds Table E.1-1 itself (``profile.rows()``).
"""

from dicomlake.deid import profile
from dicomlake.deid.deidentifier import Deidentifier
from dicomlake.deid.options import DeidError, DeidOptions

__all__ = ["DeidError", "DeidOptions", "Deidentifier", "profile"]
