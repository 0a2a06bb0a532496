"""Search latency at 1,000,000 instances in ~10,000 commits, beside a plain polars full scan.

    python bench/search.py [--instances 1000000] [--commits 10000] [--repeats 20] [--seed 1]
                           [--root DIR] [--writer direct|deltalake] [--no-flat] [--json]

Generates N instance rows straight into the tenant's `instances` Delta table (one commit per batch
of whole studies, seq dense 1..N in commit order, the table's default checkpoints; each commit is
the data file and log entry write_deltalake would write, see DirectAppender; generation is timed but
is in no figure), then measures in the same run, on the same table:
  ours   `SearchIndex(tenant).search(level, params)` of a long-lived index, p50 / p95 over
         --repeats random keys drawn from the generated data with a fixed seed;
  scan   a plain polars full scan answering the same question (`pl.scan_delta(table).filter(...)
         .group_by/select(...).collect()`), the same keys, timed the same way;
for: study by PatientID, studies by StudyDate range + ModalitiesInStudy, PatientName fuzzy, series of
one study, instances of one series. Then "latency stays flat" (issue 4 point 4): a lookup right after
the commits accumulated (no maintenance), after `maintain_tables` (compaction + checkpoint), the
time for a long-lived index to see one more commit, and a cold start (new index, first query).
Targets (issue 4): p95 <= 50 ms for PatientID / UID lookups, <= 200 ms for the range and fuzzy
queries, and >= 10x faster than the scan. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from dicomlake.dicom.attributes import normalize_person_name
from dicomlake.samples import _INSTITUTIONS, _REFERRING, sample_patients
from dicomlake.store import Lakehouse
from dicomlake.store.committer import PROJECTION_APP
from dicomlake.store.schemas import INSTANCES

TARGET_LOOKUP_MS = 50.0
TARGET_RANGE_MS = 200.0
TARGET_SPEEDUP = 10.0
UID_ROOT = "1.2.826.0.1.3680043.8.498."
FIRST_DATE = dt.date(2016, 1, 1)
DAYS = 3653  # ten years: 2016-01-01 .. 2025-12-31
LATE_SHARE = 0.05  # studies that arrive long after they were made (priors fetched, migrations)

# -- the generated archive ---------------------------------------------------------------------


@dataclass(frozen=True)
class StudyType:
    weight: float
    description: str
    body_part: str
    # one entry per series kind: (modality, series description, instances (lo, hi))
    series: tuple[tuple[str, str, tuple[int, int]], ...]
    series_count: tuple[int, int]  # how many of `series` (in order) a study has


# Shaped like an outpatient + hospital archive: many projection X-rays and mammograms of a few
# images, ultrasound of tens, CT / MR / PET-CT of several series of tens to hundreds of slices
# (thick-slice reconstructions; thin ones are usually not archived). Mean ~20 instances per study.
STUDY_TYPES: tuple[StudyType, ...] = (
    StudyType(22, "XR CHEST 2 VIEWS", "CHEST", (("CR", "CHEST PA LAT", (2, 2)),), (1, 1)),
    StudyType(9, "XR CHEST 1 VIEW PORTABLE", "CHEST", (("DX", "CHEST AP PORTABLE", (1, 1)),), (1, 1)),
    StudyType(9, "XR KNEE 3 VIEWS", "KNEE", (("DX", "KNEE", (3, 3)),), (1, 1)),
    StudyType(5, "XR HAND 3 VIEWS", "HAND", (("CR", "HAND", (3, 3)),), (1, 1)),
    StudyType(9, "MG SCREENING BILATERAL", "BREAST", (("MG", "L CC L MLO R CC R MLO", (4, 4)),), (1, 1)),
    StudyType(8, "US ABDOMEN COMPLETE", "ABDOMEN",
              (("US", "ABDOMEN", (8, 30)), ("US", "LIVER", (2, 10))), (1, 2)),
    StudyType(4, "US KIDNEYS BILATERAL", "KIDNEY",
              (("US", "RIGHT KIDNEY", (4, 12)), ("US", "LEFT KIDNEY", (4, 12))), (2, 2)),
    StudyType(2, "CT CHEST W CONTRAST", "CHEST",
              (("CT", "AXIAL 5MM", (50, 80)), ("CT", "AXIAL 2.5MM MEDIASTINUM", (100, 150)),
               ("CT", "COR 3MM", (60, 90))), (1, 3)),
    StudyType(1.5, "CT ABDOMEN PELVIS W CONTRAST", "ABDOMEN",
              (("CT", "AXIAL 5MM PORTAL VENOUS", (80, 110)), ("CT", "AXIAL 5MM DELAYED", (80, 110))),
              (1, 2)),
    StudyType(2, "CT HEAD WO CONTRAST", "HEAD",
              (("CT", "AXIAL 5MM BRAIN", (28, 36)), ("CT", "AXIAL 2.5MM BONE", (55, 70))), (1, 2)),
    StudyType(1.5, "MR BRAIN W WO CONTRAST", "HEAD",
              (("MR", "T1 SAG", (20, 26)), ("MR", "T2 AX", (22, 28)), ("MR", "FLAIR AX", (22, 28)),
               ("MR", "DWI AX", (22, 28)), ("MR", "T1 AX POST", (22, 28)), ("MR", "T1 COR POST", (20, 26))),
              (4, 6)),
    StudyType(1, "MR KNEE WO CONTRAST", "KNEE",
              (("MR", "PD SAG", (20, 30)), ("MR", "PD FS COR", (20, 30)), ("MR", "T2 FS AX", (20, 30)),
               ("MR", "T1 COR", (20, 30)), ("MR", "PD FS SAG", (20, 30))), (4, 5)),
    StudyType(0.8, "MR LUMBAR SPINE WO CONTRAST", "LSPINE",
              (("MR", "T1 SAG", (13, 17)), ("MR", "T2 SAG", (13, 17)), ("MR", "STIR SAG", (13, 17)),
               ("MR", "T2 AX", (20, 30))), (3, 4)),
    StudyType(0.4, "PET CT WHOLE BODY FDG", "WHOLEBODY",
              (("CT", "CT WB 5MM", (150, 250)), ("PT", "PET WB AC", (150, 250)),
               ("PT", "PET WB NAC", (150, 250))), (2, 3)),
)

SOP_CLASS = {
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
}
# (rows, columns, bits allocated, samples per pixel, photometric interpretation)
IMAGE = {
    "CR": (2500, 2048, 16, 1, "MONOCHROME1"),
    "DX": (3000, 3000, 16, 1, "MONOCHROME2"),
    "MG": (4096, 3328, 16, 1, "MONOCHROME2"),
    "US": (600, 800, 8, 3, "RGB"),
    "CT": (512, 512, 16, 1, "MONOCHROME2"),
    "MR": (256, 256, 16, 1, "MONOCHROME2"),
    "PT": (200, 200, 16, 1, "MONOCHROME2"),
}
EQUIPMENT = {
    "CR": (("Agfa-Gevaert AG", "ADC_5146"), ("FUJIFILM Corporation", "FCR PROFECT CS")),
    "DX": (("Carestream Health", "DRX-Evolution"), ("SIEMENS", "Ysio Max")),
    "MG": (("HOLOGIC, Inc.", "Selenia Dimensions"), ("GE Healthcare", "Senographe Pristina")),
    "US": (("GE Healthcare", "LOGIQ E9"), ("Philips Medical Systems", "EPIQ 7G")),
    "CT": (("GE MEDICAL SYSTEMS", "LightSpeed VCT"), ("SIEMENS", "SOMATOM Definition AS")),
    "MR": (("SIEMENS", "MAGNETOM Skyra"), ("Philips Medical Systems", "Ingenia")),
    "PT": (("GE MEDICAL SYSTEMS", "Discovery MI"), ("SIEMENS", "Biograph Vision")),
}
TRANSFER_SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.70")
_AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _uids(rng: np.random.Generator, level: int, start: int, count: int) -> list[str]:
    """`count` unique UIDs of realistic length (55-56 chars): root, 19 random digits, level, counter."""
    randoms = rng.integers(10**18, 9 * 10**18, size=count)
    return [f"{UID_ROOT}{r}{level}{start + i:09d}" for i, r in enumerate(randoms.tolist())]


@dataclass
class Plan:
    """Per study and per series: everything but the instance-level values (small: ~50k studies)."""

    studies: pa.Table  # study-level columns, in arrival (= commit) order
    series: pa.Table  # series-level columns incl. the study's, in commit order
    series_instances: np.ndarray  # instances per series
    study_series: np.ndarray  # series per study
    commit_bounds: np.ndarray  # study index where each commit starts, len commits + 1
    arrival: np.ndarray  # study arrival (changed_at) in microseconds since the epoch, per study
    patients: int


def plan(instances: int, commits: int, seed: int) -> Plan:
    rng = np.random.default_rng(seed)
    weights = np.array([t.weight for t in STUDY_TYPES])
    # Draw more studies than needed, keep the prefix that reaches `instances` exactly.
    kinds: list[int] = []
    series_rows: list[tuple[int, int, int]] = []  # (study, series kind index, instances)
    total = 0
    while total < instances:
        batch = rng.choice(len(STUDY_TYPES), size=4096, p=weights / weights.sum())
        for kind in batch.tolist():
            study_type = STUDY_TYPES[kind]
            lo, hi = study_type.series_count
            count = int(rng.integers(lo, hi + 1))
            study = len(kinds)
            kinds.append(kind)
            for position in range(count):
                a, b = study_type.series[position][2]
                n = min(int(rng.integers(a, b + 1)), instances - total)
                series_rows.append((study, position, n))
                total += n
                if total >= instances:
                    break
            if total >= instances:
                break
    n_studies = len(kinds)
    n_patients = max(1, round(n_studies / 2.5))
    patients = sample_patients(n_patients, seed)
    # Every patient has a study; the rest go to a skewed subset (follow-ups, chronic patients).
    owner = np.concatenate([
        rng.permutation(n_patients)[: min(n_patients, n_studies)],
        (n_patients * rng.random(max(0, n_studies - n_patients)) ** 1.7).astype(np.int64),
    ])[:n_studies]
    rng.shuffle(owner)
    day = rng.integers(0, DAYS, size=n_studies)
    emergency = rng.random(n_studies) < 0.07
    seconds = np.where(emergency, rng.integers(0, 86_400, n_studies),
                       rng.integers(7 * 3600, 19 * 3600, n_studies))
    made = (np.datetime64(FIRST_DATE, "us").astype(np.int64) + day * 86_400_000_000
            + seconds * 1_000_000)
    # Arrival: minutes to hours after the study, or, for LATE_SHARE of studies, months to years later.
    late = rng.random(n_studies) < LATE_SHARE
    delay = np.where(late, rng.integers(30, 3 * 365, n_studies) * 86_400_000_000,
                     rng.integers(10 * 60, 6 * 3600, n_studies) * 1_000_000)
    last = np.datetime64(FIRST_DATE + dt.timedelta(days=DAYS + 30), "us").astype(np.int64)
    arrival = np.minimum(made + delay, last)
    order = np.argsort(arrival, kind="stable")
    # Renumber studies into arrival order; series follow their study.
    rank = np.empty(n_studies, dtype=np.int64)
    rank[order] = np.arange(n_studies)
    series_study = rank[np.array([s for s, _, _ in series_rows])]
    series_order = np.lexsort((np.array([p for _, p, _ in series_rows]), series_study))
    kinds_arr = np.array(kinds)[order]
    owner, day, seconds, made, arrival = owner[order], day[order], seconds[order], made[order], arrival[order]
    series_counts = np.bincount(series_study, minlength=n_studies)

    dates = [FIRST_DATE + dt.timedelta(days=d) for d in day.tolist()]
    times = [f"{s // 3600:02d}{s // 60 % 60:02d}{s % 60:02d}" for s in seconds.tolist()]
    # Accession numbers rise with the study date, as a RIS issues them.
    accession_rank = np.empty(n_studies, dtype=np.int64)
    accession_rank[np.argsort(made, kind="stable")] = np.arange(n_studies)
    accession = [f"A{20_000_000 + 7 * r + 3:08d}" for r in accession_rank.tolist()]
    institution = rng.integers(0, len(_INSTITUTIONS), n_studies)
    referring = rng.integers(0, len(_REFERRING), n_studies)
    people = [patients[o] for o in owner.tolist()]
    studies = pa.table({
        "study_instance_uid": _uids(rng, 1, 0, n_studies),
        "patient_id": [p.patient_id for p in people],
        "issuer_of_patient_id": ["DICOMLAKE-HOSP"] * n_studies,
        "patient_name": [p.patient_name for p in people],
        "patient_name_normalized": [normalize_person_name(p.patient_name) for p in people],
        "patient_birth_date": pa.array([p.birth_date for p in people], pa.date32()),
        "patient_sex": [p.sex for p in people],
        "specific_character_set": [p.specific_character_set for p in people],
        "study_date": pa.array(dates, pa.date32()),
        "study_time": times,
        "study_datetime": pa.array(made, pa.timestamp("us")),
        "study_id": [str(1000 + r % 9000) for r in accession_rank.tolist()],
        "accession_number": accession,
        "referring_physician_name": [_REFERRING[i] for i in referring.tolist()],
        "study_description": [STUDY_TYPES[k].description for k in kinds_arr.tolist()],
        "institution_name": [_INSTITUTIONS[i] for i in institution.tolist()],
        "body_part_examined": [STUDY_TYPES[k].body_part for k in kinds_arr.tolist()],
    })
    ages = [d.year - p.birth_date.year - ((d.month, d.day) < (p.birth_date.month, p.birth_date.day))
            for d, p in zip(dates, people, strict=True)]
    studies = studies.append_column("patient_age_years", pa.array(ages, pa.int64()))
    studies = studies.append_column("patient_age", pa.array([f"{a:03d}Y" for a in ages]))

    # Series, in commit order.
    ordered = [series_rows[i] for i in series_order.tolist()]
    series_study_sorted = series_study[series_order]
    n_series = len(ordered)
    modality, description, counts = [], [], np.empty(n_series, dtype=np.int64)
    numbers = np.empty(n_series, dtype=np.int64)
    for i, (study, position, n) in enumerate(ordered):
        kind = STUDY_TYPES[kinds[study]]
        modality.append(kind.series[position][0])
        description.append(kind.series[position][1])
        counts[i] = n
        numbers[i] = position + 1
    equipment = rng.integers(0, 2, n_series)
    offset = rng.integers(60, 1800, n_series)
    series_time = [
        f"{(t := min(seconds[s] + o, 86_399)) // 3600:02d}{t // 60 % 60:02d}{t % 60:02d}"
        for s, o in zip(series_study_sorted.tolist(), offset.tolist(), strict=True)
    ]
    image = [IMAGE[m] for m in modality]
    make = [EQUIPMENT[m][e] for m, e in zip(modality, equipment.tolist(), strict=True)]
    volume = [m in ("CT", "MR", "PT") for m in modality]
    series = studies.take(pa.array(series_study_sorted))
    extra = {
        "series_instance_uid": _uids(rng, 2, 0, n_series),
        "modality": modality,
        "series_number": pa.array(numbers, pa.int64()),
        "series_description": description,
        "series_date": series.column("study_date"),
        "series_time": series_time,
        "protocol_name": description,
        "performed_procedure_step_start_date": series.column("study_date"),
        "performed_procedure_step_start_time": series_time,
        "manufacturer": [m[0] for m in make],
        "manufacturer_model_name": [m[1] for m in make],
        "station_name": [f"{m}{e + 1:02d}" for m, e in zip(modality, equipment.tolist(), strict=True)],
        "sop_class_uid": [SOP_CLASS[m] for m in modality],
        "transfer_syntax_uid": [TRANSFER_SYNTAXES[int(m in ("CT", "MR")) + int(m == "US")] for m in modality],
        "rows": pa.array([i[0] for i in image], pa.int64()),
        "columns": pa.array([i[1] for i in image], pa.int64()),
        "bits_allocated": pa.array([i[2] for i in image], pa.int64()),
        "bits_stored": pa.array([12 if i[2] == 16 else 8 for i in image], pa.int64()),
        "samples_per_pixel": pa.array([i[3] for i in image], pa.int64()),
        "pixel_representation": pa.array([0] * n_series, pa.int64()),
        "photometric_interpretation": [i[4] for i in image],
        "slice_thickness": pa.array([5.0 if v else None for v in volume], pa.float64()),
        "image_orientation_patient": pa.array([_AXIAL if v else None for v in volume],
                                              pa.list_(pa.float64())),
        "pixel_spacing": pa.array([[0.7, 0.7] if v else [0.15, 0.15] for v in volume],
                                  pa.list_(pa.float64())),
        "rescale_slope": pa.array([1.0 if m in ("CT", "PT") else None for m in modality], pa.float64()),
        "rescale_intercept": pa.array([-1024.0 if m == "CT" else (0.0 if m == "PT" else None)
                                       for m in modality], pa.float64()),
        "window_center": pa.array([40.0 if m == "CT" else None for m in modality], pa.float64()),
        "window_width": pa.array([400.0 if m == "CT" else None for m in modality], pa.float64()),
    }
    for name, values in extra.items():
        series = series.append_column(name, values if isinstance(values, pa.ChunkedArray | pa.Array)
                                      else pa.array(values))
    commits = max(1, min(commits, n_studies))
    bounds = np.linspace(0, n_studies, commits + 1).round().astype(np.int64)
    return Plan(studies, series, counts, series_counts, bounds, arrival, n_patients)


def _series_header(row: dict[str, Any]) -> dict[str, Any]:
    """The DICOM JSON (PS3.18 F.2) elements an instance shares with its series, from the same values
    as the typed columns."""

    def el(vr: str, value: Any) -> dict[str, Any]:
        return {"vr": vr, "Value": [value]} if value not in (None, "") else {"vr": vr}

    def da(value: dt.date | None) -> str | None:
        return value.strftime("%Y%m%d") if value else None

    header = {
        "00080016": el("UI", row["sop_class_uid"]),
        "00080020": el("DA", da(row["study_date"])),
        "00080021": el("DA", da(row["series_date"])),
        "00080023": el("DA", da(row["series_date"])),
        "00080030": el("TM", row["study_time"]),
        "00080031": el("TM", row["series_time"]),
        "00080033": el("TM", row["series_time"]),
        "00080050": el("SH", row["accession_number"]),
        "00080060": el("CS", row["modality"]),
        "00080070": el("LO", row["manufacturer"]),
        "00080080": el("LO", row["institution_name"]),
        "00080090": el("PN", {"Alphabetic": row["referring_physician_name"]}),
        "00081010": el("SH", row["station_name"]),
        "00081030": el("LO", row["study_description"]),
        "0008103E": el("LO", row["series_description"]),
        "00081090": el("LO", row["manufacturer_model_name"]),
        "00100010": el("PN", {"Alphabetic": row["patient_name"]}),
        "00100020": el("LO", row["patient_id"]),
        "00100021": el("LO", row["issuer_of_patient_id"]),
        "00100030": el("DA", da(row["patient_birth_date"])),
        "00100040": el("CS", row["patient_sex"]),
        "00101010": el("AS", row["patient_age"]),
        "00180015": el("CS", row["body_part_examined"]),
        "00181030": el("LO", row["protocol_name"]),
        "0020000D": el("UI", row["study_instance_uid"]),
        "0020000E": el("UI", row["series_instance_uid"]),
        "00200010": el("SH", row["study_id"]),
        "00200011": el("IS", row["series_number"]),
        "00280002": el("US", row["samples_per_pixel"]),
        "00280004": el("CS", row["photometric_interpretation"]),
        "00280010": el("US", row["rows"]),
        "00280011": el("US", row["columns"]),
        "00280100": el("US", row["bits_allocated"]),
        "00280101": el("US", row["bits_stored"]),
        "00280103": el("US", row["pixel_representation"]),
    }
    if row["specific_character_set"]:
        header["00080005"] = {"vr": "CS", "Value": [row["specific_character_set"]]}
    if row["slice_thickness"] is not None:
        header["00180050"] = {"vr": "DS", "Value": [row["slice_thickness"]]}
        header["00200037"] = {"vr": "DS", "Value": row["image_orientation_patient"]}
    return header


def _instance_json(series: dict[str, Any], sop: str, number: int, position: list[float] | None) -> str:
    header = {**series, "00080018": {"vr": "UI", "Value": [sop]}, "00200013": {"vr": "IS", "Value": [number]}}
    if position is not None:
        header["00200032"] = {"vr": "DS", "Value": position}
    return orjson.dumps(header, option=orjson.OPT_SORT_KEYS).decode()


def commit_batches(p: Plan, seed: int) -> Iterator[tuple[pa.Table, int]]:
    """One Arrow table per commit (whole studies), with seq dense from 1; memory stays flat."""
    rng = np.random.default_rng(seed + 1)
    series_bounds = np.concatenate([[0], np.cumsum(p.study_series)])
    seq = 0
    uid_counter = 0
    for c in range(len(p.commit_bounds) - 1):
        s0, s1 = int(series_bounds[p.commit_bounds[c]]), int(series_bounds[p.commit_bounds[c + 1]])
        counts = p.series_instances[s0:s1]
        n = int(counts.sum())
        index = np.repeat(np.arange(s0, s1), counts)
        rows = p.series.take(pa.array(index))
        number = np.concatenate([np.arange(1, k + 1) for k in counts.tolist()])
        sops = _uids(rng, 3, uid_counter, n)
        uid_counter += n
        digests = rng.bytes(32 * n).hex()
        shas = [digests[64 * i: 64 * i + 64] for i in range(n)]
        volume = [m in ("CT", "MR", "PT") for m in rows.column("modality").to_pylist()]
        positions = [[-250.0, -250.0, -100.0 - 5.0 * k] if v else None
                     for k, v in zip(number.tolist(), volume, strict=True)]
        series_headers = [_series_header(r) for r in p.series.slice(s0, s1 - s0).to_pylist()]
        headers = [
            _instance_json(series_headers[i - s0], sop, k, pos)
            for i, sop, k, pos in zip(index.tolist(), sops, number.tolist(), positions, strict=True)
        ]
        image_bytes = (rows.column("rows").to_numpy() * rows.column("columns").to_numpy()
                       * rows.column("bits_allocated").to_numpy() // 8
                       * rows.column("samples_per_pixel").to_numpy())
        first_study = int(p.commit_bounds[c])
        changed_at = int(p.arrival[int(p.commit_bounds[c + 1]) - 1])  # when the last study arrived
        columns: dict[str, Any] = {
            "seq": pa.array(np.arange(seq + 1, seq + n + 1), pa.int64()),
            "changed_at": pa.array(np.full(n, changed_at), pa.timestamp("us", tz="UTC")),
            "source": pa.array([f"stow/{first_study}"] * n),
            "sha256": pa.array(shas),
            "blob_key": pa.array([f"blobs/{s[:2]}/{s}.dcm" for s in shas]),
            "size_bytes": pa.array((image_bytes * rng.uniform(0.35, 1.0, n)).astype(np.int64) + 2048),
            "sop_instance_uid": pa.array(sops),
            "instance_number": pa.array(number, pa.int64()),
            "content_date": rows.column("series_date"),
            "content_time": rows.column("series_time"),
            "image_position_patient": pa.array(positions, pa.list_(pa.float64())),
            "dicom_json": pa.array(headers, pa.large_string()),
        }
        arrays = []
        for f in INSTANCES:
            if f.name in columns:
                arrays.append(columns[f.name])
            elif f.name in rows.column_names:
                arrays.append(rows.column(f.name))
            else:
                arrays.append(pa.nulls(n, f.type))
        seq += n
        yield pa.Table.from_arrays(arrays, schema=INSTANCES), seq


@dataclass
class Generated:
    instances: int
    commits: int
    studies: int
    series: int
    patients: int
    seconds: float


# The statistics delta-rs writes per file: the table's `delta.dataSkippingStatsColumns`, strings
# cut to 64 characters.
STATS_STRING_CHARS = 64


def _stat(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def file_stats(batch: pa.Table) -> str:
    """The `stats` of a Delta add action, as delta-rs writes them (numRecords, min, max, nullCount)."""
    import pyarrow.compute as pc

    low: dict[str, Any] = {}
    high: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    from dicomlake.store.lakehouse import STATS_COLUMNS

    for f in (f for f in INSTANCES if f.name in STATS_COLUMNS["instances"]):
        column = batch.column(f.name)
        nulls[f.name] = column.null_count
        if column.null_count == len(column) or pa.types.is_list(f.type):
            continue
        bounds = pc.min_max(column).as_py()
        lo, hi = bounds["min"], bounds["max"]
        if isinstance(lo, str):
            lo = lo[:STATS_STRING_CHARS]  # a prefix is still a lower bound
            if len(hi) > STATS_STRING_CHARS:  # a cut maximum would not be an upper bound: omit it
                hi = None
        low[f.name] = _stat(lo)
        if hi is not None:
            high[f.name] = _stat(hi)
    return json.dumps({"numRecords": batch.num_rows, "minValues": low, "maxValues": high, "nullCount": nulls})


class DirectAppender:
    """Appends one Delta commit per batch by writing the data file and the log entry itself.

    Why: measured here, a `write_deltalake` append costs CPU in proportion to the files already in the
    table (~10 ms at 30 files, ~60 ms at 1,400: it materialises the whole file list per commit), so
    10,000 commits take an hour and more on two shared cores. This writes what delta-rs would: a
    snappy Parquet file, a log entry with commitInfo, the projection's `txn` and one `add` with the
    same statistics, created exclusively (put-if-absent, as delta-rs commits); checkpoints are made
    by delta-rs itself (`create_checkpoint`) at the table's interval (100, the default).
    """

    CHECKPOINT_INTERVAL = 100

    def __init__(self, table: DeltaTable) -> None:
        from urllib.parse import unquote

        self.table = table
        self.root = Path(unquote(table.table_uri.removeprefix("file://")))
        self.version = table.version()

    def append(self, batch: pa.Table, last_seq: int) -> None:
        import uuid

        import pyarrow.parquet as pq

        name = f"part-00000-{uuid.uuid4()}-c000.snappy.parquet"
        pq.write_table(batch, self.root / name, compression="snappy")
        now = int(time.time() * 1000)
        entry = [
            {"commitInfo": {
                "timestamp": now, "operation": "WRITE", "operationParameters": {"mode": "Append"},
                "engineInfo": "dicomlake bench/search.py", "dicomlake.operation": "bench-search",
                "dicomlake.seq": str(last_seq),
                "operationMetrics": {"num_added_files": 1, "num_removed_files": 0,
                                     "num_added_rows": batch.num_rows},
            }},
            {"txn": {"appId": PROJECTION_APP, "version": last_seq, "lastUpdated": now}},
            {"add": {"path": name, "partitionValues": {}, "size": (self.root / name).stat().st_size,
                     "modificationTime": now, "dataChange": True, "stats": file_stats(batch)}},
        ]
        self.version += 1
        with open(self.root / "_delta_log" / f"{self.version:020d}.json", "x") as log:
            log.write("\n".join(json.dumps(action) for action in entry) + "\n")
        if (self.version + 1) % self.CHECKPOINT_INTERVAL == 0:  # where delta-rs makes them
            self.table.update_incremental()
            self.table.create_checkpoint()


def generate(tenant: Any, instances: int, commits: int, seed: int, progress: bool = True,
             writer: str = "direct") -> Generated:
    """Write the data set into the tenant's `instances`, one commit per batch of whole studies."""
    started = time.perf_counter()
    p = plan(instances, commits, seed)
    table = tenant.table("instances")
    direct = DirectAppender(table) if writer == "direct" else None
    for done, (batch, last_seq) in enumerate(commit_batches(p, seed), start=1):
        if direct:
            direct.append(batch, last_seq)
        else:
            write_deltalake(
                table, batch, mode="append",
                commit_properties=CommitProperties(
                    app_transactions=[Transaction(app_id=PROJECTION_APP, version=last_seq)],
                    custom_metadata={"dicomlake.operation": "bench-search", "dicomlake.seq": str(last_seq)},
                ),
            )
        if progress and done % 1000 == 0:
            elapsed = time.perf_counter() - started
            print(f"  generated {done:,} / {len(p.commit_bounds) - 1:,} commits, {last_seq:,} rows, "
                  f"{elapsed:.0f} s", file=sys.stderr, flush=True)
    return Generated(instances, len(p.commit_bounds) - 1, p.studies.num_rows, p.series.num_rows,
                     p.patients, time.perf_counter() - started)


