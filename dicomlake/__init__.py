"""dicomlake: an open imaging lakehouse (DICOM in, Delta tables out).

The core library: importable without Dagster or a web framework.
"""

__version__ = "0.1.0"
