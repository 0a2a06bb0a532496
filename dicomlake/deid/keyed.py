"""Values derived from the project key: pseudonyms, replacement UIDs and per-patient date shifts.

Every derivation is HMAC-SHA256(project key, purpose + ":" + input), so the three never collide and
nothing can be computed back from an output without the key.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["MAX_SHIFT_DAYS", "MIN_SHIFT_DAYS", "KeyedDerivations"]

MIN_SHIFT_DAYS = 365
MAX_SHIFT_DAYS = 3650
"""Dates move back by 1 to 10 years: far enough not to be guessed, and never into the future."""


class KeyedDerivations:
    def __init__(self, project_key: str) -> None:
        self._key = project_key.encode("utf-8")

    def _digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).digest()

    def pseudonym(self, patient_id: str) -> str:
        """32 hex digits (128 bits) for a PatientID; fits LO and PN, stable per key."""
        return self._digest("patient-id", patient_id).hex()[:32].upper()

    def uid(self, uid: str) -> str:
        """A "2.25." UID (PS3.5 B.2) from 128 bits of the keyed hash: at most 44 characters."""
        number = int.from_bytes(self._digest("uid", uid)[:16], "big")
        return f"2.25.{number or 1}"

    def date_shift_days(self, patient_id: str) -> int:
        """The (negative) number of days every date of this patient moves by."""
        span = MAX_SHIFT_DAYS - MIN_SHIFT_DAYS + 1
        return -(MIN_SHIFT_DAYS + int.from_bytes(self._digest("date-shift", patient_id)[:8], "big") % span)
