"""Part-10 bytes -> DICOM JSON (PS3.18 F.2) in one pass over the raw bytes.

pydicom's `dcmread` + `Dataset.to_json_dict` spends most of its time building and converting
DataElement objects. This walker reads the element headers with `struct`, converts each value
straight to its JSON form and never builds a pydicom Dataset. Its output matches pydicom's
`to_json_dict(bulk_data_threshold, handler)` for what pydicom can convert (the differential tests
in tests/dicom/test_fastjson.py hold it to that), and where pydicom would raise on a bad value
(an IS of "1A", a US of 3 bytes) it keeps the element in a lossless form and records a warning.

pydicom is still used, off the hot path, for its data dictionaries (VR lookup of implicit VR
elements and of UN elements), for turning Specific Character Set values into Python codecs, and
for decoding text that uses ISO 2022 escape sequences.
"""

from __future__ import annotations

import base64
import codecs
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import Any

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR, keyword_for_tag, private_dictionary_VR

from dicomlake.errors import InvalidInstance

__all__ = ["HeaderJson", "header_to_json", "read_file_meta"]

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
PREAMBLE_AND_PREFIX = 132

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
PIXEL_REPRESENTATION = 0x00280103
BITS_ALLOCATED = 0x00280100
WAVEFORM_BITS_ALLOCATED = 0x003A021A
LUT_DESCRIPTOR = 0x00283002
LUT_DATA = 0x00283006
PIXEL_DATA = 0x7FE00010
SPECIFIC_CHARACTER_SET = 0x00080005
_HOOK_TAGS = frozenset(
    {SPECIFIC_CHARACTER_SET, PIXEL_REPRESENTATION, BITS_ALLOCATED, WAVEFORM_BITS_ALLOCATED,
     LUT_DESCRIPTOR}
)  # fmt: skip
# stop_before_pixels: the top-level dataset ends at the first of these.
_STOP_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
MAX_DEPTH = 64

_STANDARD_VRS = (
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF",
    "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN",
    "UR", "US", "UT", "UV",
)  # fmt: skip
# VRs whose explicit-VR header has 2 reserved bytes and a 4-byte length (PS3.5 Table 7.1-1).
_LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
_VR_BYTES: dict[bytes, tuple[str, bool]] = {
    vr.encode("ascii"): (vr, vr in _LONG_VRS) for vr in _STANDARD_VRS
}
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
# Bytes per value of the binary VRs, for the length sanity check (OB and UN are byte streams).
_BINARY_UNIT = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_NUMBER_VRS = {
    "US": ("H", 2),
    "SS": ("h", 2),
    "UL": ("I", 4),
    "SL": ("i", 4),
    "FL": ("f", 4),
    "FD": ("d", 8),
    "UV": ("Q", 8),
    "SV": ("q", 8),
}
_PLAIN_TEXT_VRS = frozenset({"AS", "CS", "DA", "DT", "TM"})
_PLAIN_TEXT_AND_UI_VRS = _PLAIN_TEXT_VRS | {"UI"}
_MULTI_TEXT_VRS = frozenset({"SH", "LO", "UC"})
_SINGLE_TEXT_VRS = frozenset({"ST", "LT", "UT"})
_AMBIGUOUS_VRS = frozenset({"OB or OW", "US or SS", "US or OW", "US or SS or OW"})

# Elements whose VR pydicom resolves from other attributes (pydicom.filewriter).
_US_SS_TAGS = frozenset(
    {
        0x00189810, 0x00221452, 0x00280104, 0x00280105, 0x00280106, 0x00280107,
        0x00280108, 0x00280109, 0x00280110, 0x00280111, 0x00280120, 0x00280121,
        0x00281101, 0x00281102, 0x00281103, 0x00283002, 0x00409211, 0x00409216,
        0x00603004, 0x00603006,
    }
)  # fmt: skip
_WAVEFORM_OB_OW_TAGS = frozenset({0x54000110, 0x54000112, 0x5400100A, 0x54001010})
_OVERLAY_DATA_TAGS = frozenset(group << 16 | 0x3000 for group in range(0x6000, 0x601F, 2))
# Palette/LUT descriptors: a first value stored as SS below zero means 65536 + value.
_LUT_DESCRIPTOR_TAGS = frozenset({0x00281101, 0x00281102, 0x00281103, 0x00283002})

