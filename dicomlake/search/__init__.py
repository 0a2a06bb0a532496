"""Search (QIDO-RS semantics) over a tenant's current studies, series and instances."""

from dicomlake.search.engine import CONTROL_PARAMETERS, Query, SearchIndex, search

__all__ = ["CONTROL_PARAMETERS", "Query", "SearchIndex", "search"]
