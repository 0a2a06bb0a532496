"""One demo-sized lakehouse for the cohort and SQL tests: the demo's DICOM samples (300 instances,
seed 0: 30 studies of 10 patients) ingested for real, levels built, and, once the FHIR import
exists, the matching clinical sample data imported through its API.

Expected answers in the tests come from the generators' documented plans (`plan_studies`,
`sample_patients`) by plain Python, never from the SQL under test.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from dicomlake.samples import SampleStudy, plan_studies
from dicomlake.store import Lakehouse
from dicomlake.store.lakehouse import TenantStore

INSTANCES, SEED = 300, 0
AS_OF = datetime.date(2026, 11, 1)


@dataclass(frozen=True)
class DemoLake:
    root: Path
    tenant: TenantStore
    studies: list[SampleStudy]
    clinical_dir: Path | None


def age(birth: datetime.date, on: datetime.date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def build_demo_lake(root: Path, tenant_name: str = "default", with_clinical: bool = True) -> DemoLake:
    from dicomlake.ingest import ingest
    from dicomlake.samples import generate_sample_drop
    from dicomlake.store.levels import build_levels

    drop = root / f"drop-{tenant_name}"
    generate_sample_drop(drop, n_instances=INSTANCES, seed=SEED)
    tenant = Lakehouse(root / "lakehouse").tenant(tenant_name)
    ingest([drop], tenant)
    build_levels(tenant)
    clinical_dir = None
    if with_clinical:
        clinical_dir = import_clinical(root / f"clinical-{tenant_name}", tenant)
    return DemoLake(root, tenant, plan_studies(INSTANCES, SEED), clinical_dir)


def import_clinical(dest: Path, tenant: TenantStore) -> Path | None:
    """The FHIR-import engineer's sample clinical data, imported with their API (None before it exists)."""
    try:
        from dicomlake.fhir.clinical_samples import generate_clinical_data
        from dicomlake.fhir.importer import import_paths
    except ImportError:
        return None
    generate_clinical_data(dest, n_instances=INSTANCES, seed=SEED)
    import_paths(tenant, [dest], None)
    return dest


def check_hand_answer(hand: DemoLake, question: str, patients: list[str],
                      collection: tuple[str, list[str]] | None) -> None:
    """`question` is fully understood and answers `patients` (and the ids of one collection)."""
    from dicomlake import cohort

    result = cohort.run(hand.tenant, question, as_of=AS_OF)
    assert result.unrecognized == []
    assert result.patients == patients
    if collection:
        name, ids = collection
        assert [r["id"] for r in result.rows[name]] == ids
