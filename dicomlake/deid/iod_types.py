"""The Type (1, 2 or 3, PS3.5 7.4) of the attributes that Table E.1-1 gives a combined code.

A combined code (X/Z, X/D, X/Z/D, Z/D, X/Z/U*) picks its action by the attribute's Type in the IOD
(PS3.15 E.3): remove a Type 3 attribute, empty a Type 2 one, give a Type 1 one a dummy value (or, for
X/Z/U*, keep the sequence with its UIDs replaced). The Types below are those of the modules (PS3.3)
where the attributes occur, with the IOD families where they differ. An attribute missing here, or an
IOD not recognised, gets Type 1: the choice that keeps every IOD conformant without keeping a value.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

__all__ = ["IodContext", "attribute_type"]

_SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."  # Structured Report storage SOP classes
_RT_PREFIX = "1.2.840.10008.5.1.4.1.1.481."  # Radiotherapy storage SOP classes
_WAVEFORM_PREFIX = "1.2.840.10008.5.1.4.1.1.9."  # Waveform storage SOP classes (ECG, audio, ...)

# keyword -> Type in the modules where the attribute normally occurs.
_DEFAULT_TYPES: dict[str, int] = {
    # SOP Common, General Series, General Image, General Equipment, Patient, Study (Type 3 or 2)
    "InstanceCreationDate": 3,
    "InstanceCreationTime": 3,
    "SeriesDate": 3,
    "SeriesTime": 3,
    "AcquisitionDate": 3,
    "AcquisitionTime": 3,
    "AcquisitionDateTime": 3,
    "ContentDate": 2,  # General Image: 2C
    "ContentTime": 2,
    "InstitutionName": 3,
    "InstitutionCodeSequence": 3,
    "StationName": 3,
    "OperatorsName": 3,
    "OperatorIdentificationSequence": 3,
    "DeviceSerialNumber": 3,
    "ProtocolName": 3,
    "AcquisitionDeviceProcessingDescription": 3,
    "DetectorID": 3,
    "DateOfLastDetectorCalibration": 3,
    "TimeOfLastDetectorCalibration": 3,
    "StartAcquisitionDateTime": 3,
    "EndAcquisitionDateTime": 3,
    "ReferencedStudySequence": 3,
    "ReferencedPerformedProcedureStepSequence": 3,
    # 3 in General Image, but 1C/2 in the IODs and functional group macros that derive from or
    # reference other images: kept with every UID replaced (X/Z/U*'s U), which keeps no identity
    # and keeps the instance's references consistent (dciodvfy cross-checks them).
    "ReferencedImageSequence": 1,
    "SourceImageSequence": 1,
    "PatientID": 2,
    "PatientSexNeutered": 2,  # 2C: required for animals
    "ContrastBolusAgent": 2,
    "ContentCreatorName": 2,
    "RequestedProcedureDescription": 3,  # Request Attributes Sequence items
    "AcquisitionContextSequence": 2,
    "WaveformAnnotationSequence": 3,
    "ObservationDateTime": 3,
    # Radiotherapy
    "RTPlanDate": 2,
    "RTPlanTime": 2,
    "TreatmentMachineName": 2,
    "ReviewerName": 2,  # Approval module: 2C
    "TreatmentDate": 2,
    "TreatmentTime": 2,
    "FirstTreatmentDate": 2,
    "MostRecentTreatmentDate": 2,
    "SourceSerialNumber": 3,
}

# Enhanced multi-frame IODs (Multi-frame Functional Groups, Enhanced General Equipment modules).
_ENHANCED_TYPES: dict[str, int] = {
    "ContentDate": 1,
    "ContentTime": 1,
    "AcquisitionDateTime": 1,
    "DeviceSerialNumber": 1,
}

# SR Document General and SR Document Series modules.
_SR_TYPES: dict[str, int] = {
    "ContentDate": 1,
    "ContentTime": 1,
    "ObservationDateTime": 1,
    "ReferencedPerformedProcedureStepSequence": 2,
}

# Waveform Identification module.
_WAVEFORM_TYPES: dict[str, int] = {"ContentDate": 1, "ContentTime": 1, "AcquisitionDateTime": 1}

# RT Series module.
_RT_TYPES: dict[str, int] = {"OperatorsName": 2}


@dataclass(frozen=True)
class IodContext:
    """What the de-identifier knows of the instance's IOD."""

    sop_class_uid: str
    enhanced: bool

    @classmethod
    def of(cls, ds: Dataset) -> IodContext:
        enhanced = "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds
        return cls(sop_class_uid=str(ds.get("SOPClassUID", "")), enhanced=enhanced)

    @property
    def structured_report(self) -> bool:
        return self.sop_class_uid.startswith(_SR_PREFIX)

    @property
    def waveform(self) -> bool:
        return self.sop_class_uid.startswith(_WAVEFORM_PREFIX)

    @property
    def radiotherapy(self) -> bool:
        return self.sop_class_uid.startswith(_RT_PREFIX)


def attribute_type(keyword: str, context: IodContext, nested: bool) -> int:
    """The Type of `keyword` in the instance's IOD; 1 where it is not known.

    `nested` is True inside a sequence item, where Types are those of the sequence's macro: only the
    defaults apply there (no IOD family override).
    """
    if not nested:
        if context.structured_report and keyword in _SR_TYPES:
            return _SR_TYPES[keyword]
        if context.waveform and keyword in _WAVEFORM_TYPES:
            return _WAVEFORM_TYPES[keyword]
        if context.radiotherapy and keyword in _RT_TYPES:
            return _RT_TYPES[keyword]
        if context.enhanced and keyword in _ENHANCED_TYPES:
            return _ENHANCED_TYPES[keyword]
    return _DEFAULT_TYPES.get(keyword, 1)


def resolve_combined(code: str, attribute_type_: int) -> str:
    """The single action (X, Z, D or U) a combined code stands for, given the attribute's Type."""
    if code == "X/Z":
        return "X" if attribute_type_ == 3 else "Z"
    if code == "X/D":
        return "X" if attribute_type_ == 3 else "D"
    if code == "Z/D":
        return "D" if attribute_type_ == 1 else "Z"
    if code == "X/Z/D":
        return {3: "X", 2: "Z"}.get(attribute_type_, "D")
    if code == "X/Z/U*":
        return {3: "X", 2: "Z"}.get(attribute_type_, "U")
    return code
