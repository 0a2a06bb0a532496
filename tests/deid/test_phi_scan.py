"""No value of the source's PHI attributes survives de-identification, anywhere in the output.

For real files (pydicom's shipped test files and generated sample drops): every element at every
depth of the source whose Table E.1-1 action is not K (and every source instance UID) gives a string
that must not occur in any element of the output, at any depth.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from dicomlake.deid import Deidentifier, DeidOptions, profile
from dicomlake.deid.deidentifier import _is_registered_uid, _keeps_uid
from dicomlake.deid.values import clean_text
from dicomlake.samples import generate_sample_drop
from tests.deid.realfiles import shipped_part10_files, walk

KEY = "phi-scan-key"
SHIPPED = shipped_part10_files()
SCANNED_VRS = {"AE", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT", "UI"}
MIN_LENGTH = 4  # shorter strings ("M", "1", "CT") occur everywhere by chance
ALL_OPTIONS = {
    "retain_longitudinal_modified_dates": True,
    "retain_patient_characteristics": True,
    "clean_descriptors": True,
}


def phi_strings(ds: Dataset, options: DeidOptions) -> set[str]:
    found: set[str] = set()
    for elem, _ in walk(ds):
        if elem.VR not in SCANNED_VRS or elem.is_empty:
            continue
        values = [str(v).strip() for v in (elem.value if elem.VM > 1 else [elem.value])]
        if elem.VR == "UI":  # every instance UID must be replaced, listed or not
            if not _keeps_uid(elem.keyword or ""):
                found.update(v for v in values if v and not _is_registered_uid(v))
            continue
        if elem.tag.is_private:
            found.update(values)
            continue
        row = profile.row_for_tag(int(elem.tag))
        if row is None:
            continue
        code = profile.effective_code(row, options.option_columns)
        if code == "K":
            continue
        if code == "C":  # cleaning keeps safe descriptors and shifts dates: what it keeps is allowed
            if elem.VR in ("DA", "DT"):
                found.update(values)
            elif elem.tag == 0x00080201:
                continue  # the timezone is kept with the shifted dates, to read the kept times
            else:
                found.update(v for v in values if clean_text(v) is None)
            continue
        found.update(values)
    return {s for s in found if len(s) >= MIN_LENGTH}


def kept_strings(ds: Dataset, options: DeidOptions) -> list[str]:
    """Values of source attributes the profile keeps (not in the table, or K): a removed attribute
    sharing one of these values (InstitutionName "TOSHIBA" beside Manufacturer "TOSHIBA") does not
    leak through them."""
    kept = []
    for elem, _ in walk(ds):
        if elem.VR in ("SQ", "UI") or elem.tag.is_private or elem.is_empty:
            continue
        row = profile.row_for_tag(int(elem.tag))
        if row is None or profile.effective_code(row, options.option_columns) == "K":
            kept.extend(str(v) for v in (elem.value if elem.VM > 1 else [elem.value]))
    return kept


def output_strings(ds: Dataset) -> list[str]:
    strings = []
    for elem, _ in walk(ds):
        if elem.VR == "SQ" or elem.tag == 0x7FE00010 or elem.is_empty:
            continue
        value = elem.value
        if isinstance(value, bytes):
            strings.append(value.decode("latin-1"))
        else:
            strings.extend(str(v) for v in (value if elem.VM > 1 else [value]))
    for elem in getattr(ds, "file_meta", Dataset()):
        strings.append(str(elem.value))
    return strings


def assert_no_phi(source: Dataset, output: Dataset, options: DeidOptions) -> int:
    kept = "\x00".join(kept_strings(source, options))
    phi = {s for s in phi_strings(source, options) if s not in kept}
    haystack = "\x00".join(output_strings(output))
    leaks = sorted(s for s in phi if s in haystack)
    assert not leaks, f"source PHI found in the output: {leaks}"
    return len(phi)


@pytest.mark.parametrize("mode", ["basic", "all options"])
@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_files_leak_nothing(path: Path, mode: str) -> None:
    options = DeidOptions(project_key=KEY, **(ALL_OPTIONS if mode == "all options" else {}))
    source = pydicom.dcmread(path)
    output = pydicom.dcmread(BytesIO(Deidentifier(options).deidentify_bytes(path.read_bytes())))
    assert_no_phi(source, output, options)


def test_the_scan_finds_what_it_should() -> None:
    """The scan is not vacuous: on CT_small it has PHI to look for, and it sees a planted leak."""
    path = next(p for p in SHIPPED if p.name == "CT_small.dcm")
    source = pydicom.dcmread(path)
    options = DeidOptions(project_key=KEY)
    phi = phi_strings(source, options)
    assert str(source.PatientName) in phi and source.StudyInstanceUID in phi and source.InstitutionName in phi
    output = Deidentifier(options).deidentify(source)
    output.ImageComments = f"scanned by {source.InstitutionName}"  # a kept attribute carrying PHI
    with pytest.raises(AssertionError, match="source PHI found"):
        assert_no_phi(source, output, options)


@pytest.fixture(scope="module")
def sample_drop(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    summary = generate_sample_drop(tmp_path_factory.mktemp("drop"), n_instances=40, seed=7)
    return summary.files


@pytest.mark.parametrize("mode", ["basic", "all options"])
def test_sample_drop_leaks_nothing(sample_drop: list[Path], mode: str) -> None:
    options = DeidOptions(project_key=KEY, **(ALL_OPTIONS if mode == "all options" else {}))
    deid = Deidentifier(options)
    scanned = 0
    for path in sample_drop:
        source = pydicom.dcmread(path)
        output = pydicom.dcmread(BytesIO(deid.deidentify_bytes(path.read_bytes())))
        scanned += assert_no_phi(source, output, options)
    assert scanned > len(sample_drop) * 5  # each sample carries names, IDs, UIDs, dates
