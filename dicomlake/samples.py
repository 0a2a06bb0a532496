"""Deterministic, realistic DICOM sample data built from the test files shipped in the pydicom wheel.

Every generated instance is a valid DICOM Part-10 file (Explicit VR Little Endian) derived from one
modality template (CT, MR, CR, US, OT/secondary capture), with consistent patient / study / series /
instance attributes, deterministic UIDs and, for CT and MR, a regular slice geometry.

Speed: each template is cleaned and pre-encoded once; per series the patient, study and series
elements are encoded once and spliced between the static chunks; per instance only the File Meta
Information and four small elements (SOPInstanceUID, InstanceNumber, ImagePositionPatient,
SliceLocation) are encoded. The result is byte-identical to ``pydicom.dcmwrite(...,
enforce_file_format=True)`` of the same dataset (the tests check this).

Nothing here touches the network or the wall clock: the same seed gives byte-identical files.
"""

from __future__ import annotations

import datetime
import gzip
import random
import shutil
import struct
import uuid
import zlib
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

__all__ = [
    "BAD_INPUT_KINDS",
    "FIRST_STUDY_DATE",
    "LAST_STUDY_DATE",
    "TEST_FILES",
    "BadInput",
    "SamplePatient",
    "SampleStudy",
    "SampleSummary",
    "generate_bad_inputs",
    "generate_sample_drop",
    "plan_studies",
    "sample_patients",
]

TEST_FILES: Path = Path(pydicom.__file__).parent / "data" / "test_files"
"""Directory of the DICOM test files inside the installed pydicom wheel (never fetched from the net)."""

FIRST_STUDY_DATE = datetime.date(2016, 1, 1)
LAST_STUDY_DATE = datetime.date(2026, 10, 31)  # never in the future relative to 2026-11-01

IMPLEMENTATION_CLASS_UID = "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, "dicomlake:samples").int)
IMPLEMENTATION_VERSION_NAME = "DICOMLAKE_SMPL1"
_UID_NS = "dicomlake.samples"

# --------------------------------------------------------------------------------------------
# Public data classes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplePatient:
    """A synthetic patient."""

    patient_id: str  # e.g. "DL-000001"
    family_name: str
    given_name: str
    sex: str  # "M" | "F" | "O"
    birth_date: datetime.date

    @property
    def patient_name(self) -> str:
        """DICOM PN value, ``FAMILY^GIVEN``."""
        return f"{self.family_name}^{self.given_name}"

    @property
    def specific_character_set(self) -> str | None:
        """SpecificCharacterSet used for this patient's instances (None: element absent)."""
        return _charset_for(self)


@dataclass(frozen=True)
class SampleStudy:
    """One planned study; every series of it has ``instances_per_series`` instances."""

    patient: SamplePatient
    study_instance_uid: str
    accession_number: str  # e.g. "ACC00000123"
    study_date: datetime.date
    study_time: str  # "HHMMSS"
    modality: str  # CT | MR | CR | US | OT
    description: str
    body_part: str  # DICOM BodyPartExamined
    series_count: int
    instances_per_series: int

    @property
    def n_instances(self) -> int:
        """Number of instances in the study."""
        return self.series_count * self.instances_per_series


@dataclass(frozen=True)
class SampleSummary:
    """What :func:`generate_sample_drop` wrote."""

    dest: Path
    n_instances: int
    n_studies: int
    n_series: int
    n_patients: int
    files: list[Path]


@dataclass(frozen=True)
class BadInput:
    """One bad input file and the error code ingest is expected to report for it."""

    path: Path
    kind: str
    expected_code: str


# --------------------------------------------------------------------------------------------
# Patients
# --------------------------------------------------------------------------------------------

_FAMILY_ASCII = (
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Hill",
    "Green",
    "Adams",
    "Baker",
    "Nelson",
    "Carter",
    "Mitchell",
    "Perez",
    "Roberts",
    "Turner",
    "Phillips",
    "Campbell",
    "Parker",
    "Evans",
    "Edwards",
    "Collins",
    "Stewart",
    "Morris",
    "Murphy",
    "Cook",
    "Rogers",
    "Bailey",
    "Cooper",
    "Okafor",
    "Nguyen",
    "Kim",
    "Patel",
    "Singh",
    "O'Brien",
    "Smith-Jones",
    "van der Berg",
    "MacDonald",
)
_GIVEN_ASCII = {
    "M": (
        "James",
        "John",
        "Robert",
        "Michael",
        "William",
        "David",
        "Richard",
        "Joseph",
        "Thomas",
        "Charles",
        "Daniel",
        "Matthew",
        "Anthony",
        "Mark",
        "Paul",
        "Steven",
        "Andrew",
        "Kevin",
        "Brian",
        "George",
        "Omar",
        "Ravi",
        "Chidi",
        "Hiro",
    ),
    "F": (
        "Mary",
        "Patricia",
        "Jennifer",
        "Linda",
        "Elizabeth",
        "Barbara",
        "Susan",
        "Jessica",
        "Sarah",
        "Karen",
        "Nancy",
        "Lisa",
        "Betty",
        "Margaret",
        "Sandra",
        "Ashley",
        "Emily",
        "Donna",
        "Michelle",
        "Carol",
        "Amara",
        "Priya",
        "Mei",
        "Anne Marie",
    ),
}
# Latin-1 (ISO_IR 100) names.
_FAMILY_LATIN1 = (
    "Müller",
    "Ñúñez",
    "Øre",
    "Sørensen",
    "Gonçalves",
    "Lefèvre",
    "Åström",
    "Jäger",
    "Peña",
    "Fernández",
    "Dupré",
    "Weiß",
    "Ólafsdóttir",
    "Brontë",
    "Çelik",
    "Häkkinen",
)
_GIVEN_LATIN1 = {
    "M": ("José", "François", "Jürgen", "Søren", "Björn", "Andrés", "Ángel", "Raúl"),
    "F": ("Zoë", "Inés", "Renée", "Åsa", "Chloé", "Mónica", "Jóhanna", "Léa"),
}
# Names that need UTF-8 (ISO_IR 192): (family, given, sex).
_NAMES_UTF8 = (
    ("Παπαδόπουλος", "Γιώργος", "M"),
    ("Οικονόμου", "Ελένη", "F"),
    ("山田", "太郎", "M"),
    ("佐藤", "花子", "F"),
    ("Иванов", "Сергей", "M"),
    ("Смирнова", "Анна", "F"),
    ("王", "秀英", "F"),
    ("李", "伟", "M"),
    ("Wałęsa", "Łukasz", "M"),
    ("Yılmaz", "Ayşe", "F"),
    ("김", "민준", "M"),
    ("Nguyễn", "Thị Hương", "F"),
)


