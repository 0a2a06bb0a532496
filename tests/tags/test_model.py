"""Adding a tag: keyword or hex, canonical keys, default levels, and every refusal named clearly."""

from __future__ import annotations

import pytest

from dicomlake.errors import InvalidQueryTag
from dicomlake.tags import TagSpec, resolve


def test_standard_tag_by_keyword_or_hex_has_one_key() -> None:
    by_keyword = resolve("PatientWeight")
    assert (by_keyword.key, by_keyword.path, by_keyword.keyword, by_keyword.vr) == (
        "00101030", "00101030", "PatientWeight", "DS")
    assert (by_keyword.level, by_keyword.status, by_keyword.query_status) == ("study", "adding", "enabled")
    for spelling in ("00101030", "(0010,1030)", "0010,1030", "(0010, 1030)"):
        assert resolve(spelling).key == "00101030"
    assert resolve(TagSpec("PatientWeight", vr="ds", level="Instance")).level == "instance"


@pytest.mark.parametrize(("name", "level"), [
    ("PatientWeight", "study"), ("EthnicGroup", "study"), ("Laterality", "series"),
    ("PerformedProcedureStepID", "series"), ("AcquisitionNumber", "instance"), ("KVP", "instance"),
])
def test_default_levels(name: str, level: str) -> None:
    assert resolve(name).level == level


def test_private_tag_key_names_its_creator_and_normalises_the_block() -> None:
    tag = resolve({"tag": "00091110", "vr": "lo", "private_creator": " ACME 1.0 "})
    assert (tag.key, tag.path, tag.keyword, tag.vr, tag.private_creator, tag.level) == (
        "00091010:ACME 1.0", "00091010", None, "LO", "ACME 1.0", "instance")


@pytest.mark.parametrize(("spec", "message"), [
    ("NoSuchKeyword", "neither a DICOM keyword"),
    ("ReferencedImageSequence", "a sequence"),
    ("PixelData", "binary"),
    ({"tag": "PatientWeight", "vr": "LO"}, "does not match the dictionary VR DS"),
    ({"tag": "PatientWeight", "vr": "XX"}, "not a DICOM VR"),
    ({"tag": "PatientWeight", "level": "patient"}, "level 'patient'"),
    ("00020010", "file meta"),
    ("00100000", "group length"),
    ("00080000", "group length"),
    ("00041130", "command/directory"),
    ("PatientID", "already searchable"),
    ("StudyDate", "already searchable"),
    ("ModalitiesInStudy", "computed by search"),
    ("NumberOfStudyRelatedInstances", "computed by search"),
    ("00101234", "not in the DICOM data dictionary"),
    ({"tag": "00091010", "private_creator": "ACME"}, "VR is required"),
    ({"tag": "00091010", "vr": "LO"}, "private creator is required"),
    ({"tag": "00091010", "vr": "OB", "private_creator": "ACME"}, "binary"),
    ({"tag": "00090010", "vr": "LO", "private_creator": "ACME"}, "private creator slot"),
    ({"tag": "00090110", "vr": "LO", "private_creator": "ACME"}, "(gggg,1000)-(gggg,FFFF)"),
    ({"tag": "00071010", "vr": "LO", "private_creator": "ACME"}, "may not be used"),
    ({"tag": "00091010", "vr": "LO", "private_creator": "A\\B"}, "at most 64"),
    ({"tag": "PatientWeight", "private_creator": "ACME"}, "takes no private creator"),
    ({"tag": "ImageType"}, None),  # fine: CS, multi-valued
])
def test_refusals_name_the_problem(spec: object, message: str | None) -> None:
    if message is None:
        assert resolve(spec).vr == "CS"  # type: ignore[arg-type]
        return
    with pytest.raises(InvalidQueryTag, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(spec)  # type: ignore[arg-type]


def test_invalid_query_tag_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        resolve("NoSuchKeyword")
