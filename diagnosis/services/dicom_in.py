"""DICOM in: one instance received over the network (the C-STORE SCP, STOW-RS) becomes an image
of its study through the upload service, with the same validation and storage as an upload.

Patient, accession, view and study come from the instance's tags; instances with one
StudyInstanceUID join one study. What is not a chest radiograph (Modality other than CR or DX,
BodyPartExamined other than CHEST when present) is refused before anything is stored. An
instance sent again (the same SOPInstanceUID, e.g. after a dropped association) is not stored
twice. Never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

from diagnosis.models import Image
from diagnosis.services.uploads import UploadResult, study_upload
from training.ml.imaging import DecodedImage, UploadRejected

# The uploader of what the C-STORE SCP receives: a user no one can sign in as.
DICOM_SERVICE_USERNAME = "dicom-scp"
CHEST_MODALITIES = ("CR", "DX")


# DICOM failure statuses (PS3.4 C-STORE; the same codes are STOW-RS's FailureReason, PS3.18).
OUT_OF_RESOURCES = 0xA700  # storage or database unavailable: the sender should try again
REFUSED = 0xA900  # "data set does not match SOP class": not a chest CR/DX radiograph
CANNOT_UNDERSTAND = 0xC000  # undecodable, invalid, or conflicting with what is stored


def failure_status(exc: Exception) -> int:
    """The status an instance refused with ``exc`` gets."""
    if isinstance(exc, InstanceRefused):
        return REFUSED
    if isinstance(exc, UploadRejected):
        return CANNOT_UNDERSTAND
    return OUT_OF_RESOURCES


def error_comment(text: str) -> str:
    """``text`` as a DICOM ErrorComment (an LO in the default repertoire: 64 ASCII characters,
    no backslash or control characters)."""
    ascii_text = text.encode("ascii", "replace").decode("ascii")
    return " ".join(ascii_text.replace("\\", "/").split())[:64]


class InstanceRefused(UploadRejected):
    """A well-formed DICOM instance this app does not take (not a chest CR/DX radiograph)."""


class _AlreadyStored(Exception):
    def __init__(self, image: Image) -> None:
        super().__init__(image.sop_instance_uid)
        self.image = image


@dataclass
class DicomStored:
    """What became of one received instance: ``result`` when it was stored now; ``image``, the
    image holding it (stored now or by an earlier send: ``duplicate``)."""

    image: Image
    result: UploadResult | None = None

    @property
    def duplicate(self) -> bool:
        return self.result is None


def dicom_service_user() -> AbstractBaseUser:
    """The user that uploads what the C-STORE SCP receives, created on first use, inactive and
    without a usable password."""
    User = get_user_model()
    user, created = User.objects.get_or_create(
        username=DICOM_SERVICE_USERNAME, defaults={"is_active": False}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def check_chest_radiograph(decoded: DecodedImage) -> None:
    """Refuses (InstanceRefused) what is not a chest radiograph, and anything not DICOM; an
    instance already stored (its SOPInstanceUID) stops the upload as a duplicate."""
    dicom = decoded.dicom
    if dicom is None:
        raise UploadRejected(
            "Only DICOM instances are taken here: send PNG or JPEG files to the upload page "
            "or POST /api/v1/studies/.",
            code="not_dicom",
        )
    if dicom.modality not in CHEST_MODALITIES:
        raise InstanceRefused(
            f"Refused: modality {dicom.modality or '(none)'} is not a radiograph; this app "
            "reads chest CR and DX images only.",
            code="modality_refused",
        )
    body_part = dicom.body_part.strip().upper()
    if body_part and body_part != "CHEST":
        raise InstanceRefused(
            f"Refused: body part {body_part} is not CHEST; this app reads chest radiographs only.",
            code="body_part_refused",
        )
    if dicom.sop_instance_uid:
        existing = (
            Image.objects.filter(sop_instance_uid=dicom.sop_instance_uid[:64])
            .select_related("study__patient")
            .order_by("pk")
            .first()
        )
        if existing is not None:
            raise _AlreadyStored(existing)


def dicom_instance_store(*, data: bytes, uploaded_by, filename: str = "") -> DicomStored:
    """Stores one DICOM Part-10 instance received over the network (see the module's doc).

    Raises UploadRejected (InstanceRefused, IdentityMismatch, UploadFieldRejected...) for an
    instance refused, StorageUnavailable when the media cannot be written: nothing stored. On
    return the rows are committed (the caller may acknowledge) and the analysis is queued.
    """
    try:
        result = study_upload(
            uploaded_by=uploaded_by,
            data=data,
            filename=filename,
            accept=check_chest_radiograph,
        )
    except _AlreadyStored as exc:
        return DicomStored(image=exc.image)
    return DicomStored(image=result.image, result=result)