META = "bench-search.json"  # beside tenants/: what was generated, with which options, in how long


def ensure_generated(root: Path, instances: int, commits: int, seed: int,
                     writer: str = "direct") -> tuple[Generated, bool]:
    """Generate into `root` unless it already holds this exact data set; (what, generated now?)."""
    meta = root / META
    wanted = {"instances": instances, "commits": commits, "seed": seed}
    if meta.exists():
        held = json.loads(meta.read_text())
        if {k: held[k] for k in wanted} != wanted:
            sys.exit(f"{root} holds a data set generated with {held}; use another --root for {wanted}")
        return Generated(**{k: held[k] for k in Generated.__dataclass_fields__}), False
    tenant = Lakehouse(root).tenant()
    if (root / "tenants").exists() and tenant.table("instances").version() > 0:
        sys.exit(f"{root} holds a partial or foreign instances table; use an empty --root")
    generated = generate(tenant, instances, commits, seed, writer=writer)
    meta.write_text(json.dumps({**asdict(generated), "seed": seed, "writer": writer}))
    return generated, True


# -- the queries: ours and a plain polars full scan answering the same question -----------------

STUDY_COLUMNS = [
    "study_instance_uid", "study_date", "study_time", "accession_number", "referring_physician_name",
    "patient_name", "patient_id", "patient_birth_date", "patient_sex", "study_id", "study_description",
]
SERIES_COLUMNS = ["series_instance_uid", "modality", "series_number", "series_description",
                  "performed_procedure_step_start_date", "performed_procedure_step_start_time"]
