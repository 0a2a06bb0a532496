"""DICOM: parsing Part-10 bytes into the tag model (promoted columns + DICOM JSON)."""

from dicomlake.dicom.parse import ParsedInstance, parse_instance

__all__ = ["ParsedInstance", "parse_instance"]
