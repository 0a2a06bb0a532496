"""Errors with a stable machine-readable code and a human reason."""

from __future__ import annotations


class DicomlakeError(Exception):
    """Base class for errors this library raises on purpose."""


class InvalidInstance(DicomlakeError):
    """Bytes that cannot be stored as a DICOM instance; they go to quarantine with this reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class InvalidName(DicomlakeError, ValueError):
    """A tenant, table or other name that does not fit the allowed pattern."""
