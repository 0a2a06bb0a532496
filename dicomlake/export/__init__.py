"""Export for AI/ML: a selection (UIDs, QIDO-RS filters, a cohort) to Parquet tensors or DICOM files.

from dicomlake.export import Selection, export
summary = export(tenant, Selection(uids=("1.2.3",)), "out/", "parquet")
"""

from dicomlake.export.run import ExportError, ExportSummary, export
from dicomlake.export.selection import ResolvedSelection, Selection, SelectionError, resolve

__all__ = [
    "ExportError", "ExportSummary", "ResolvedSelection", "Selection", "SelectionError", "export", "resolve",
]