# Text delimiters that reset an ISO 2022 code extension (pydicom.valuerep.TEXT_VR_DELIMS); person
# names also reset at '^' and '=' (PS3.5 6.1.2.5.3).
_TEXT_DELIMS = {0x0D, 0x0A, 0x09, 0x0C}
_PN_DELIMS = _TEXT_DELIMS | {0x5E, 0x3D}
_ESC = b"\x1b"
_DEFAULT_ENCODINGS = ["iso8859"]  # pydicom.charset.default_encoding
# CPython decodes these spellings without a codec registry lookup.
_FAST_CODEC_NAMES = {"iso8859-1": "latin-1", "utf-8": "utf-8", "ascii": "ascii"}

_CACHE_LIMIT = 65536
_dict_vr_cache: dict[int, str | None] = {}
_private_vr_cache: dict[tuple[int, str], str] = {}
_charset_cache: dict[tuple[str, ...], tuple[list[str], str, list[str]]] = {}
_struct_cache: dict[tuple[str, str, int], struct.Struct] = {}
_key_cache: dict[int, str] = {}


@dataclass
class HeaderJson:
    header: dict[str, Any]  # DICOM JSON of the dataset, group 0002 and pixel data excluded
    warnings: list[str]  # one human sentence per element that could not be converted cleanly
    # Where the walk stopped in `data`: the top-level pixel data element, or the end. Everything
    # before it is proven to fit in the bytes; check_structure only needs to look from here on.
    end_offset: int


def _dictionary_vr(tag: int) -> str | None:
    """The data dictionary VR of a standard tag (repeaters included), None when unknown."""
    try:
        return _dict_vr_cache[tag]
    except KeyError:
        pass
    try:
        vr: str | None = dictionary_VR(tag)
    except KeyError:
        vr = None
    if len(_dict_vr_cache) >= _CACHE_LIMIT:
        _dict_vr_cache.clear()
    _dict_vr_cache[tag] = vr
    return vr


def _struct(endian: str, code: str, count: int) -> struct.Struct:
    key = (endian, code, count)
    found = _struct_cache.get(key)
    if found is None:
        if len(_struct_cache) >= _CACHE_LIMIT:
            _struct_cache.clear()
        found = _struct_cache[key] = struct.Struct(f"{endian}{count}{code}")
    return found


def _json_key(tag: int) -> str:
    key = _key_cache.get(tag)
    if key is None:
        if len(_key_cache) >= _CACHE_LIMIT:
            _key_cache.clear()
        key = _key_cache[tag] = f"{tag:08X}"
    return key


def _tag_name(tag: int) -> str:
    group, element = tag >> 16, tag & 0xFFFF
    if group & 1:
        keyword = "private creator" if 0x10 <= element <= 0xFF else "private tag"
    else:
        keyword = keyword_for_tag(tag) or "unknown tag"
    return f"({group:04X},{element:04X}) {keyword}"


def _charset(values: tuple[str, ...]) -> tuple[list[str], str, list[str]]:
    """(pydicom encodings, codec of the first one, problems) for a Specific Character Set."""
    found = _charset_cache.get(values)
    if found is not None:
        return found
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            encodings = convert_encodings(values[0] if len(values) == 1 else list(values))
        except (LookupError, ValueError) as exc:  # only in pydicom's strict mode
            encodings = list(_DEFAULT_ENCODINGS)
            caught.append(warnings.WarningMessage(str(exc), UserWarning, "", 0))
    problems = [str(w.message) for w in caught]
    try:
        name = codecs.lookup(encodings[0]).name
        first = _FAST_CODEC_NAMES.get(name, encodings[0])
    except LookupError:
        first = "latin-1"
        problems.append(f"unknown Python codec {encodings[0]!r}")
    found = (encodings, first, problems)
    if len(_charset_cache) >= 1024:
        _charset_cache.clear()
    _charset_cache[values] = found
    return found


class _Context:
    """The state of one dataset (the top level or one sequence item) while it is walked."""

    __slots__ = (
        "bits_allocated",
        "codec",
        "creators",
        "encodings",
        "implicit",
        "inherits",
        "lut_first",
        "parent",
        "pixel_rep",
        "waveform_bits",
    )

    def __init__(
        self,
        encodings: list[str],
        codec: str,
        implicit: bool,
        parent: _Context | None,
        inherits: bool,
    ) -> None:
        self.encodings = encodings
        self.codec = codec
        self.implicit = implicit
        self.parent = parent
        # pydicom hands PixelRepresentation down only into items of defined-length sequences.
        self.inherits = inherits
        self.creators: dict[int, str] | None = None
        self.pixel_rep: int | None = None
        self.bits_allocated: int | None = None
        self.waveform_bits: int | None = None
        self.lut_first: int | None = None

    def inherited_pixel_rep(self) -> int | None:
        ctx: _Context | None = self
        while ctx is not None:
            if ctx.pixel_rep is not None:
                return ctx.pixel_rep
            ctx = ctx.parent if ctx.inherits else None
        return None


