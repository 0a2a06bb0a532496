"""A structural walk over a Part-10 file: proves every element's length fits inside the bytes.

pydicom reads lazily and stops before pixel data, so a file cut short in its pixel data (or in a
sequence it never touches) parses "fine". Storing such a file would hand a broken image to every
reader later, so we walk the element headers (values are skipped, not decoded) to the end.
"""

from __future__ import annotations

import struct

from dicomlake.errors import InvalidInstance

UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM = (0xFFFE, 0xE000)
ITEM_DELIMITER = (0xFFFE, 0xE00D)
SEQUENCE_DELIMITER = (0xFFFE, 0xE0DD)
# Explicit VRs whose length field is 4 bytes (after 2 reserved bytes), PS3.5 §7.1.2.
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
PREAMBLE_LENGTH = 128
MAX_DEPTH = 64


def _truncated(what: str) -> InvalidInstance:
    return InvalidInstance("truncated", f"file ends inside {what}; the bytes are incomplete")


class _Walker:
    def __init__(self, data: bytes, explicit: bool, little: bool) -> None:
        self.data = data
        self.explicit = explicit
        endian = "<" if little else ">"
        self.tag = struct.Struct(endian + "HH")
        self.u16 = struct.Struct(endian + "H")
        self.u32 = struct.Struct(endian + "I")

    def dataset(self, pos: int, in_item: bool, depth: int) -> int:
        data, end = self.data, len(self.data)
        if depth > MAX_DEPTH:
            raise InvalidInstance("malformed", "sequences nested deeper than 64 levels")
        while pos < end:
            if end - pos < 8:
                raise _truncated(f"an element header at byte {pos}")
            group, element = self.tag.unpack_from(data, pos)
            if (group, element) == ITEM_DELIMITER:
                if not in_item:
                    raise InvalidInstance("malformed", f"item delimiter outside an item at byte {pos}")
                return pos + 8
            vr = data[pos + 4 : pos + 6]
            if self.explicit and group != 0xFFFE and vr.isalpha() and vr.isupper():
                if vr in _LONG_VRS:
                    if end - pos < 12:
                        raise _truncated(f"the header of ({group:04X},{element:04X})")
                    length = self.u32.unpack_from(data, pos + 8)[0]
                    pos += 12
                else:
                    length = self.u16.unpack_from(data, pos + 6)[0]
                    pos += 8
            else:
                length = self.u32.unpack_from(data, pos + 4)[0]
                pos += 8
            if length == UNDEFINED_LENGTH:
                pos = self.items(pos, depth + 1, (group, element))
            else:
                if pos + length > end:
                    raise _truncated(
                        f"({group:04X},{element:04X}), which declares {length} bytes "
                        f"but only {end - pos} remain"
                    )
                pos += length
        if in_item:
            raise _truncated("a sequence item (no item delimiter)")
        return pos

    def items(self, pos: int, depth: int, owner: tuple[int, int]) -> int:
        data, end = self.data, len(self.data)
        name = f"({owner[0]:04X},{owner[1]:04X})"
        while True:
            if end - pos < 8:
                raise _truncated(f"the undefined-length value of {name}")
            tag = self.tag.unpack_from(data, pos)
            length = self.u32.unpack_from(data, pos + 4)[0]
            pos += 8
            if tag == SEQUENCE_DELIMITER:
                return pos
            if tag != ITEM:
                raise InvalidInstance(
                    "malformed", f"expected an item or sequence delimiter in {name} at byte {pos - 8}"
                )
            if length == UNDEFINED_LENGTH:
                pos = self.dataset(pos, in_item=True, depth=depth)
            elif pos + length > end:
                raise _truncated(f"an item of {name}")
            else:
                pos += length


def check_structure(data: bytes, dataset_offset: int, transfer_syntax_uid: str) -> None:
    """Raise InvalidInstance("truncated" | "malformed") unless every element fits in `data`."""
    if transfer_syntax_uid == "1.2.840.10008.1.2.1.99":
        return  # deflated: pydicom inflates and parses the whole stream, which proves it complete
    explicit = transfer_syntax_uid != "1.2.840.10008.1.2"
    little = transfer_syntax_uid != "1.2.840.10008.1.2.2"
    _Walker(data, explicit, little).dataset(dataset_offset, in_item=False, depth=0)


def file_meta_end(data: bytes) -> int:
    """Offset of the first dataset byte after the preamble, 'DICM' and the group-2 elements."""
    walker = _Walker(data, explicit=True, little=True)
    pos, end = PREAMBLE_LENGTH + 4, len(data)
    while pos + 8 <= end:
        group = walker.u16.unpack_from(data, pos)[0]
        if group != 0x0002:
            return pos
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > end:
                raise _truncated("the file meta information")
            pos += 12 + walker.u32.unpack_from(data, pos + 8)[0]
        else:
            pos += 8 + walker.u16.unpack_from(data, pos + 6)[0]
    if pos > end:
        raise _truncated("the file meta information")
    return pos
