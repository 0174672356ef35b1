"""What decoding returns: the 8-bit grayscale image and what a DICOM header tells."""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from .png import png_uint8


@dataclass
class DicomInfo:
    """What the DICOM header tells us about the patient, the study and the image."""

    patient_id: str = ""
    patient_name: str = ""
    patient_sex: str = ""  # "M", "F", "O" or ""
    patient_birth_date: datetime.date | None = None
    accession_number: str = ""
    study_date: datetime.date | None = None
    study_description: str = ""
    view_position: str = ""  # "PA", "AP", "LATERAL" or ""
    modality: str = ""
    body_part: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    sop_instance_uid: str = ""
    photometric_interpretation: str = ""
    bits_stored: int | None = None
    #: A small JSON-safe subset of header tags for display (keyword -> text); never pixel data.
    tags: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (dates as ISO strings), e.g. for a JSONField."""
        out = dataclasses.asdict(self)
        for key in ("patient_birth_date", "study_date"):
            value = out[key]
            out[key] = value.isoformat() if value is not None else None
        return out


@dataclass
class DecodedImage:
    """An accepted upload, decoded to an 8-bit grayscale display image."""

    format: str  # "PNG" | "JPEG" | "DICOM", from the content
    # Mode "L", loaded, EXIF orientation applied for JPEG; smaller than width x height when
    # decode_upload was given read_long_side or check_only.
    image: Image.Image
    width: int  # the stored size (after the EXIF turn)
    height: int
    source_mode: str  # e.g. "RGB", "I;16", "MONOCHROME1 12-bit"
    dicom: DicomInfo | None = None
    # The uploaded file itself is a faithful display copy (an 8-bit grayscale PNG or JPEG, with
    # no EXIF turn, colour profile, gamma or transparency a browser would render differently): no
    # PNG is encoded on the request path (~90 ms of CPU for a 2k-pixel radiograph), the file is
    # stored once, and the worker decodes the smaller file.
    original_is_display: bool = False

    def to_png_bytes(self) -> bytes:
        """The re-encoded display copy (8-bit grayscale PNG): see :func:`png_uint8`."""
        if self.image.size != (self.width, self.height):
            raise ValueError("This image was decoded reduced: it cannot be the display copy.")
        return png_uint8(np.asarray(self.image, dtype=np.uint8))