def _is_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _charset_for(patient: SamplePatient) -> str | None:
    """Deterministic SpecificCharacterSet for a patient: 'ISO_IR 192' if the name needs it,
    else mostly 'ISO_IR 100', sometimes 'ISO_IR 192' or absent (default repertoire) for ASCII."""
    name = patient.patient_name
    if not _is_latin1(name):
        return "ISO_IR 192"
    if not name.isascii():
        return "ISO_IR 100"
    bucket = zlib.crc32(patient.patient_id.encode("ascii")) % 20
    if bucket < 2:
        return None
    if bucket < 5:
        return "ISO_IR 192"
    return "ISO_IR 100"


def _add_years(d: datetime.date, years: int) -> datetime.date:
    try:
        return d.replace(year=d.year + years)
    except ValueError:  # 29 February
        return d.replace(year=d.year + years, day=28)


def _age_years(birth: datetime.date, on: datetime.date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


# Birth dates keep every study age within 1..95: born on/before 2014-12-31 means >= 1 year old on
# 2016-01-01; born after 1930-11-01 means <= 95 on 2026-10-31.
_BIRTH_MIN = datetime.date(1930, 11, 2)
_BIRTH_MAX = datetime.date(2014, 12, 31)


def sample_patients(n_patients: int, seed: int = 0) -> list[SamplePatient]:
    """Return ``n_patients`` deterministic synthetic patients (IDs ``DL-nnnnnn``, offset by seed).

    The first three patients are ASCII, Latin-1 and UTF-8 named so small samples still exercise
    character-set decoding; after that about 15 % are Latin-1 and 8 % need UTF-8.
    """
    if n_patients < 0 or seed < 0:
        raise ValueError("n_patients and seed must be >= 0")
    rng = random.Random(f"{_UID_NS}|patients|{seed}")
    out: list[SamplePatient] = []
    for i in range(n_patients):
        r = rng.random()
        category = (
            ("ascii", "latin1", "utf8")[i]
            if i < 3
            else ("utf8" if r < 0.08 else "latin1" if r < 0.23 else "ascii")
        )
        sex = "O" if rng.random() < 0.02 else rng.choice("MF")
        given_sex = sex if sex != "O" else rng.choice("MF")
        if category == "utf8":
            family, given, given_sex = rng.choice(_NAMES_UTF8)
            if sex != "O":
                sex = given_sex
        elif category == "latin1":
            family = rng.choice(_FAMILY_LATIN1)
            given = rng.choice(_GIVEN_LATIN1[given_sex] + _GIVEN_ASCII[given_sex][:6])
        else:
            family = rng.choice(_FAMILY_ASCII)
            given = rng.choice(_GIVEN_ASCII[given_sex])
        # Imaging populations skew old: ~12 % children, the rest triangular around 66 (ages
        # are on 2026-10-31; the window keeps every study age within 1..95).
        children = rng.random() < 0.12
        age = rng.uniform(12.0, 18.8) if children else rng.triangular(19.0, 95.9, 66.0)
        birth = LAST_STUDY_DATE - datetime.timedelta(days=int(age * 365.2425))
        birth = min(max(birth, _BIRTH_MIN), _BIRTH_MAX)
        out.append(
            SamplePatient(
                patient_id=f"DL-{seed * 1_000_000 + i + 1:06d}",
                family_name=family,
                given_name=given,
                sex=sex,
                birth_date=birth,
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# Study plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Protocol:
    modality: str
    weight: int
    description: str
    body_part: str
    series_count: tuple[int, int]
    instances: tuple[int, int]
    # (SeriesDescription, orientation "AX"/"SAG"/"COR" or "" for projection images, thickness mm)
    series: tuple[tuple[str, str, float], ...]


_PROTOCOLS: tuple[_Protocol, ...] = (
    _Protocol(
        "CT",
        8,
        "CT CHEST W CONTRAST",
        "CHEST",
        (2, 4),
        (60, 150),
        (
            ("AXIAL 5MM", "AX", 5.0),
            ("AXIAL 1.25MM LUNG", "AX", 1.25),
            ("AXIAL 2.5MM MEDIASTINUM", "AX", 2.5),
            ("AXIAL 0.625MM", "AX", 0.625),
        ),
    ),
    _Protocol(
        "CT",
        3,
        "CT CHEST WO CONTRAST LOW DOSE",
        "CHEST",
        (1, 2),
        (60, 140),
        (("AXIAL 1MM LUNG", "AX", 1.0), ("AXIAL 3MM", "AX", 3.0)),
    ),
    _Protocol(
        "CT",
        6,
        "CT ABDOMEN PELVIS W CONTRAST",
        "ABDOMEN",
        (2, 4),
        (80, 150),
        (
            ("AXIAL 5MM PORTAL VENOUS", "AX", 5.0),
            ("AXIAL 2.5MM", "AX", 2.5),
            ("AXIAL 5MM DELAYED", "AX", 5.0),
            ("AXIAL 1.25MM", "AX", 1.25),
        ),
    ),
    _Protocol(
        "CT",
        5,
        "CT HEAD WO CONTRAST",
        "HEAD",
        (1, 3),
        (30, 60),
        (("AXIAL 5MM BRAIN", "AX", 5.0), ("AXIAL 2.5MM BONE", "AX", 2.5), ("AXIAL 0.625MM", "AX", 0.625)),
    ),
    _Protocol(
        "MR",
        6,
        "MR BRAIN W WO CONTRAST",
        "HEAD",
        (4, 7),
        (20, 40),
        (
            ("T1 SAG", "SAG", 5.0),
            ("T2 AX", "AX", 5.0),
            ("FLAIR AX", "AX", 5.0),
            ("DWI AX", "AX", 5.0),
            ("T1 AX POST", "AX", 5.0),
            ("T1 COR POST", "COR", 5.0),
            ("SWI AX", "AX", 3.0),
        ),
    ),
    _Protocol(
        "MR",
        4,
        "MR KNEE WO CONTRAST",
        "KNEE",
        (4, 6),
        (20, 36),
        (
            ("PD SAG", "SAG", 3.5),
            ("PD FS COR", "COR", 3.5),
            ("T2 FS AX", "AX", 4.0),
            ("T1 COR", "COR", 3.5),
            ("PD FS SAG", "SAG", 3.0),
            ("T2 FS SAG", "SAG", 3.0),
        ),
    ),
    _Protocol(
        "MR",
        3,
        "MR LUMBAR SPINE WO CONTRAST",
        "LSPINE",
        (3, 5),
        (15, 24),
        (
            ("T1 SAG", "SAG", 4.0),
            ("T2 SAG", "SAG", 4.0),
            ("STIR SAG", "SAG", 4.0),
            ("T2 AX", "AX", 4.0),
            ("T1 AX", "AX", 4.0),
        ),
    ),
    _Protocol("CR", 14, "XR CHEST 2 VIEWS", "CHEST", (1, 1), (2, 2), (("CHEST PA LAT", "", 0.0),)),
    _Protocol(
        "CR", 7, "XR CHEST 1 VIEW PORTABLE", "CHEST", (1, 1), (1, 1), (("CHEST AP PORTABLE", "", 0.0),)
    ),
    _Protocol("CR", 6, "XR KNEE 3 VIEWS", "KNEE", (1, 1), (3, 3), (("KNEE", "", 0.0),)),
    _Protocol("CR", 4, "XR HAND 3 VIEWS", "HAND", (1, 1), (3, 3), (("HAND", "", 0.0),)),
    _Protocol(
        "CR",
        4,
        "XR CERVICAL SPINE 2 VIEWS",
        "CSPINE",
        (1, 2),
        (1, 2),
        (("CERVICAL AP", "", 0.0), ("CERVICAL LAT", "", 0.0)),
    ),
    _Protocol(
        "US", 7, "US ABDOMEN COMPLETE", "ABDOMEN", (1, 2), (1, 3), (("ABDOMEN", "", 0.0), ("LIVER", "", 0.0))
    ),
    _Protocol(
        "US",
        4,
        "US KIDNEYS BILATERAL",
        "KIDNEY",
        (1, 2),
        (1, 3),
        (("RIGHT KIDNEY", "", 0.0), ("LEFT KIDNEY", "", 0.0)),
    ),
    _Protocol("US", 3, "US NECK SOFT TISSUE", "NECK", (1, 1), (1, 3), (("NECK", "", 0.0),)),
    _Protocol(
        "OT", 3, "CT 3D RECONSTRUCTION CHEST", "CHEST", (1, 1), (1, 3), (("3D VOLUME RENDERING", "", 0.0),)
    ),
    _Protocol(
        "OT", 2, "CT 3D RECONSTRUCTION HEAD", "HEAD", (1, 1), (1, 2), (("3D VOLUME RENDERING", "", 0.0),)
    ),
)
_PROTOCOL_BY_KEY = {(p.modality, p.description): p for p in _PROTOCOLS}
_VOLUME_MODALITIES = frozenset({"CT", "MR"})


def _scaled_range(lo: int, hi: int, scale: float) -> tuple[int, int]:
    lo2 = max(3, round(lo * scale))
    return lo2, max(lo2, round(hi * scale))


def plan_studies(n_instances: int, seed: int = 0, n_patients: int | None = None) -> list[SampleStudy]:
    """Return a deterministic study plan whose instance counts add up to exactly ``n_instances``.

    Studies are sorted by date/time, dated 2016-01-01..2026-10-31, spread over ``n_patients``
    patients (default: about three studies per patient), with a realistic modality mix; CT/MR
    series get more slices as ``n_instances`` grows (full size from 5,000 instances).
    """
    if n_instances < 0 or seed < 0:
        raise ValueError("n_instances and seed must be >= 0")
    if n_patients is not None and n_patients < 1:
        raise ValueError("n_patients must be >= 1")
    if n_instances == 0:
        return []
    rng = random.Random(f"{_UID_NS}|plan|{seed}")
    scale = min(1.0, n_instances / 5000)
    weights = [p.weight for p in _PROTOCOLS]

    shapes: list[tuple[_Protocol, int, int]] = []
    remaining = n_instances
    while remaining > 0:
        proto = rng.choices(_PROTOCOLS, weights)[0]
        sc = min(rng.randint(*proto.series_count), len(proto.series))
        lo, hi = proto.instances
        if proto.modality in _VOLUME_MODALITIES:
            lo, hi = _scaled_range(lo, hi, scale)
        ips = rng.randint(lo, hi)
        if sc * ips > remaining:
            if ips > remaining:
                sc, ips = 1, remaining
            else:
                sc = remaining // ips
        shapes.append((proto, sc, ips))
        remaining -= sc * ips

    n_studies = len(shapes)
    if n_patients is None:
        n_patients = max(1, -(-n_studies // 3))
    patients = sample_patients(n_patients, seed)

    # Every patient gets one study first (as far as studies go), the rest go preferentially
    # to a subset of patients, so study counts per patient are skewed like in real archives.
    order = list(range(n_patients))
    rng.shuffle(order)
    owners: list[int] = []
    for k in range(n_studies):
        if k < n_patients:
            owners.append(order[k])
        else:
            owners.append(order[int(n_patients * rng.random() ** 1.7)])

    drafts = []
    for (proto, sc, ips), owner in zip(shapes, owners, strict=True):
        patient = patients[owner]
        first = max(FIRST_STUDY_DATE, _add_years(patient.birth_date, 1))
        span = (LAST_STUDY_DATE - first).days
        study_date = first + datetime.timedelta(days=rng.randint(0, span))
        if rng.random() < 0.07:  # emergency department: any time of day
            seconds = rng.randrange(0, 86_400 - 3_600)
        else:
            seconds = rng.randrange(7 * 3_600, 19 * 3_600)
        study_time = f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
        drafts.append((study_date, study_time, patient, proto, sc, ips))
    drafts.sort(key=lambda d: (d[0], d[1], d[2].patient_id))

    studies: list[SampleStudy] = []
    accession = seed * 10_000_000 + rng.randrange(100_000, 900_000)
    for study_date, study_time, patient, proto, sc, ips in drafts:
        accession += rng.randint(1, 40)
        acc = f"ACC{accession:08d}"
        studies.append(
            SampleStudy(
                patient=patient,
                study_instance_uid=str(generate_uid(entropy_srcs=[f"{_UID_NS}|seed={seed}|study={acc}|"])),
                accession_number=acc,
                study_date=study_date,
                study_time=study_time,
                modality=proto.modality,
                description=proto.description,
                body_part=proto.body_part,
                series_count=sc,
                instances_per_series=ips,
            )
        )
    return studies


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------

_TEMPLATE_FILES = {
    "CT": "CT_small.dcm",  # 128x128 16-bit, GE private tags
    "MR": "MR_small.dcm",  # 64x64 16-bit
    "CR": "dicomdirtests/77654033/CR1/6154",  # 16x16 MONOCHROME1, Agfa private tags
    "US": "ExplVR_BigEnd.dcm",  # 80x60 RGB; re-encoded to Explicit VR Little Endian
    "OT": "SC_rgb_small_odd.dcm",  # 3x3 RGB secondary capture
}

# Elements removed from templates: original identifiers, de-identification markers, elements we
# would otherwise have to keep consistent, trailing padding.
_DROP_TAGS = (
    0x00080014,  # InstanceCreatorUID
    0x0008002A,  # AcquisitionDateTime
    0x00080201,  # TimezoneOffsetFromUTC
    0x00082111,  # DerivationDescription
    0x00082112,  # SourceImageSequence
    0x00101000,  # OtherPatientIDs
    0x00101002,  # OtherPatientIDsSequence
    0x00120062,  # PatientIdentityRemoved
    0x00120063,  # DeidentificationMethod
    0xFFFCFFFC,  # DataSetTrailingPadding
)

# Elements set per patient, study, series and instance.
_PATIENT_STUDY_TAGS = (
    0x00080005,  # SpecificCharacterSet
    0x00080020,  # StudyDate
    0x00080030,  # StudyTime
    0x00080050,  # AccessionNumber
    0x00080080,  # InstitutionName
    0x00080090,  # ReferringPhysicianName
    0x00081030,  # StudyDescription
    0x00100010,  # PatientName
    0x00100020,  # PatientID
    0x00100030,  # PatientBirthDate
    0x00100040,  # PatientSex
    0x00101010,  # PatientAge
    0x0020000D,  # StudyInstanceUID
    0x00200010,  # StudyID
)
_SERIES_TAGS = (
    0x00080012,  # InstanceCreationDate
    0x00080013,  # InstanceCreationTime
    0x00080021,  # SeriesDate
    0x00080022,  # AcquisitionDate
    0x00080023,  # ContentDate
    0x00080031,  # SeriesTime
    0x00080032,  # AcquisitionTime
    0x00080033,  # ContentTime
    0x00080070,  # Manufacturer
    0x00081010,  # StationName
    0x0008103E,  # SeriesDescription
    0x00081090,  # ManufacturerModelName
    0x00180015,  # BodyPartExamined
    0x0020000E,  # SeriesInstanceUID
    0x00200011,  # SeriesNumber
)
_VOLUME_SERIES_TAGS = (
    0x00180050,  # SliceThickness
    0x00180088,  # SpacingBetweenSlices
    0x00200037,  # ImageOrientationPatient
    0x00200052,  # FrameOfReferenceUID
)
_INSTANCE_TAGS = (0x00080018, 0x00200013)  # SOPInstanceUID, InstanceNumber
_VOLUME_INSTANCE_TAGS = (0x00200032, 0x00201041)  # ImagePositionPatient, SliceLocation

_PREAMBLE = b"\x00" * 128 + b"DICM"


def _encode(elem: DataElement, charset: str | None = None) -> bytes:
    """Encode one element as Explicit VR Little Endian with pydicom's own writer."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_data_element(fp, elem, charset or "iso8859")
    return fp.getvalue()


def _short(tag: int, vr: bytes, value: bytes) -> bytes:
    """Hand-encode a short (16-bit length) Explicit VR Little Endian element."""
    return struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr + struct.pack("<H", len(value)) + value


def _pad(text: str, pad: bytes) -> bytes:
    raw = text.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


@dataclass(frozen=True)
class _Template:
    modality: str
    dataset: Dataset  # cleaned; dynamic elements removed; file_meta ready except the instance UID
    volume: bool
    layout: tuple[bytes | int, ...]  # static chunks and dynamic tags, in tag order
    instance_tags: tuple[int, ...]
    meta_head: bytes  # (0002,0001) + (0002,0002)
    meta_tail: bytes  # (0002,0010) + (0002,0012) + (0002,0013)
    rows: int
    columns: int
    pixel_spacing: tuple[float, float]


@cache
def _template(modality: str) -> _Template:
    ds = pydicom.dcmread(TEST_FILES / _TEMPLATE_FILES[modality])
    # Decode every element (converts raw elements, e.g. from the big endian US file).
    for _ in ds.iterall():
        pass
    for tag in list(ds.keys()):
        if tag.element == 0 or int(tag) in _DROP_TAGS:
            del ds[tag]
    volume = modality in _VOLUME_MODALITIES
    dynamic = set(_PATIENT_STUDY_TAGS) | set(_SERIES_TAGS) | set(_INSTANCE_TAGS)
    instance_tags = set(_INSTANCE_TAGS)
    if volume:
        dynamic |= set(_VOLUME_SERIES_TAGS) | set(_VOLUME_INSTANCE_TAGS)
        instance_tags |= set(_VOLUME_INSTANCE_TAGS)
    for tag in dynamic:
        if tag in ds:
            del ds[tag]
    for elem in ds.iterall():  # guard: static text must be valid in every character set we use
        if isinstance(elem.value, str) and not elem.value.isascii():
            raise ValueError(f"non-ASCII static value in template {modality}: {elem.tag}")
    ds.preamble = b"\x00" * 128
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta

    layout: list[bytes | int] = []
    chunk: list[bytes] = []
    for tag in sorted(set(map(int, ds.keys())) | dynamic):
        if tag in dynamic:
            layout.append(b"".join(chunk))
            layout.append(tag)
            chunk = []
        else:
            chunk.append(_encode(ds[tag]))
    layout.append(b"".join(chunk))

    meta_head = _encode(meta["FileMetaInformationVersion"]) + _encode(meta["MediaStorageSOPClassUID"])
    meta_tail = b"".join(
        _encode(meta[k]) for k in ("TransferSyntaxUID", "ImplementationClassUID", "ImplementationVersionName")
    )
    spacing = ds.get("PixelSpacing") or [1.0, 1.0]
    return _Template(
        modality=modality,
        dataset=ds,
        volume=volume,
        layout=tuple(x for x in layout if x != b""),
        instance_tags=tuple(sorted(instance_tags)),
        meta_head=meta_head,
        meta_tail=meta_tail,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
    )


# --------------------------------------------------------------------------------------------
# Per-study / per-series attributes
# --------------------------------------------------------------------------------------------

_INSTITUTIONS = (
    "GENERAL HOSPITAL",
    "ST. MARY MEDICAL CENTER",
    "RIVERSIDE IMAGING CENTER",
    "UNIVERSITY CLINIC",
    "NORTHSIDE ORTHOPAEDICS",
    "LAKEVIEW COMMUNITY HOSPITAL",
)
_REFERRING = (
    "Wilson^Hannah",
    "Okafor^Chidi",
    "Kim^Daniel",
    "Schmidt^Peter",
    "Rossi^Giulia",
    "Patel^Anjali",
    "Haddad^Omar",
    "Nakamura^Kenji",
    "Dubois^Claire",
    "Brown^Michael^^Dr",
)
_EQUIPMENT = {
    "CT": (
        ("GE MEDICAL SYSTEMS", "LightSpeed VCT"),
        ("SIEMENS", "SOMATOM Definition AS"),
        ("Philips", "Ingenuity CT"),
        ("TOSHIBA", "Aquilion ONE"),
    ),
    "MR": (
        ("SIEMENS", "MAGNETOM Skyra"),
        ("GE MEDICAL SYSTEMS", "SIGNA Premier"),
        ("Philips Medical Systems", "Ingenia"),
        ("TOSHIBA_MEC", "Vantage Titan"),
    ),
    "CR": (
        ("Agfa-Gevaert AG", "ADC_5146"),
        ("FUJIFILM Corporation", "FCR PROFECT CS"),
        ("Carestream Health", "DirectView CR975"),
    ),
    "US": (
        ("GE Healthcare", "LOGIQ E9"),
        ("Philips Medical Systems", "EPIQ 7G"),
        ("SIEMENS", "ACUSON S2000"),
    ),
    "OT": (("TeraRecon", "Aquarius iNtuition"), ("Vital Images", "Vitrea")),
}
_ORIENTATIONS = {
    "AX": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "SAG": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "COR": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
}
_BODY_Z = {"HEAD": 40.0, "CHEST": -160.0, "ABDOMEN": -330.0, "KNEE": -760.0, "LSPINE": -420.0}

Vec = tuple[float, float, float]


def _cross(a: Vec, b: Vec) -> Vec:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _fmt_ds(v: float) -> str:
    return f"{round(v, 4) + 0.0:.4f}"


def _fmt_ds_plain(v: float) -> str:
    text = f"{v:.4f}".rstrip("0").rstrip(".")
    return text or "0"


def _time_plus(hhmmss: str, seconds: int) -> str:
    total = int(hhmmss[:2]) * 3600 + int(hhmmss[2:4]) * 60 + int(hhmmss[4:6]) + seconds
    total = min(total, 86_399)
    return f"{total // 3600:02d}{total // 60 % 60:02d}{total % 60:02d}"


@dataclass(frozen=True)
class _Series:
    number: int
    uid: str
    description: str
    time: str
    manufacturer: str
    model: str
    station: str
    # Volume geometry (CT/MR only)
    thickness: float = 0.0
    row_dir: Vec = (1.0, 0.0, 0.0)
    col_dir: Vec = (0.0, 1.0, 0.0)
    origin: Vec = (0.0, 0.0, 0.0)
    frame_of_reference_uid: str = ""

    @property
    def normal(self) -> Vec:
        """Slice normal (row x column direction cosines)."""
        return _cross(self.row_dir, self.col_dir)

    def position(self, index: int) -> Vec:
        """ImagePositionPatient of the slice with 0-based ``index``."""
        n = self.normal
        step = self.thickness * index
        return (
            self.origin[0] + n[0] * step,
            self.origin[1] + n[1] * step,
            self.origin[2] + n[2] * step,
        )


def _plan_series(study: SampleStudy, institution: str, tpl: _Template) -> list[_Series]:
    rng = random.Random(f"{_UID_NS}|series|{study.study_instance_uid}")
    proto = _PROTOCOL_BY_KEY[(study.modality, study.description)]
    picks = sorted(rng.sample(range(len(proto.series)), study.series_count))
    equipment = _EQUIPMENT[study.modality]
    manufacturer, model = equipment[zlib.crc32(f"{institution}|{study.modality}".encode()) % len(equipment)]
    station = f"{''.join(w[0] for w in institution.split())}_{study.modality}{rng.randint(1, 3):02d}"
    out = []
    offset = rng.randint(60, 300)
    for number, pick in enumerate(picks, start=1):
        description, orient, thickness = proto.series[pick]
        uid = str(generate_uid(entropy_srcs=[f"{_UID_NS}|{study.study_instance_uid}|series={number}|"]))
        time = _time_plus(study.study_time, offset)
        offset += rng.randint(120, 600)
        if not tpl.volume:
            out.append(_Series(number, uid, description, time, manufacturer, model, station))
            continue
        row_dir, col_dir = _ORIENTATIONS[orient]
        normal = _cross(row_dir, col_dir)
        n = study.instances_per_series
        center = (rng.uniform(-8, 8), rng.uniform(-30, 5), _BODY_Z.get(study.body_part, -200.0))
        half_w = tpl.columns * tpl.pixel_spacing[1] / 2
        half_h = tpl.rows * tpl.pixel_spacing[0] / 2
        half_d = thickness * (n - 1) / 2
        o = [center[i] - row_dir[i] * half_w - col_dir[i] * half_h - normal[i] * half_d for i in range(3)]
        origin: Vec = (o[0], o[1], o[2])
        out.append(
            _Series(
                number,
                uid,
                description,
                time,
                manufacturer,
                model,
                station,
                thickness=thickness,
                row_dir=row_dir,
                col_dir=col_dir,
                origin=origin,
                frame_of_reference_uid=str(
                    generate_uid(entropy_srcs=[f"{_UID_NS}|{study.study_instance_uid}|for={number}|"])
                ),
            )
        )
    return out


def _study_extras(study: SampleStudy) -> tuple[str, str]:
    """Institution and referring physician for a study (deterministic)."""
    rng = random.Random(f"{_UID_NS}|extras|{study.study_instance_uid}")
    home = _INSTITUTIONS[zlib.crc32(study.patient.patient_id.encode()) % len(_INSTITUTIONS)]
    institution = home if rng.random() < 0.8 else rng.choice(_INSTITUTIONS)
    referring = "" if rng.random() < 0.05 else rng.choice(_REFERRING)
    return institution, referring


def _study_id(accession: str) -> str:
    """StudyID (SH): the accession number's digits without leading zeros."""
    return "".join(c for c in accession if c.isdigit()).lstrip("0")[-16:] or "1"


def _study_elements(study: SampleStudy, institution: str, referring: str) -> dict[int, Any]:
    p = study.patient
    charset = p.specific_character_set
    age = _age_years(p.birth_date, study.study_date)
    return {
        0x00080005: DataElement(0x00080005, "CS", charset) if charset else None,
        0x00080020: DataElement(0x00080020, "DA", study.study_date.strftime("%Y%m%d")),
        0x00080030: DataElement(0x00080030, "TM", study.study_time),
        0x00080050: DataElement(0x00080050, "SH", study.accession_number),
        0x00080080: DataElement(0x00080080, "LO", institution),
        0x00080090: DataElement(0x00080090, "PN", referring),
        0x00081030: DataElement(0x00081030, "LO", study.description),
        0x00100010: DataElement(0x00100010, "PN", p.patient_name),
        0x00100020: DataElement(0x00100020, "LO", p.patient_id),
        0x00100030: DataElement(0x00100030, "DA", p.birth_date.strftime("%Y%m%d")),
        0x00100040: DataElement(0x00100040, "CS", p.sex),
        0x00101010: DataElement(0x00101010, "AS", f"{age:03d}Y"),
        0x0020000D: DataElement(0x0020000D, "UI", study.study_instance_uid),
        0x00200010: DataElement(0x00200010, "SH", _study_id(study.accession_number)),
    }


def _series_elements(study: SampleStudy, series: _Series, tpl: _Template) -> dict[int, Any]:
    date = study.study_date.strftime("%Y%m%d")
    acq = _time_plus(series.time, 30)
    out: dict[int, Any] = {
        0x00080012: DataElement(0x00080012, "DA", date),
        0x00080013: DataElement(0x00080013, "TM", _time_plus(series.time, 95)),
        0x00080021: DataElement(0x00080021, "DA", date),
        0x00080022: DataElement(0x00080022, "DA", date),
        0x00080023: DataElement(0x00080023, "DA", date),
        0x00080031: DataElement(0x00080031, "TM", series.time),
        0x00080032: DataElement(0x00080032, "TM", acq),
        0x00080033: DataElement(0x00080033, "TM", acq),
        0x00080070: DataElement(0x00080070, "LO", series.manufacturer),
        0x00081010: DataElement(0x00081010, "SH", series.station),
        0x0008103E: DataElement(0x0008103E, "LO", series.description),
        0x00081090: DataElement(0x00081090, "LO", series.model),
        0x00180015: DataElement(0x00180015, "CS", study.body_part),
        0x0020000E: DataElement(0x0020000E, "UI", series.uid),
        0x00200011: DataElement(0x00200011, "IS", str(series.number)),
    }
    if tpl.volume:
        thick = _fmt_ds_plain(series.thickness)
        iop = "\\".join(_fmt_ds_plain(v) for v in series.row_dir + series.col_dir)
        out[0x00180050] = DataElement(0x00180050, "DS", thick)
        out[0x00180088] = DataElement(0x00180088, "DS", thick)
        out[0x00200037] = DataElement(0x00200037, "DS", iop)
        out[0x00200052] = DataElement(0x00200052, "UI", series.frame_of_reference_uid)
    return out


def _sop_uid(series: _Series, number: int) -> str:
    return str(generate_uid(entropy_srcs=[f"{_UID_NS}|{series.uid}|instance={number}|"]))


def _instance_values(series: _Series, tpl: _Template, index: int) -> dict[int, str | None]:
    """Per-instance element values as DICOM strings (index is 0-based)."""
    number = index + 1
    values = {0x00080018: _sop_uid(series, number), 0x00200013: str(number)}
    if tpl.volume:
        pos = series.position(index)
        n = series.normal
        values[0x00200032] = "\\".join(_fmt_ds(v) for v in pos)
        values[0x00201041] = _fmt_ds(pos[0] * n[0] + pos[1] * n[1] + pos[2] * n[2])
    return values


_INSTANCE_VR = {0x00080018: "UI", 0x00200013: "IS", 0x00200032: "DS", 0x00201041: "DS"}


# --------------------------------------------------------------------------------------------
# Encoding: fast path (spliced bytes) and reference path (pydicom Dataset + dcmwrite)
# --------------------------------------------------------------------------------------------


def _series_segments(tpl: _Template, dynamic: dict[int, Any], charset: str | None) -> list[bytes]:
    """Join static chunks with encoded study/series elements, split at the instance elements."""
    segments: list[bytes] = []
    current: list[bytes] = []
    for item in tpl.layout:
        if isinstance(item, bytes):
            current.append(item)
        elif item in tpl.instance_tags:
            segments.append(b"".join(current))
            current = []
        else:
            elem = dynamic[item]
            if elem is not None:
                current.append(_encode(elem, charset))
    segments.append(b"".join(current))
    return segments


def _instance_bytes(tpl: _Template, segments: list[bytes], values: dict[int, str | None]) -> bytes:
    """A whole Part-10 file: preamble, File Meta Information, series segments and the
    instance elements spliced in. A value of None leaves that element out (bad inputs only)."""
    sop = values[0x00080018]
    body = tpl.meta_head
    if sop is not None:
        body += _short(0x00020003, b"UI", _pad(sop, b"\x00"))
    body += tpl.meta_tail
    parts = [_PREAMBLE, b"\x02\x00\x00\x00UL\x04\x00", struct.pack("<I", len(body)), body, segments[0]]
    for tag, segment in zip(tpl.instance_tags, segments[1:], strict=True):
        value = values[tag]
        if value is not None:
            vr = _INSTANCE_VR[tag]
            pad = b"\x00" if vr == "UI" else b" "
            parts.append(_short(tag, vr.encode(), _pad(value, pad)))
        parts.append(segment)
    return b"".join(parts)


def _instance_dataset(tpl: _Template, dynamic: dict[int, Any], values: dict[int, str | None]) -> Dataset:
    """The reference pydicom Dataset for one instance (slow; for no_file_meta and tests)."""
    ds = deepcopy(tpl.dataset)
    for tag, elem in dynamic.items():
        if elem is not None:
            ds[tag] = deepcopy(elem)
    for tag, value in values.items():
        if value is not None:
            ds[tag] = DataElement(tag, _INSTANCE_VR[tag], value)
    if values[0x00080018] is not None:
        ds.file_meta.MediaStorageSOPInstanceUID = values[0x00080018]
    return ds


def _dcmwrite_bytes(ds: Dataset, **kwargs: Any) -> bytes:
    buf = BytesIO()
    kwargs.setdefault("enforce_file_format", True)
    pydicom.dcmwrite(buf, ds, **kwargs)
    return buf.getvalue()


_InstanceWork = tuple[SampleStudy, _Series, int, _Template, list[bytes], dict[int, Any]]


def _iter_instances(studies: list[SampleStudy]) -> Iterator[_InstanceWork]:
    """Yield (study, series, index, tpl, segments, dynamic) for every planned instance."""
    for study in studies:
        tpl = _template(study.modality)
        institution, referring = _study_extras(study)
        study_elems = _study_elements(study, institution, referring)
        charset = study.patient.specific_character_set
        for series in _plan_series(study, institution, tpl):
            dynamic = dict(study_elems)
            dynamic.update(_series_elements(study, series, tpl))
            segments = _series_segments(tpl, dynamic, charset)
            for index in range(study.instances_per_series):
                yield study, series, index, tpl, segments, dynamic


# --------------------------------------------------------------------------------------------
# Public generators
# --------------------------------------------------------------------------------------------


def generate_sample_drop(
    dest: Path,
    n_instances: int = 200,
    seed: int = 0,
    n_patients: int | None = None,
    layout: str = "tree",
) -> SampleSummary:
    """Write ``n_instances`` DICOM Part-10 files under ``dest`` and summarise them.

    ``layout="tree"``: ``<PatientID>/<AccessionNumber>/<SeriesNumber:03d>/<InstanceNumber:04d>.dcm``;
    ``layout="flat"``: ``<running number:07d>.dcm`` directly in ``dest``. Same seed, same bytes.
    """
    if layout not in ("tree", "flat"):
        raise ValueError(f"layout must be 'tree' or 'flat', not {layout!r}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    studies = plan_studies(n_instances, seed=seed, n_patients=n_patients)
    files: list[Path] = []
    series_dir = dest
    last_series = None
    for study, series, index, tpl, segments, _ in _iter_instances(studies):
        data = _instance_bytes(tpl, segments, _instance_values(series, tpl, index))
        if layout == "tree":
            if series is not last_series:
                series_dir = dest / study.patient.patient_id / study.accession_number / f"{series.number:03d}"
                series_dir.mkdir(parents=True, exist_ok=True)
                last_series = series
            path = series_dir / f"{index + 1:04d}.dcm"
        else:
            path = dest / f"{len(files) + 1:07d}.dcm"
        with open(path, "wb") as fh:
            fh.write(data)
        files.append(path)
    return SampleSummary(
        dest=dest,
        n_instances=len(files),
        n_studies=len(studies),
        n_series=sum(s.series_count for s in studies),
        n_patients=len({s.patient.patient_id for s in studies}),
        files=files,
    )


BAD_INPUT_KINDS: tuple[str, ...] = (
    "not_dicom",
    "zero_bytes",
    "truncated_pixel_data",
    "truncated_header",
    "missing_sop_instance_uid",
    "missing_study_instance_uid",
    "invalid_uid",
    "uid_too_long",
    "no_file_meta",
    "dicomdir",
    "gzip",
)


_BadBase = tuple[_Template, list[bytes], dict[int, Any], dict[int, str | None]]


def _bad_base(seed: int) -> list[_BadBase]:
    """Eight distinct valid CT instances (own UIDs) to derive bad inputs from."""
    patient = sample_patients(1, seed)[0]
    base = []
    for k in range(8):
        study = SampleStudy(
            patient=patient,
            study_instance_uid=str(generate_uid(entropy_srcs=[f"{_UID_NS}|bad|{seed}|{k}|"])),
            accession_number=f"ACCBAD{seed % 1000:03d}{k:02d}",
            study_date=datetime.date(2024, 3, 1 + k),
            study_time="101500",
            modality="CT",
            description="CT CHEST W CONTRAST",
            body_part="CHEST",
            series_count=1,
            instances_per_series=1,
        )
        _, series, index, tpl, segments, dynamic = next(_iter_instances([study]))
        base.append((tpl, segments, dynamic, _instance_values(series, tpl, index)))
    return base


def generate_bad_inputs(dest: Path, seed: int = 0) -> list[BadInput]:
    """Write one file per kind of bad input into ``dest`` and return what each should produce.

    Kinds (``expected_code`` equals the kind, except both truncations expect ``"truncated"``):
    ``not_dicom`` (text with a .dcm name), ``zero_bytes``, ``truncated_pixel_data`` (cut in the
    middle of Pixel Data), ``truncated_header`` (cut in the middle of PatientName, before Pixel
    Data), ``missing_sop_instance_uid`` (neither SOPInstanceUID nor MediaStorageSOPInstanceUID),
    ``missing_study_instance_uid``, ``invalid_uid`` (SOP Instance UID ``1.2.03.abc`` in dataset
    and file meta), ``uid_too_long`` (65-character SOP Instance UID), ``no_file_meta`` (bare
    Implicit VR Little Endian dataset: no preamble, no ``DICM``, no group 2), ``dicomdir`` (copy of
    pydicom's ``dicomdirtests/DICOMDIR``, named ``DICOMDIR``) and ``gzip`` (a gzipped valid
    instance, ``gzip.dcm.gz``). Every derived file has its own UIDs (no accidental duplicates).

    Note: pydicom 3 reads both truncated files without any error or warning (it returns a short
    Pixel Data value, or a dataset that simply stops): ingest has to check lengths itself.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    base = _bad_base(seed)
    out: list[BadInput] = []

    def put(name: str, kind: str, data: bytes, code: str | None = None) -> None:
        path = dest / name
        path.write_bytes(data)
        out.append(BadInput(path=path, kind=kind, expected_code=code or kind))

    def valid_bytes(k: int) -> bytes:
        tpl, segments, _, values = base[k]
        return _instance_bytes(tpl, segments, values)

    def reference(k: int) -> Dataset:
        tpl, _, dynamic, values = base[k]
        return _instance_dataset(tpl, dynamic, values)

    put(
        "not_dicom.dcm",
        "not_dicom",
        (
            "This is not a DICOM file.\n"
            f"It is a note somebody left in the drop folder (sample seed {seed}).\n"
            "PatientID: DL-000000\n"
        ).encode("ascii"),
    )
    put("zero_bytes.dcm", "zero_bytes", b"")

    data = valid_bytes(0)
    pixel_at = data.rfind(b"\xe0\x7f\x10\x00OW")
    pixel_len = struct.unpack("<I", data[pixel_at + 8 : pixel_at + 12])[0]
    put(
        "truncated_pixel_data.dcm",
        "truncated_pixel_data",
        data[: pixel_at + 12 + pixel_len // 2],
        "truncated",
    )

    data = valid_bytes(1)
    name_at = data.find(b"\x10\x00\x10\x00PN")  # PatientName: cut 3 bytes into its value
    put("truncated_header.dcm", "truncated_header", data[: name_at + 8 + 3], "truncated")

    tpl, segments, _, values = base[2]
    put(
        "missing_sop_instance_uid.dcm",
        "missing_sop_instance_uid",
        _instance_bytes(tpl, segments, {**values, 0x00080018: None}),
    )

    tpl, _, dynamic, values = base[3]
    charset = dynamic[0x00080005].value if dynamic[0x00080005] is not None else None
    segments = _series_segments(tpl, {**dynamic, 0x0020000D: None}, charset)
    put(
        "missing_study_instance_uid.dcm", "missing_study_instance_uid", _instance_bytes(tpl, segments, values)
    )

    tpl, segments, _, values = base[4]
    put(
        "invalid_uid.dcm", "invalid_uid", _instance_bytes(tpl, segments, {**values, 0x00080018: "1.2.03.abc"})
    )

    tpl, segments, _, values = base[5]
    too_long = (values[0x00080018] + "1234567890")[:65]
    put("uid_too_long.dcm", "uid_too_long", _instance_bytes(tpl, segments, {**values, 0x00080018: too_long}))

    ds = reference(6)
    ds.file_meta = FileMetaDataset()
    ds.preamble = None
    put(
        "no_file_meta.dcm",
        "no_file_meta",
        _dcmwrite_bytes(ds, enforce_file_format=False, implicit_vr=True, little_endian=True),
    )

    path = dest / "DICOMDIR"
    shutil.copyfile(TEST_FILES / "dicomdirtests" / "DICOMDIR", path)
    out.append(BadInput(path=path, kind="dicomdir", expected_code="dicomdir"))

    put("gzip.dcm.gz", "gzip", gzip.compress(valid_bytes(7), compresslevel=6, mtime=0))
    return out
