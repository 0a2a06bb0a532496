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


class InvalidQuery(DicomlakeError, ValueError):
    """A search parameter that cannot be used; `parameter` names it (as the client spelled it)."""

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"{parameter}: {reason}")
        self.parameter = parameter
        self.reason = reason


class InvalidQueryTag(DicomlakeError, ValueError):
    """An extended query tag that cannot be added: unknown, not indexable, or already there."""


class QueryTagNotFound(DicomlakeError, KeyError):
    """No extended query tag with that key (or keyword, or path)."""

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0]) if self.args else ""
