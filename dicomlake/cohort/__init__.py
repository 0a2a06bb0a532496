"""Cohorts: declarative definitions compiled to SQL, plain-language questions parsed into them.

from dicomlake import cohort
result = cohort.run(tenant, "women over 60 with lung cancer who had a chest CT", as_of="2026-11-01")
result.patients, result.studies, result.series      # PatientIDs, StudyInstanceUIDs, SeriesInstanceUIDs
result.rows["medications"], result.sql              # requested collections, the SQL that ran
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dicomlake.cohort.definition import (
        CohortDefinition,
        CohortDefinitionError,
        load_definition,
        parse_definition,
    )
    from dicomlake.cohort.runner import CohortResult, run

__all__ = [
    "CohortDefinition",
    "CohortDefinitionError",
    "CohortResult",
    "load_definition",
    "parse_definition",
    "run",
]


def __getattr__(name: str) -> Any:
    # Lazy: `import dicomlake.cohort` stays cheap for the CLI.
    if name in ("CohortResult", "run"):
        from dicomlake.cohort import runner as module

        return getattr(module, name)
    if name in __all__:
        from dicomlake.cohort import definition

        return getattr(definition, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
