"""Combined codes resolve by the attribute's Type in the instance's IOD (PS3.15 E.3)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomlake.deid.iod_types import IodContext, attribute_type, resolve_combined
from tests.deid.test_table import COMBINED

CT = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
ECG = "1.2.840.10008.5.1.4.1.1.9.1.1"


@pytest.mark.parametrize(("code", "type_"), list(COMBINED))
def test_resolve_combined(code: str, type_: int) -> None:
    assert resolve_combined(code, type_) == COMBINED[(code, type_)]


def test_single_codes_pass_through() -> None:
    assert [resolve_combined(c, 1) for c in "XZDKCU"] == list("XZDKCU")


@pytest.mark.parametrize(
    ("keyword", "sop_class", "enhanced", "nested", "expected"),
    [
        ("ContentDate", CT, False, False, 2),
        ("ContentDate", ENHANCED_MR, True, False, 1),
        ("ContentDate", BASIC_TEXT_SR, False, False, 1),
        ("ContentDate", ECG, False, False, 1),
        ("AcquisitionDateTime", CT, False, False, 3),
        ("AcquisitionDateTime", ECG, False, False, 1),
        ("OperatorsName", CT, False, False, 3),
        ("OperatorsName", RT_PLAN, False, False, 2),
        ("ReferencedPerformedProcedureStepSequence", BASIC_TEXT_SR, False, False, 2),
        ("ReferencedPerformedProcedureStepSequence", CT, False, False, 3),
        ("DeviceSerialNumber", ENHANCED_MR, True, False, 1),
        ("DeviceSerialNumber", ENHANCED_MR, True, True, 3),  # inside a sequence: the macro's Type
        ("SomethingNotListed", CT, False, False, 1),  # unknown: the always-conformant choice
    ],
)
def test_attribute_type(keyword: str, sop_class: str, enhanced: bool, nested: bool, expected: int) -> None:
    assert attribute_type(keyword, IodContext(sop_class, enhanced), nested) == expected


def test_context_of_a_dataset() -> None:
    ds = Dataset()
    ds.SOPClassUID = ENHANCED_MR
    assert not IodContext.of(ds).enhanced
    ds.SharedFunctionalGroupsSequence = Sequence([Dataset()])
    assert IodContext.of(ds).enhanced and not IodContext.of(ds).structured_report
