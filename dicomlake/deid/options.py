"""What a de-identification run is asked to do: the project key and the PS3.15 options."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from dicomlake.errors import DicomlakeError

__all__ = ["DeidError", "DeidOptions", "PrivateTagKey"]

_ELEMENT_KEY = re.compile(r"^[0-9A-Fa-f]{4}[xX]{2}[0-9A-Fa-f]{2}$")


class DeidError(DicomlakeError, ValueError):
    """De-identification cannot be done as asked (bad options, or input that is not DICOM)."""


@dataclass(frozen=True)
class PrivateTagKey:
    """A private element kept despite the profile: its block's creator and "ggggxxee" (xx = any block)."""

    creator: str
    group: int
    element_offset: int  # the low byte of the element number ("ee")

    @classmethod
    def parse(cls, creator: str, key: str) -> PrivateTagKey:
        if not isinstance(creator, str) or not creator.strip():
            raise DeidError(f"private tag whitelist: creator must be a non-empty string, got {creator!r}")
        if not isinstance(key, str) or not _ELEMENT_KEY.match(key):
            raise DeidError(f"private tag whitelist: {key!r} is not of the form 'ggggxxee' (hex digits)")
        group = int(key[:4], 16)
        if group % 2 == 0:
            raise DeidError(f"private tag whitelist: group {key[:4]} is not odd, so not private")
        return cls(creator=creator.strip(), group=group, element_offset=int(key[6:], 16))

    def __str__(self) -> str:
        return f"{self.creator}:{self.group:04X}xx{self.element_offset:02X}"


@dataclass(frozen=True)
class DeidOptions:
    """The Basic Application Level Confidentiality Profile plus the chosen PS3.15 options.

    `project_key` is the secret every pseudonym, replacement UID and date shift is derived from (HMAC-
    SHA256): the same key gives the same outputs, so exports made at different times still join; a
    different key gives unlinkable outputs. It is never written into outputs or `describe()`.
    """

    project_key: str
    retain_longitudinal_modified_dates: bool = False
    retain_patient_characteristics: bool = False
    clean_descriptors: bool = False
    private_tag_whitelist: Iterable[tuple[str, str]] = ()
    _whitelist: tuple[PrivateTagKey, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.project_key, str) or len(self.project_key) < 8:
            raise DeidError("project_key must be a secret string of at least 8 characters")
        keys = []
        for entry in self.private_tag_whitelist:
            try:
                creator, key = entry
            except (TypeError, ValueError):
                raise DeidError(
                    f"private tag whitelist entries are (private_creator, 'ggggxxee'), got {entry!r}"
                ) from None
            keys.append(PrivateTagKey.parse(creator, key))
        object.__setattr__(self, "private_tag_whitelist", tuple((k.creator, _key_text(k)) for k in keys))
        object.__setattr__(self, "_whitelist", tuple(keys))

    @property
    def whitelist(self) -> tuple[PrivateTagKey, ...]:
        return self._whitelist

    @property
    def option_columns(self) -> tuple[str, ...]:
        """The Table E.1-1 option columns these options switch on."""
        columns = []
        if self.retain_longitudinal_modified_dates:
            columns.append("retain_long_modified_dates")
        if self.retain_patient_characteristics:
            columns.append("retain_patient_characteristics")
        if self.clean_descriptors:
            columns.append("clean_descriptors")
        return tuple(columns)


def _key_text(key: PrivateTagKey) -> str:
    return f"{key.group:04X}xx{key.element_offset:02X}"
