from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, generate_uid

from dicomlake.store import Lakehouse, TenantStore
from dicomlake.store.read import scan


@dataclass
class ExportLake:
    root: Path
    tenant: TenantStore
    drop: Path
    broken_sop: str  # an instance whose JPEG bitstream cannot be decoded

    def instances(self) -> list[dict]:
        return scan(self.tenant.table("instances")).to_pylist()

    def source(self, blob_key: str) -> pydicom.Dataset:
        return pydicom.dcmread(self.tenant.blobs.local_path(blob_key))


def write_broken_jpeg(template: Path, dest: Path) -> str:
    """A valid header declaring JPEG Baseline, with a bitstream no decoder can read."""
    ds = pydicom.dcmread(template)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0 this is not a jpeg bitstream \xff\xd9"])
    ds["PixelData"].VR = "OB"
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


@pytest.fixture(scope="session")
def lake(tmp_path_factory: pytest.TempPathFactory) -> ExportLake:
    from dicomlake.ingest import ingest
    from dicomlake.samples import generate_sample_drop
    from dicomlake.store.levels import build_levels

    root = tmp_path_factory.mktemp("export")
    drop = root / "drop"
    generate_sample_drop(drop, n_instances=40, seed=11)
    template = sorted(drop.rglob("*.dcm"))[0]
    broken = write_broken_jpeg(template, drop / "broken" / "broken.dcm")
    tenant = Lakehouse(root / "lake").tenant("acme")
    summary = ingest([drop], tenant)
    assert summary.quarantined == 0
    build_levels(tenant)
    return ExportLake(root, tenant, drop, broken)
