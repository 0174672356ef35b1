"""De-identification of DICOM objects for training datasets (DICOM PS3.15 Annex E).

The Basic Application Level Confidentiality Profile (PS3.15 Table E.1-1, the 2024b edition) is
applied by Kitware's ``dicom-anonymizer``, which carries the standard's table of attributes and
actions (remove, empty, replace, keep) and removes private attributes. It is a kept library that
tracks the standard's editions; a hand-written attribute list would fall behind it.

On top of the profile this module:

- refuses an object whose ``BurnedInAnnotation`` is ``YES``: text burned into the pixels (a name,
  a date of birth) survives any header change, so such an image never leaves (the profile
  assumes the pixels are clean; PS3.15 E.1.1 leaves it to the application);
- writes the *pseudonymous* keys the caller gives as Patient ID and Patient's Name, so that every
  export of one patient carries the same key and a training split can group by it (the profile
  alone would give a new random identity each time);
- derives new Study, Series and SOP Instance UIDs deterministically from the old ones and a
  secret, so that the images of one study stay one study across exports, and the old UIDs cannot
  be recovered without the secret;
- records what was done: Patient Identity Removed ``YES``, De-identification Method and its code
  sequence (DCM 113100, Basic Application Confidentiality Profile).

Pixel data is not changed. Plain Python, no Django: bytes in, bytes out.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from io import BytesIO

import pydicom
from dicomanonymizer import anonymize_dataset
from dicomanonymizer.simpledicomanonymizer import initialize_actions_2024b
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

__all__ = [
    "DEIDENTIFICATION_METHOD",
    "DeidentificationRefused",
    "deidentify_dicom",
    "pseudonym",
]

#: Written into De-identification Method (LO: 64 characters at most).
DEIDENTIFICATION_METHOD = "PS3.15 Basic Profile (dicom-anonymizer 2024b); pseudonymous IDs"

#: The UIDs that tie images together: re-derived from the originals (with the secret), not random.
_LINKING_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


class DeidentificationRefused(ValueError):
    """This object cannot be de-identified safely; the message says why (shown to the exporter)."""


def pseudonym(secret: bytes, kind: str, value: str, *, prefix: str) -> str:
    """A stable pseudonymous key for ``value`` (an MRN, an accession number): the same secret and
    value give the same key in every export; without the secret it cannot be turned back.
    ``prefix`` + 16 hex digits (64 bits), e.g. ``P3f9c0a1b2c3d4e5f``."""
    digest = hmac.new(secret, f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()
    return f"{prefix}{digest[:16]}"


def _uid_for(secret: bytes, old: str) -> str:
    # A 2.25 UID (PS3.5 B.2) from a UUID whose bits are an HMAC of the old UID: the same old UID
    # gives the same new one, and without the secret guessed originals cannot be checked against
    # it. (pydicom's generate_uid ignores its entropy sources for a 2.25 UID.)
    digest = hmac.new(secret, f"uid\x00{old}".encode(), hashlib.sha256).digest()
    return f"2.25.{uuid.UUID(bytes=digest[:16], version=4).int}"


def deidentify_dicom(data: bytes, *, secret: bytes, patient_key: str) -> bytes:
    """The de-identified Part-10 file of ``data``, with ``patient_key`` as its patient.

    Raises :class:`DeidentificationRefused` for a file that is not DICOM, has no pixel data, or
    says it has burned-in annotation.
    """
    try:
        ds = pydicom.dcmread(BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, OSError) as exc:
        raise DeidentificationRefused(f"not a readable DICOM file ({exc})") from exc
    if "PixelData" not in ds:
        raise DeidentificationRefused("the DICOM object has no pixel data")
    burned_in = str(ds.get("BurnedInAnnotation", "")).strip().upper()
    if burned_in == "YES":
        raise DeidentificationRefused(
            "Burned In Annotation is YES: text in the pixels may identify the patient, and no "
            "header change removes it"
        )
    originals = {name: str(ds.get(name, "")) for name in _LINKING_UIDS}
    anonymize_dataset(ds, delete_private_tags=True, base_rules_gen=initialize_actions_2024b)
    for name, old in originals.items():
        if old:
            setattr(ds, name, _uid_for(secret, old))
    if ds.file_meta is not None and "SOPInstanceUID" in ds:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = patient_key
    ds.PatientName = patient_key
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = [code]
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
