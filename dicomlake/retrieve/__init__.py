"""Retrieve (WADO-RS semantics) over a tenant: instances, metadata, frames, rendered images.

No web framework here: dicomlake.web.wado adapts these to HTTP.
"""

from dicomlake.retrieve.instances import (
    InstanceLocator,
    InvalidRequest,
    NotAcceptable,
    NotFound,
    StoredInstance,
    versions_tag,
)
from dicomlake.retrieve.metadata import bulk_value, instance_url, metadata_json
from dicomlake.retrieve.pixels import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    Frame,
    can_decode,
    decoded_frames,
    frame_media_type,
    parse_frame_numbers,
    stored_frames,
)
from dicomlake.retrieve.rendered import render
from dicomlake.retrieve.transcode import check_transcodable, needs_transcoding, transcoded

__all__ = [
    "EXPLICIT_VR_LITTLE_ENDIAN", "Frame", "InstanceLocator", "InvalidRequest", "NotAcceptable", "NotFound",
    "StoredInstance", "bulk_value", "can_decode", "check_transcodable", "decoded_frames", "frame_media_type",
    "instance_url", "metadata_json", "needs_transcoding", "parse_frame_numbers", "render", "stored_frames",
    "transcoded", "versions_tag",
]