INSTANCE_COLUMNS = ["sop_instance_uid", "sop_class_uid", "instance_number", "study_instance_uid",
                    "series_instance_uid", "rows", "columns"]
UID_TAG = {"studies": "0020000D", "series": "0020000E", "instances": "00080018"}
UID_COLUMN = {"studies": "study_instance_uid", "series": "series_instance_uid",
              "instances": "sop_instance_uid"}


def _studies(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Study-level answer of the scan: study attributes and the computed ones (PS3.18 10.6.3.3)."""
    return frame.group_by("study_instance_uid").agg(
        *[pl.col(c).first() for c in STUDY_COLUMNS[1:]],
        pl.col("modality").unique().alias("modalities_in_study"),
        pl.col("series_instance_uid").n_unique().alias("number_of_study_related_series"),
        pl.len().alias("number_of_study_related_instances"),
    )


@dataclass(frozen=True)
class QuerySpec:
    name: str
    level: str
    target_ms: float
    params: Callable[[Any], dict[str, str]]
    scan: Callable[[pl.LazyFrame, Any], pl.LazyFrame]  # ends in a frame with the level's UID column
    fuzzy: bool = False


def _name_pattern(text: str) -> str:
    """Fuzzy person-name match of the scan: some word of some name component starts with the text,
    case- and accent-insensitively (as `normalize_person_name` stores it)."""
    return r"(^|[\^ =])" + re.escape(normalize_person_name(text))


QUERIES: tuple[QuerySpec, ...] = (
    QuerySpec(
        "study by PatientID", "studies", TARGET_LOOKUP_MS,
        lambda pid: {"PatientID": pid},
        lambda f, pid: _studies(f.filter(pl.col("patient_id") == pid)),
    ),
    QuerySpec(
        "StudyDate range + Modality", "studies", TARGET_RANGE_MS,
        lambda k: {"StudyDate": f"{k[0]:%Y%m%d}-{k[1]:%Y%m%d}", "ModalitiesInStudy": k[2]},
        lambda f, k: _studies(f.filter(pl.col("study_date").is_between(k[0], k[1])))
        .filter(pl.col("modalities_in_study").list.contains(k[2])),
    ),
    QuerySpec(
        "PatientName fuzzy", "studies", TARGET_RANGE_MS,
        lambda name: {"PatientName": name},
        lambda f, name: _studies(
            f.filter(pl.col("patient_name_normalized").str.contains(_name_pattern(name)))
        ),
        fuzzy=True,
    ),
    QuerySpec(
        "series of one study", "series", TARGET_LOOKUP_MS,
        lambda uid: {"StudyInstanceUID": uid},
        lambda f, uid: f.filter(pl.col("study_instance_uid") == uid).group_by("series_instance_uid").agg(
            *[pl.col(c).first() for c in SERIES_COLUMNS[1:]],
            pl.len().alias("number_of_series_related_instances"),
        ),
    ),
    QuerySpec(
        "instances of one series", "instances", TARGET_LOOKUP_MS,
        lambda k: {"StudyInstanceUID": k[0], "SeriesInstanceUID": k[1]},
        lambda f, k: f.filter(
            (pl.col("study_instance_uid") == k[0]) & (pl.col("series_instance_uid") == k[1])
        ).select(INSTANCE_COLUMNS),
    ),
)


def draw_keys(uri: str, repeats: int, seed: int) -> list[list[Any]]:
    """`repeats` random keys per query, drawn from the generated data with a fixed seed (not timed)."""
    keys = (
        pl.scan_delta(DeltaTable(uri))
        .select("patient_id", "patient_name", "study_instance_uid", "series_instance_uid", "study_date")
        .unique("series_instance_uid")
        .sort("series_instance_uid")
        .collect()
    )
    rng = random.Random(seed)
    patients = sorted(set(keys["patient_id"].to_list()))
    series = keys.select("study_instance_uid", "series_instance_uid").rows()
    studies = sorted({s for s, _ in series})
    first, last = keys["study_date"].min(), keys["study_date"].max()
    months = (last.year - first.year) * 12 + last.month - first.month + 1
    modalities = list(SOP_CLASS)

    def quarter() -> tuple[dt.date, dt.date, str]:
        m = first.year * 12 + first.month - 1 + rng.randrange(max(1, months - 2))
        start = dt.date(m // 12, m % 12 + 1, 1)
        m += 3
        end = dt.date(m // 12, m % 12 + 1, 1) - dt.timedelta(days=1)
        return start, end, rng.choice(modalities)

    # Fuzzy keys: accented family names as stored ("Müller") and as typed ("muller"), both must match
    # "Müller^Jürgen"; "muller" first, as in the issue. Falls back to any family name at tiny scale.
    families = sorted({n.split("^")[0] for n in keys["patient_name"].to_list()})
    accented = [f for f in families if not f.isascii() and normalize_person_name(f).isascii()] or families
    names = []
    for i in range(repeats):
        family = "Müller" if i == 0 and "Müller" in accented else rng.choice(accented)
        names.append(normalize_person_name(family) if i % 2 == 0 else family)
    return [
        [rng.choice(patients) for _ in range(repeats)],
        [quarter() for _ in range(repeats)],
        names,
        [rng.choice(studies) for _ in range(repeats)],
        [rng.choice(series) for _ in range(repeats)],
    ]


def progress(text: str) -> None:
    """Where a long run is, on stderr (the figures go to stdout at the end)."""
    print(f"  [{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Timing:
    samples_ms: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_ms) if self.samples_ms else float("nan")

    @property
    def p95(self) -> float:
        return percentile(self.samples_ms, 0.95) if self.samples_ms else float("nan")


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return (time.perf_counter() - started) * 1000, result


def ours_uids(level: str, answer: list[dict[str, Any]]) -> list[str]:
    tag = UID_TAG[level]
    return [item[tag]["Value"][0] for item in answer]


@dataclass
class QueryResult:
    name: str
    level: str
    target_ms: float
    ours: Timing
    scan: Timing
    mean_matches: float  # per key, from the scan (the whole answer)
    truncated: int  # keys whose whole answer is longer than the page (`limit`) ours returns
    mismatches: list[str]

    @property
    def speedup(self) -> float:
        return self.scan.p50 / self.ours.p50

    @property
    def passed(self) -> bool:
        return self.ours.p95 <= self.target_ms and self.speedup >= TARGET_SPEEDUP and not self.mismatches


def compare(spec: QuerySpec, key: Any, ours: list[str], scan: list[str], limit: int) -> str | None:
    """Ours must be the scan's answer: all of it, or `limit` of it when it is longer (one page)."""
    if len(ours) != len(set(ours)):
        return f"{spec.name} {key!r}: duplicate UIDs in ours"
    whole = set(scan)
    if len(whole) <= limit:
        if set(ours) != whole:
            return (f"{spec.name} {key!r}: ours {len(ours)} UIDs, scan {len(whole)}; "
                    f"{len(set(ours) - whole)} only in ours, {len(whole - set(ours))} only in the scan")
        return None
    if len(ours) != limit or not set(ours) <= whole:
        return f"{spec.name} {key!r}: ours {len(ours)} UIDs, not a page of {limit} of the scan's {len(whole)}"
    return None


def measure_queries(index: Any, table: DeltaTable, keys: list[list[Any]], limit: int,
                    with_scan: bool = True) -> list[QueryResult]:
    """Per query: one untimed warm-up each, then per key ours and the scan back to back."""
    results = []
    for spec, spec_keys in zip(QUERIES, keys, strict=True):
        def ours(key: Any, spec: QuerySpec = spec) -> list[dict[str, Any]]:
            return index.search(spec.level, spec.params(key), fuzzy=spec.fuzzy, limit=limit)

        def scan(key: Any, spec: QuerySpec = spec) -> pl.DataFrame:
            return spec.scan(pl.scan_delta(table), key).collect()

        progress(f"{spec.name}: {'ours and scan' if with_scan else 'ours'}, {len(spec_keys)} keys")
        ours(spec_keys[0])
        if with_scan:
            scan(spec_keys[0])
        result = QueryResult(spec.name, spec.level, spec.target_ms, Timing(), Timing(), 0.0, 0, [])
        matches = 0
        for key in spec_keys:
            ms, answer = timed(lambda key=key: ours(key))
            result.ours.samples_ms.append(ms)
            if not with_scan:
                continue
            ms, frame = timed(lambda key=key: scan(key))
            result.scan.samples_ms.append(ms)
            whole = frame.get_column(UID_COLUMN[spec.level]).to_list()
            matches += len(whole)
            result.truncated += len(whole) > limit
            problem = compare(spec, key, ours_uids(spec.level, answer), whole, limit)
            if problem:
                result.mismatches.append(problem)
        result.mean_matches = matches / len(spec_keys)
        results.append(result)
    return results


# -- latency stays flat: maintenance, one more commit, cold start ------------------------------


@dataclass
class TableState:
    version: int
    files: int
    checkpoints: int  # checkpoint files in the log
    log_entries: int  # commit JSON files in the log

    def describe(self) -> str:
        return (f"Delta version {self.version:,}, {self.files:,} data files, "
                f"{self.log_entries:,} log entries, "
                f"{self.checkpoints} checkpoint{'s' if self.checkpoints != 1 else ''}")


def table_state(uri: str) -> TableState:
    table = DeltaTable(uri)
    log = Path(uri) / "_delta_log"
    return TableState(
        table.version(), len(table.file_uris()),
        sum(1 for p in log.iterdir() if ".checkpoint" in p.name),
        sum(1 for p in log.iterdir() if p.suffix == ".json" and p.stem.isdigit()),
    )


def link_copy(source: Path, dest: Path) -> None:
    """A copy of a lakehouse that costs no data: Parquet data files (immutable) are hard-linked, the
    Delta log is copied (delta-rs rewrites `_last_checkpoint`, which must not change the original)."""

    def copy(src: str, dst: str) -> None:
        if src.endswith(".parquet") and "/_delta_log/" not in src:
            Path(dst).hardlink_to(src)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(source / "tenants", dest / "tenants", copy_function=copy)


def one_more_study(tenant: Any, number: int, seed: int) -> str:
    """Commit one small study (3 CR instances, a new patient) as the next seq; return its PatientID."""
    table = tenant.table("instances")
    last = table.transaction_version(PROJECTION_APP) or 0
    p = plan(3, 1, seed + 1000 + number)
    batch = next(commit_batches(p, seed + 1000 + number))[0]
    pid = f"BENCH-NEW-{number:04d}"
    n = batch.num_rows
    now = dt.datetime.now(dt.UTC)
    replace = {
        "seq": pa.array(range(last + 1, last + n + 1), pa.int64()),
        "changed_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        "patient_id": pa.array([pid] * n),
        "study_instance_uid": pa.array([f"{UID_ROOT}9{seed}{number:06d}"] * n),
        "sop_instance_uid": pa.array([f"{UID_ROOT}9{seed}{number:06d}.{i + 1}" for i in range(n)]),
    }
    for name, values in replace.items():
        batch = batch.set_column(batch.schema.get_field_index(name), name, values)
    write_deltalake(table, batch, mode="append", commit_properties=CommitProperties(
        app_transactions=[Transaction(app_id=PROJECTION_APP, version=last + n)]))
    return pid


@dataclass
class Flat:
    state_before: TableState
    state_after: TableState
    maintenance_s: float
    after: list[QueryResult]  # ours only, same keys, after maintain_tables
    refresh_ms: Timing  # first query of a long-lived index after one new commit, seeing it
    refresh_after_ms: Timing  # the same after maintenance
    steady_ms: Timing  # the same lookup with nothing new (reference)
    cold_ms: Timing  # new SearchIndex + first query, as generated
    cold_after_ms: Timing  # the same after maintenance


def measure_refresh(index: Any, tenant: Any, commits: int, seed: int, start: int) -> tuple[Timing, Timing]:
    refresh, steady = Timing(), Timing()
    for number in range(start, start + commits):
        pid = one_more_study(tenant, number, seed)
        ms, answer = timed(lambda pid=pid: index.search("studies", {"PatientID": pid}))
        if len(answer) != 1:
            raise SystemExit(f"a long-lived index missed the new commit ({len(answer)} studies for {pid})")
        refresh.samples_ms.append(ms)
        ms, _ = timed(lambda pid=pid: index.search("studies", {"PatientID": pid}))
        steady.samples_ms.append(ms)
    return refresh, steady


def measure_cold(tenant: Any, pid: str, repeats: int) -> Timing:
    from dicomlake.search import SearchIndex

    cold = Timing()
    for _ in range(repeats):
        started = time.perf_counter()
        SearchIndex(tenant).search("studies", {"PatientID": pid})
        cold.samples_ms.append((time.perf_counter() - started) * 1000)
    return cold


def measure_flat(root: Path, keys: list[list[Any]], limit: int, seed: int, cold_repeats: int,
                 refresh_commits: int) -> Flat:
    """On a link copy of `root`: one more commit at a time, then maintain_tables, then all again."""
    from dicomlake.maintenance import maintain_tables
    from dicomlake.search import SearchIndex

    work = Path(tempfile.mkdtemp(prefix="bench-search-flat-"))
    try:
        progress("cold starts, as generated")
        cold = measure_cold(Lakehouse(root).tenant(), keys[0][0], cold_repeats)
        link_copy(root, work)
        tenant = Lakehouse(work).tenant()
        uri = tenant.table_uri("instances")
        before = table_state(uri)
        index = SearchIndex(tenant)
        index.search("studies", {"PatientID": keys[0][0]})
        progress("one new commit at a time, as generated")
        refresh, steady = measure_refresh(index, tenant, refresh_commits, seed, 0)
        progress("maintain_tables")
        started = time.perf_counter()
        maintain_tables(tenant)
        maintenance_s = time.perf_counter() - started
        after_state = table_state(uri)
        progress("cold starts, after maintenance")
        cold_after = measure_cold(tenant, keys[0][0], cold_repeats)
        index = SearchIndex(tenant)
        after = measure_queries(index, DeltaTable(uri), keys, limit, with_scan=False)
        progress("one new commit at a time, after maintenance")
        refresh_after, _ = measure_refresh(index, tenant, refresh_commits, seed, refresh_commits)
        return Flat(before, after_state, maintenance_s, after, refresh, refresh_after, steady, cold,
                    cold_after)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- output --------------------------------------------------------------------------------------


@dataclass
class Report:
    generated: Generated
    generated_now: bool
    limit: int
    repeats: int
    seed: int
    state: TableState
    first_query_ms: float  # the first query of the long-lived index (builds its cache)
    queries: list[QueryResult]
    flat: Flat | None
    load_before: float
    load_after: float

    @property
    def mismatches(self) -> list[str]:
        return [m for q in self.queries for m in q.mismatches]

    def as_dict(self) -> dict[str, Any]:
        def timing(t: Timing) -> dict[str, Any]:
            return {"p50_ms": round(t.p50, 2), "p95_ms": round(t.p95, 2),
                    "samples_ms": [round(v, 2) for v in t.samples_ms]}

        def query(q: QueryResult) -> dict[str, Any]:
            return {"query": q.name, "level": q.level, "target_p95_ms": q.target_ms, "ours": timing(q.ours),
                    "scan": timing(q.scan), "speedup_p50": round(q.speedup, 1), "pass": q.passed,
                    "mean_matches": q.mean_matches, "truncated_to_limit": q.truncated,
                    "mismatches": q.mismatches}

        out: dict[str, Any] = {
            "generated": asdict(self.generated), "generated_now": self.generated_now, "limit": self.limit,
            "repeats": self.repeats, "seed": self.seed, "table": asdict(self.state),
            "first_query_ms": round(self.first_query_ms, 1),
            "queries": [query(q) for q in self.queries],
            "load_before": self.load_before, "load_after": self.load_after, "cpus": os.cpu_count(),
        }
        if self.flat:
            f = self.flat
            out["flat"] = {
                "table_before": asdict(f.state_before), "table_after": asdict(f.state_after),
                "maintenance_s": round(f.maintenance_s, 1),
                "after_maintenance": [{"query": q.name, "ours": timing(q.ours)} for q in f.after],
                "refresh_one_commit": timing(f.refresh_ms),
                "refresh_one_commit_after": timing(f.refresh_after_ms),
                "steady_same_lookup": timing(f.steady_ms),
                "cold_start": timing(f.cold_ms), "cold_start_after": timing(f.cold_after_ms),
            }
        return out


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def render(r: Report) -> str:
    g = r.generated
    how = "generated now" if r.generated_now else "reused from --root, generated earlier"
    lines = [
        f"dicomlake search benchmark: {g.instances:,} instances ({g.studies:,} studies, {g.series:,} series, "
        f"{g.patients:,} patients) in {g.commits:,} commits; {os.cpu_count()} CPUs",
        f"table as the commits left it (no maintenance): {r.state.describe()}",
        f"generation {g.seconds:.0f} s ({how}; not in any figure); load average 1 min "
        f"{r.load_before:.2f} before, {r.load_after:.2f} after",
        f"{r.repeats} random keys per query (seed {r.seed}), ours and the scan back to back per key; "
        f"ours: one long-lived SearchIndex, limit {r.limit}; scan: pl.scan_delta(table)...collect()",
        f"first query of the long-lived index (builds its cache; in no figure): {r.first_query_ms:,.0f} ms",
        "",
        f"  {'query':<28}{'ours p50':>9}{'p95':>8}{'scan p50':>10}{'p95':>8}{'speed-up':>10}"
        f"{'matches':>9}   {'target':<24}",
    ]
    for q in r.queries:
        target = f"p95 <= {q.target_ms:.0f} ms, >= {TARGET_SPEEDUP:.0f}x"
        lines.append(
            f"  {q.name:<28}{q.ours.p50:>9.1f}{q.ours.p95:>8.1f}{q.scan.p50:>10.0f}{q.scan.p95:>8.0f}"
            f"{q.speedup:>9.0f}x{q.mean_matches:>9.1f}   {target:<24}{_verdict(q.passed)}"
        )
    lines.append("  (ms; speed-up = scan p50 / ours p50; matches = mean whole answer per key, of which ours "
                 f"returns the first {r.limit})")
    truncated = sum(q.truncated for q in r.queries)
    check = (f"ours equals the scan for every key ({truncated} answers longer than limit {r.limit}: a page "
             "of "
             "them)" if not r.mismatches else f"{len(r.mismatches)} answers differ from the scan")
    lines.append(f"  check: {check}  {'OK' if not r.mismatches else 'FAILED'}")
    for problem in r.mismatches[:10]:
        lines.append(f"    {problem}")
    if r.flat:
        f = r.flat
        lines += [
            "",
            "latency stays flat (issue 4 point 4), on a hard-linked copy of the table:",
            f"  as generated:                 {f.state_before.describe()}",
            f"  after maintain_tables ({f.maintenance_s:.0f} s): {f.state_after.describe()}",
            "",
            f"  {'ours, p50 / p95 ms':<34}{'as generated':>16}{'after maintenance':>20}",
        ]
        for before, after in zip(r.queries, f.after, strict=True):
            lines.append(f"  {before.name:<34}{before.ours.p50:>8.1f} /{before.ours.p95:>6.1f}"
                         f"{after.ours.p50:>12.1f} /{after.ours.p95:>6.1f}")
        lines += [
            f"  {'one new commit, next query':<34}{f.refresh_ms.p50:>8.1f} /{f.refresh_ms.p95:>6.1f}"
            f"{f.refresh_after_ms.p50:>12.1f} /{f.refresh_after_ms.p95:>6.1f}"
            f"   (long-lived index sees it; {len(f.refresh_ms.samples_ms)} commits each)",
            f"  {'  same lookup, nothing new':<34}{f.steady_ms.p50:>8.1f} /{f.steady_ms.p95:>6.1f}",
            f"  {'cold start: new index + 1st query':<34}{f.cold_ms.p50:>8.0f} /{f.cold_ms.p95:>6.0f}"
            f"{f.cold_after_ms.p50:>12.0f} /{f.cold_after_ms.p95:>6.0f}"
            f"   ({len(f.cold_ms.samples_ms)} times each)",
        ]
    return "\n".join(lines)


# -- entry point ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--commits", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=20, help="random keys per query (default 20)")
    parser.add_argument("--limit", type=int, default=100, help="page size of ours (QIDO limit, default 100)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--root", type=Path, help="reuse (or keep) the generated lakehouse here")
    parser.add_argument("--writer", choices=("direct", "deltalake"), default="direct",
                        help="how commits are written: data file + log entry (default), or "
                             "write_deltalake (same table, much slower as files accumulate)")
    parser.add_argument("--cold-repeats", type=int, default=3, help="cold starts per table state")
    parser.add_argument("--refresh-commits", type=int, default=5, help="single new commits per table state")
    parser.add_argument("--no-flat", action="store_true", help="skip the maintenance / refresh / cold part")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> Report:
    from dicomlake.search import SearchIndex

    root = args.root or Path(tempfile.mkdtemp(prefix="bench-search-"))
    try:
        generated, now = ensure_generated(root, args.instances, args.commits, args.seed, args.writer)
        if now and not args.json:
            print(f"generated {generated.instances:,} instances in {generated.commits:,} commits in "
                  f"{generated.seconds:.0f} s (not a figure)", file=sys.stderr)
        tenant = Lakehouse(root).tenant()
        uri = tenant.table_uri("instances")
        state = table_state(uri)
        progress("drawing keys")
        keys = draw_keys(uri, args.repeats, args.seed)
        load_before = os.getloadavg()[0]
        index = SearchIndex(tenant)
        progress("first query of the long-lived index")
        first_ms, _ = timed(lambda: index.search("studies", {"PatientID": keys[0][0]}))
        queries = measure_queries(index, DeltaTable(uri), keys, args.limit)
        flat = None if args.no_flat else measure_flat(
            root, keys, args.limit, args.seed, args.cold_repeats, args.refresh_commits)
        return Report(generated, now, args.limit, args.repeats, args.seed, state, first_ms, queries, flat,
                      load_before, os.getloadavg()[0])
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    print(json.dumps(report.as_dict(), indent=2) if args.json else render(report))
    if report.mismatches:
        raise SystemExit("ours differs from the scan (see 'check' above)")


if __name__ == "__main__":
    main()