def _looks_implicit(data: bytes, pos: int, end: int, assumed: bool) -> bool:
    """pydicom's check of the first element's VR bytes: two capitals mean explicit VR."""
    if end - pos < 6:
        return assumed
    b0, b1 = data[pos + 4], data[pos + 5]
    return not (0x40 < b0 < 0x5B and 0x40 < b1 < 0x5B)


class _Layout:
    """Unpackers for one byte order, built once per process."""

    def __init__(self, endian: str) -> None:
        self.endian = endian
        self.explicit_header = struct.Struct(endian + "HH2sH").unpack_from
        self.implicit_header = struct.Struct(endian + "HHI").unpack_from
        self.u32 = struct.Struct(endian + "I").unpack_from
        self.u16 = struct.Struct(endian + "H").unpack_from
        # VR -> (size, unpack_from) of a single number, for the one-value fast path.
        self.singles = {
            vr: (size, struct.Struct(endian + code).unpack_from)
            for vr, (code, size) in _NUMBER_VRS.items()
        }


_LAYOUTS = {True: _Layout("<"), False: _Layout(">")}


class _Walker:
    def __init__(self, data: bytes, little: bool, bulk_data_threshold: int) -> None:
        layout = _LAYOUTS[little]
        self.data = data
        self.endian = layout.endian
        # pydicom: a value goes to a BulkDataURI when its base64 form would exceed the threshold.
        self.bulk_limit = (bulk_data_threshold // 4) * 3
        self.warnings: list[str] = []
        self.pending: list[tuple[dict[str, Any], int, str, int, int, _Context, bool]] = []
        self.explicit_header = layout.explicit_header
        self.implicit_header = layout.implicit_header
        self.u32 = layout.u32
        self.u16 = layout.u16
        self.singles = layout.singles

    # --- structure ------------------------------------------------------------------------

    def warn(self, tag: int, problem: str) -> None:
        self.warnings.append(f"{_tag_name(tag)}: {problem}.")

    def dataset(
        self, pos: int, end: int, ctx: _Context, top: bool, depth: int
    ) -> tuple[dict[str, Any], int]:
        """Walk one dataset from `pos`; return its JSON and the position after it.

        Ends at `end`, at an item delimiter (consumed) or, at the top level, at pixel data.
        """
        if depth > MAX_DEPTH:
            raise InvalidInstance("malformed", "sequences nested deeper than 64 levels")
        data = self.data
        out: dict[str, Any] = {}
        explicit_header = self.explicit_header
        implicit_header = self.implicit_header
        u32 = self.u32
        vr_bytes = _VR_BYTES
        singles = self.singles
        plain_text = _PLAIN_TEXT_AND_UI_VRS
        hook_tags = _HOOK_TAGS
        key_cache = _key_cache
        dict_vr_cache = _dict_vr_cache
        implicit = ctx.implicit
        while pos < end:
            if end - pos < 8:
                raise _truncated(f"an element header at byte {pos}")
            if implicit:
                group, element, length = implicit_header(data, pos)
                vr: str | None = None
                vpos = pos + 8
            else:
                group, element, raw_vr, length = explicit_header(data, pos)
                info = vr_bytes.get(raw_vr)
                if info is not None:
                    vr, long = info
                    if long:
                        if end - pos < 12:
                            raise _truncated(f"the header of ({group:04X},{element:04X})")
                        length = u32(data, pos + 8)[0]
                        vpos = pos + 12
                    else:
                        vpos = pos + 8
                elif not (b"AA" <= raw_vr <= b"ZZ"):
                    # Not a VR at all: this element is implicit VR (as pydicom assumes).
                    length = u32(data, pos + 4)[0]
                    vr = None
                    vpos = pos + 8
                else:
                    vr = raw_vr.decode("latin-1")  # an unknown VR with a 2-byte length
                    vpos = pos + 8
            tag = group << 16 | element
            if tag == ITEM_DELIMITER:
                return out, vpos
            if top and tag in _STOP_TAGS:
                return out, pos
            if length == UNDEFINED:
                element_json, pos = self.undefined_length(tag, vr, vpos, end, ctx, depth)
            else:
                pos = vpos + length
                if pos > end:
                    raise _overrun(tag, length, end - vpos, top)
                if top and group == 2:
                    continue  # file meta elements belong to the file meta, not the dataset
                if vr is None:
                    vr = dict_vr_cache.get(tag)
                    if vr is None:
                        vr = self.implicit_vr(tag, ctx)
                elif vr == "UN":
                    vr = self.vr_for_un(tag, length, ctx)
                # Fast paths for the commonest shapes; everything else goes through value().
                single = singles.get(vr)
                if single is not None and length == single[0]:
                    element_json = {"vr": vr, "Value": [single[1](data, vpos)[0]]}
                elif vr in plain_text and length:
                    text = data[vpos:pos].decode("latin-1").rstrip(" \x00")
                    element_json = {"vr": vr, "Value": text.split("\\")} if text else {"vr": vr}
                elif vr == "SQ":
                    items = self.sequence(vpos, pos, ctx, implicit, True, depth, tag)[0]
                    element_json = {"vr": "SQ", "Value": items}
                else:
                    element_json = self.value(tag, vr, vpos, length, ctx, False)
            if top and group == 2:
                continue
            if tag in hook_tags:
                self.hook(tag, element_json, vpos, length, ctx)
            key = key_cache.get(tag)
            if key is None:
                key = _json_key(tag)
            out[key] = element_json
        return out, pos

    def undefined_length(
        self, tag: int, vr: str | None, vpos: int, end: int, ctx: _Context, depth: int
    ) -> tuple[dict[str, Any], int]:
        if vr == "UN":
            vr = "SQ"  # PS3.5 6.2.2: UN of undefined length is an implicit VR sequence
        elif vr is None:
            vr = _dictionary_vr(tag)
            if vr is None and end - vpos >= 4:
                group, element = struct.unpack_from(self.endian + "HH", self.data, vpos)
                if group << 16 | element == ITEM:
                    vr = "SQ"
        if vr == "SQ":
            items, pos = self.sequence(vpos, end, ctx, ctx.implicit, False, depth, tag)
            return {"vr": "SQ", "Value": items}, pos
        value_end, pos = self.undefined_value(vpos, end, tag)
        if vr is None:
            vr = self.implicit_vr(tag, ctx)
        return self.value(tag, vr, vpos, value_end - vpos, ctx, True), pos

    def undefined_value(self, vpos: int, end: int, tag: int) -> tuple[int, int]:
        """(end of value, position after its sequence delimiter) for a non-SQ undefined length."""
        data = self.data
        pos = vpos
        # Usually encapsulated pixel data: items of known length, then a sequence delimiter.
        while end - pos >= 8:
            group, element, length = self.implicit_header(data, pos)
            item_tag = group << 16 | element
            if item_tag == SEQUENCE_DELIMITER:
                return pos, pos + 8
            if item_tag != ITEM or length == UNDEFINED or pos + 8 + length > end:
                break
            pos += 8 + length
        # Otherwise scan for the delimiter's bytes (as pydicom does).
        delimiter = struct.pack(self.endian + "HH", 0xFFFE, 0xE0DD)
        found = data.find(delimiter, vpos, end)
        if found < 0 or found + 8 > end:
            raise _truncated(f"the undefined-length value of {_tag_name(tag)}")
        return found, found + 8

    def sequence(
        self,
        pos: int,
        end: int,
        parent: _Context,
        implicit: bool,
        defined: bool,
        depth: int,
        tag: int,
    ) -> tuple[list[dict[str, Any]], int]:
        """Items of a sequence whose value starts at `pos`; `end` bounds a defined length."""
        data = self.data
        items: list[dict[str, Any]] = []
        header = self.implicit_header
        while pos < end:
            if end - pos < 8:
                raise _truncated(f"an item header of {_tag_name(tag)}")
            group, element, length = header(data, pos)
            pos += 8
            if group << 16 | element == SEQUENCE_DELIMITER:
                return items, pos
            # Sequences may use implicit VR inside an explicit VR dataset (PS3.5 6.2.2), so each
            # item of an explicit VR sequence is checked; implicit VR never switches to explicit.
            item_implicit = implicit or _looks_implicit(data, pos, end, implicit)
            ctx = _Context(parent.encodings, parent.codec, item_implicit, parent, defined)
            if length == UNDEFINED:
                item, pos = self.dataset(pos, end, ctx, False, depth + 1)
            else:
                item_end = pos + length
                if item_end > end:
                    # pydicom reads such an item up to the end of the sequence; so do we.
                    self.warn(
                        tag,
                        f"an item declares {length} bytes but the sequence has only "
                        f"{end - pos} left; read up to the end of the sequence",
                    )
                    item_end = end
                item, pos = self.dataset(pos, item_end, ctx, False, depth + 1)
            items.append(item)
        if not defined:
            raise _truncated(f"{_tag_name(tag)} (no sequence delimiter)")
        return items, pos

    # --- VR lookup --------------------------------------------------------------------------

    def implicit_vr(self, tag: int, ctx: _Context) -> str:
        vr = _dictionary_vr(tag)
        if vr is not None:
            return vr
        if tag >> 16 & 1:
            return self.private_vr(tag, ctx)
        if tag & 0xFFFF == 0:
            return "UL"  # group length
        self.warn(tag, "not in the data dictionary and stored in implicit VR; kept as UN")
        return "UN"

    def vr_for_un(self, tag: int, length: int, ctx: _Context) -> str:
        """pydicom replaces an explicit UN by the known VR of the tag (config default)."""
        if tag >> 16 & 1:
            return self.private_vr(tag, ctx)
        if length < 0xFFFF:
            return _dictionary_vr(tag) or "UN"
        return "UN"

    @staticmethod
    def private_vr(tag: int, ctx: _Context) -> str:
        element = tag & 0xFFFF
        if 0x10 <= element <= 0xFF:
            return "LO"  # private creator
        if element & 0xFF00 and ctx.creators:
            creator = ctx.creators.get((tag & 0xFFFF0000) | element >> 8)
            if creator:
                key = (tag, creator)
                vr = _private_vr_cache.get(key)
                if vr is None:
                    try:
                        vr = private_dictionary_VR(tag, creator)
                    except KeyError:
                        vr = "UN"
                    if len(_private_vr_cache) >= _CACHE_LIMIT:
                        _private_vr_cache.clear()
                    _private_vr_cache[key] = vr
                return vr
        return "UN"

    # --- values -----------------------------------------------------------------------------

    def value(
        self, tag: int, vr: str, vpos: int, length: int, ctx: _Context, undefined: bool
    ) -> dict[str, Any]:
        data = self.data
        if vr in _AMBIGUOUS_VRS:
            # Resolved at the end: pydicom looks at the whole dataset (PixelRepresentation...).
            element: dict[str, Any] = {"vr": vr}
            self.pending.append((element, tag, vr, vpos, length, ctx, undefined))
            return element
        if length == 0:
            return {"vr": vr}
        if vr == "DS":
            return self.decimal_string(tag, vpos, length)
        if vr in _MULTI_TEXT_VRS:
            raw = data[vpos : vpos + length]
            if _ESC in raw:
                text = self.decode(raw, ctx, _TEXT_DELIMS, tag)
            else:
                try:
                    text = raw.decode(ctx.codec)
                except UnicodeDecodeError:
                    text = self.decode(raw, ctx, _TEXT_DELIMS, tag)
            values = [v.rstrip("\x00 ") for v in text.split("\\")]
            if len(values) == 1:
                if tag & 0x10000 and 0x10 <= tag & 0xFFFF <= 0xFF:  # private creator
                    if ctx.creators is None:
                        ctx.creators = {}
                    ctx.creators[tag] = values[0]
                if not values[0]:
                    return {"vr": vr}
            return {"vr": vr, "Value": values}
        number = _NUMBER_VRS.get(vr)
        if number is not None:
            return self.numbers(tag, vr, number, vpos, length)
        if vr in _PLAIN_TEXT_AND_UI_VRS:
            text = data[vpos : vpos + length].decode("latin-1").rstrip(" \x00")
            return {"vr": vr, "Value": text.split("\\")} if text else {"vr": vr}
        if vr == "IS":
            return self.integer_string(tag, vpos, length)
        if vr == "PN":
            return self.person_name(tag, vpos, length, ctx)
        if vr in _BINARY_VRS:
            unit = _BINARY_UNIT.get(vr)
            if unit and length % unit:
                self.warn(tag, f"{vr} value of {length} bytes is not a multiple of {unit}")
            return self.binary(tag, vr, vpos, length)
        if vr in _SINGLE_TEXT_VRS:
            text = self.decode(data[vpos : vpos + length], ctx, _TEXT_DELIMS, tag).rstrip("\x00 ")
            return {"vr": vr, "Value": [text]} if text else {"vr": vr}
        if vr == "AE":
            values = [v.strip() for v in data[vpos : vpos + length].decode("latin-1").split("\\")]
            if len(values) == 1 and not values[0]:
                return {"vr": vr}
            return {"vr": vr, "Value": values}
        if vr == "UR":
            text = data[vpos : vpos + length].decode("latin-1").rstrip()
            return {"vr": vr, "Value": [text]} if text else {"vr": vr}
        if vr == "AT":
            return self.attribute_tags(tag, vpos, length)
        self.warn(tag, f"unknown VR {vr!r}; kept as UN")
        return self.binary(tag, "UN", vpos, length)

    def binary(self, tag: int, vr: str, vpos: int, length: int) -> dict[str, Any]:
        if length == 0:
            return {"vr": vr}
        if length > self.bulk_limit:
            return {"vr": vr, "BulkDataURI": f"bulkdata/{tag:08X}"}
        encoded = base64.b64encode(self.data[vpos : vpos + length]).decode("ascii")
        return {"vr": vr, "InlineBinary": encoded}

    def numbers(
        self,
        tag: int,
        vr: str,
        number: tuple[str, int],
        vpos: int,
        length: int,
        fix_lut: bool = True,
    ) -> dict[str, Any]:
        code, size = number
        count, rest = divmod(length, size)
        if rest:
            self.warn(tag, f"{vr} value of {length} bytes is not a multiple of {size}; kept as UN")
            return self.binary(tag, "UN", vpos, length)
        values = list(_struct(self.endian, code, count).unpack_from(self.data, vpos))
        if fix_lut and count > 1 and values[0] < 0 and tag in _LUT_DESCRIPTOR_TAGS:
            values[0] += 65536
        return {"vr": vr, "Value": values}

    def attribute_tags(self, tag: int, vpos: int, length: int) -> dict[str, Any]:
        count, rest = divmod(length, 4)
        if count == 0:
            self.warn(tag, f"AT value of {length} bytes holds no tag; kept as UN")
            return self.binary(tag, "UN", vpos, length)
        if rest:
            self.warn(
                tag, f"AT value of {length} bytes is not a multiple of 4; extra bytes dropped"
            )
        halves = _struct(self.endian, "H", count * 2).unpack_from(self.data, vpos)
        values = [f"{halves[i]:04X}{halves[i + 1]:04X}" for i in range(0, count * 2, 2)]
        return {"vr": "AT", "Value": values}

    def decimal_string(self, tag: int, vpos: int, length: int) -> dict[str, Any]:
        text = self.data[vpos : vpos + length].decode("latin-1").strip().rstrip(" \x00")
        if not text:
            return {"vr": "DS"}
        parts = text.split("\\")
        try:
            return {"vr": "DS", "Value": [float(part) for part in parts]}
        except ValueError:
            pass
        values: list[Any] = []
        try:
            for part in parts:
                values.append(float(part) if part.strip() else None)
        except ValueError:
            return self.bad_number(tag, "DS", parts)
        self.warn(tag, "DS has an empty value among several; written as null")
        return {"vr": "DS", "Value": values}

    def integer_string(self, tag: int, vpos: int, length: int) -> dict[str, Any]:
        parts = self.data[vpos : vpos + length].decode("latin-1").rstrip(" \x00").split("\\")
        if len(parts) == 1 and not parts[0]:
            return {"vr": "IS"}
        try:
            return {"vr": "IS", "Value": [int(part) for part in parts]}
        except ValueError:
            pass
        values: list[Any] = []
        try:
            for part in parts:
                if not part.strip():
                    values.append(None)
                    continue
                try:
                    values.append(int(part))
                except ValueError:
                    values.append(int(float(part)))  # pydicom accepts "1.0" (and truncates "1.5")
        except (ValueError, OverflowError):
            return self.bad_number(tag, "IS", parts)
        if None in values:
            self.warn(tag, "IS has an empty value among several; written as null")
        return {"vr": "IS", "Value": values}

    def bad_number(self, tag: int, vr: str, parts: list[str]) -> dict[str, Any]:
        values = [part.strip(" \x00") for part in parts]
        shown = "\\".join(values)
        self.warn(tag, f"{vr} value {shown[:64]!r} is not a number; kept as text")
        return {"vr": vr, "Value": values}

    def person_name(self, tag: int, vpos: int, length: int, ctx: _Context) -> dict[str, Any]:
        raw = self.data[vpos : vpos + length].rstrip(b"\x00 ")
        names = self.decode(raw, ctx, _PN_DELIMS, tag).split("\\")
        values: list[Any] = []
        for name in names:
            groups = name.split("=")
            while groups and not groups[-1]:
                groups.pop()
            if not groups:
                values.append(None)
                continue
            person = {"Alphabetic": groups[0]}
            if len(groups) > 1:
                person["Ideographic"] = groups[1]
                if len(groups) > 2:
                    person["Phonetic"] = groups[2]
            values.append(person)
        if len(values) == 1 and values[0] is None:
            return {"vr": "PN"}
        if None in values:
            self.warn(tag, "PN has an empty name among several; written as null")
        return {"vr": "PN", "Value": values}

    def decode(self, raw: bytes, ctx: _Context, delimiters: set[int], tag: int) -> str:
        """Text of a value in the dataset's Specific Character Set (pydicom's rules)."""
        if _ESC not in raw:
            try:
                return raw.decode(ctx.codec)
            except UnicodeDecodeError:
                self.warn(
                    tag,
                    f"text is not valid {ctx.encodings[0]}; undecodable bytes replaced by U+FFFD",
                )
                return raw.decode(ctx.codec, errors="replace")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                text = decode_bytes(raw, ctx.encodings, delimiters)
            except (UnicodeError, LookupError, ValueError) as exc:  # pydicom's strict mode
                text = raw.decode("latin-1")
                caught.append(warnings.WarningMessage(str(exc), UserWarning, "", 0))
        if caught:
            self.warn(
                tag,
                f"text with code extensions could not be decoded cleanly ({caught[0].message})",
            )
        return text

    # --- VRs that depend on other attributes --------------------------------------------------

    def hook(
        self, tag: int, element: dict[str, Any], vpos: int, length: int, ctx: _Context
    ) -> None:
        """Remember the attributes that later elements of this dataset depend on."""
        values = element.get("Value")
        if element["vr"] == "SQ":
            return
        if tag == SPECIFIC_CHARACTER_SET:
            encodings, codec, problems = _charset(tuple(values or ("",)))
            ctx.encodings = encodings
            ctx.codec = codec
            for problem in problems:
                self.warn(tag, problem)
        elif tag == LUT_DESCRIPTOR:
            # Its VR may be "US or SS" (resolved at the end); LUT Data only asks "is it 1?".
            ctx.lut_first = self.u16(self.data, vpos)[0] if length >= 2 else None
        else:
            first = values[0] if values and isinstance(values[0], int) else None
            if tag == PIXEL_REPRESENTATION:
                ctx.pixel_rep = first
            elif tag == BITS_ALLOCATED:
                ctx.bits_allocated = first
            else:
                ctx.waveform_bits = first

    def plain_vr(self, tag: int, vr: str, ctx: _Context, undefined: bool) -> str:
        """The VR pydicom settles on for an element whose dictionary VR is ambiguous."""
        if tag == PIXEL_DATA:
            if undefined:
                return "OB"
            if ctx.implicit:
                return "OW"
            return "OW" if (ctx.bits_allocated or 0) > 8 else "OB"
        if tag in _US_SS_TAGS or vr == "US or SS":
            pixel_rep = ctx.inherited_pixel_rep()
            return "US" if not pixel_rep else "SS"
        if tag in _WAVEFORM_OB_OW_TAGS:
            if ctx.implicit:
                return "OW"
            return "OW" if (ctx.waveform_bits or 0) > 8 else "OB"
        if tag == LUT_DATA:
            return "US" if ctx.lut_first == 1 else "OW"
        if vr == "US or OW":
            return "US"
        return "OW"  # overlay data, "OB or OW" and "US or SS or OW" elsewhere

    def resolve_pending(self) -> None:
        for element, tag, vr, vpos, length, ctx, undefined in self.pending:
            plain = self.plain_vr(tag, vr, ctx, undefined)
            number = _NUMBER_VRS.get(plain)
            if length == 0:
                resolved = {"vr": plain}
            elif number is not None:
                resolved = self.numbers(tag, plain, number, vpos, length, fix_lut=False)
            else:
                resolved = self.binary(tag, plain, vpos, length)
            element.clear()
            element.update(resolved)
        self.pending.clear()


def _truncated(what: str) -> InvalidInstance:
    return InvalidInstance("truncated", f"file ends inside {what}; the bytes are incomplete")


def _overrun(tag: int, length: int, room: int, top: bool) -> InvalidInstance:
    if top:
        return InvalidInstance(
            "truncated",
            f"{_tag_name(tag)} declares {length} bytes but only {room} remain; "
            "the bytes are incomplete",
        )
    return InvalidInstance(
        "malformed",
        f"{_tag_name(tag)} declares {length} bytes but its sequence item has only {room} left",
    )


def header_to_json(
    data: bytes, dataset_offset: int, transfer_syntax_uid: str, bulk_data_threshold: int = 1024
) -> HeaderJson:
    """DICOM JSON of the dataset that starts at `dataset_offset` (after the file meta).

    Group 0002 and top-level pixel data ((7FE0,0010), (7FE0,0008), (7FE0,0009) and anything
    after them) are left out, as with pydicom's `dcmread(stop_before_pixels=True)`. Values that
    cannot be converted are kept in a lossless form and described in `warnings`; only a broken
    structure raises InvalidInstance("truncated" | "malformed").
    """
    implicit = transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN
    little = transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN
    deflated = transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    original_length = len(data)
    if deflated:
        try:
            data = zlib.decompress(data[dataset_offset:], -zlib.MAX_WBITS)
        except zlib.error as exc:
            raise InvalidInstance(
                "malformed", f"the deflated dataset cannot be inflated: {exc}"
            ) from exc
        dataset_offset = 0
    walker = _Walker(data, little, bulk_data_threshold)
    end = len(data)
    found_implicit = _looks_implicit(data, dataset_offset, end, implicit)
    if found_implicit != implicit:
        first = "implicit" if found_implicit else "explicit"
        walker.warnings.append(
            f"The transfer syntax {transfer_syntax_uid} says "
            f"{'implicit' if implicit else 'explicit'} VR but the dataset is encoded in "
            f"{first} VR; it was read as {first} VR."
        )
    ctx = _Context(list(_DEFAULT_ENCODINGS), "latin-1", found_implicit, None, False)
    try:
        header, stopped = walker.dataset(dataset_offset, end, ctx, True, 0)
    except struct.error as exc:  # a header unpack past the end of the bytes
        raise _truncated(f"an element header ({exc})") from exc
    walker.resolve_pending()
    # Inflating proved the whole deflated stream complete; offsets there are not file offsets.
    return HeaderJson(header=header, warnings=walker.warnings,
                      end_offset=original_length if deflated else stopped)


# --- file meta information ----------------------------------------------------------------

_META_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR"}
    | {"UT"}
)


