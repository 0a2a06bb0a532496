"""Lakehouse storage: blobs and Delta tables under one root, one subtree per tenant."""

from dicomlake.store.blobs import blob_key, quarantine_key
from dicomlake.store.lakehouse import DEFAULT_TENANT, Lakehouse, TenantStore

__all__ = ["DEFAULT_TENANT", "Lakehouse", "TenantStore", "blob_key", "quarantine_key"]