def read_file_meta(data: bytes) -> dict[str, str]:
    """The group 0002 elements after the preamble and 'DICM', as keyword -> text.

    File meta is explicit VR little endian (PS3.10 7.1); like pydicom, a file meta written in
    implicit VR is recognised by its VR bytes. Text values are stripped of padding; numbers are
    given in decimal; binary values (FileMetaInformationVersion) are left out.
    """
    pos, end = PREAMBLE_AND_PREFIX, len(data)
    meta: dict[str, str] = {}
    implicit = _looks_implicit(data, pos, end, False)
    while end - pos >= 8:
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        tag = group << 16 | element
        if implicit:
            length = struct.unpack_from("<I", data, pos + 4)[0]
            vr = _dictionary_vr(tag) or ("UL" if element == 0 else "UN")
            pos += 8
        else:
            vr = data[pos + 4 : pos + 6].decode("latin-1")
            if vr in _LONG_VRS:
                if end - pos < 12:
                    raise _truncated("the file meta information")
                length = struct.unpack_from("<I", data, pos + 8)[0]
                pos += 12
            else:
                length = struct.unpack_from("<H", data, pos + 6)[0]
                pos += 8
        if length == UNDEFINED or pos + length > end:
            raise _truncated("the file meta information")
        raw = data[pos : pos + length]
        pos += length
        keyword = keyword_for_tag(tag) or f"{tag:08X}"
        if vr in _META_TEXT_VRS:
            meta[keyword] = raw.decode("latin-1").strip(" \x00")
        elif vr in ("UL", "US") and length in (2, 4):
            meta[keyword] = str(int.from_bytes(raw, "little"))
    return meta
