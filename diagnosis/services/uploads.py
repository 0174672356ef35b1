"""The upload path (web process): validate, store, create the rows, queue the analysis.

Never imports torch.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from diagnosis import identity
from diagnosis.dispatch import prediction_enqueue_on_commit
from diagnosis.models import Image, Patient, Prediction, Study
from diagnosis.services.patients import (
    IdentityMismatch,
    checked_birth_date,
    checked_text,
    known_sex,
    patient_for_upload,
)
from diagnosis.services.predictions import storage_delete_quietly
from training.ml.imaging import (
    DecodedImage,
    UploadPolicy,
    UploadRejected,
    decode_upload,
)
from training.models import ModelVersion

logger = logging.getLogger(__name__)


class StorageUnavailable(Exception):
    """The file could not be written (media not writable, a full disk): nothing was stored."""

    code = "storage_unavailable"

    def __init__(self, error: OSError) -> None:
        reason = error.strerror or type(error).__name__
        super().__init__(
            f"The server could not store the image ({reason}); nothing was stored. Please try "
            "again later, and tell your administrator if it keeps happening."
        )


@dataclass
class UploadResult:
    study: Study
    image: Image
    prediction: Prediction
    study_created: bool = True  # False: the image was added to an existing study (accession)
    # Set when the upload confirmed a demographics mismatch: the caller records it in the audit.
    identity_confirmed: IdentityMismatch | None = None
    # The files this upload wrote (for a batch that must remove them when a later file fails).
    stored_files: list[str] = field(default_factory=list)


def _clean(value: str | None, max_length: int) -> str:
    return (value or "").strip()[:max_length]


def _new_accession_number() -> str:
    return f"CXR-{timezone.now():%Y%m%d}-{secrets.token_hex(4).upper()}"


def study_upload(
    *,
    uploaded_by,
    data: bytes,
    filename: str = "",
    patient_id: str = "",
    accession_number: str = "",
    view: str = "",
    priority: int = Study.Priority.ROUTINE,
    patient_name: str = "",
    patient_sex: str = "",
    patient_birth_date: dt.date | None = None,
    confirm_identity: bool = False,
    batch_accession: str = "",
    accept: Callable[[DecodedImage], None] | None = None,
) -> UploadResult:
    """Validate an uploaded chest X-ray, store it and queue its analysis.

    The study it joins: the one with the accession number (typed, else the DICOM file's tag);
    without one, a DICOM file joins the patient's study with its StudyInstanceUID; else
    ``batch_accession`` (the study of an earlier file sent together with this one), else a new
    study with a generated accession number. An accession number or a StudyInstanceUID of
    another patient's study is refused (``accession_conflict``, ``study_uid_conflict``).

    Raises UploadRejected (nothing stored) for bad input: UploadFieldRejected names the field
    (control characters, a value too long to store, an implausible birth date), IdentityMismatch
    an existing patient ID whose name, sex or birth date differ from the upload's, unless
    ``confirm_identity``: then the image joins the stored patient, whose details stay unchanged,
    and the result's ``identity_confirmed`` says what differed.

    ``accept``: a channel's own check of the decoded file before anything is stored (the DICOM
    receivers refuse what is not a chest CR/DX instance); it raises UploadRejected to refuse.

    Files are written before the rows, in one transaction with them: if anything fails, the files
    written by this call are removed.
    The inference task is sent only after the transaction commits.
    """
    # check_only: a JPEG that serves as its own display copy is only checked here (decoded at
    # an eighth of its size, every step still read); the worker decodes it for the model.
    decoded = decode_upload(
        data,
        max_bytes=settings.CXR_MAX_UPLOAD_BYTES,
        max_pixels=settings.CXR_MAX_IMAGE_PIXELS,
        check_only=True,
        policy=UploadPolicy(
            min_side=settings.CXR_MIN_IMAGE_SIDE, max_aspect_ratio=settings.CXR_MAX_ASPECT_RATIO
        ),
    )
    if accept is not None:
        accept(decoded)
    dicom = decoded.dicom
    patient_id = checked_text(patient_id, dicom, field="patient_id", max_length=64)
    if not patient_id:
        raise UploadRejected(
            "A patient ID (medical record number) is required: enter it, or upload a DICOM file "
            "that carries one.",
            code="missing_patient_id",
        )
    accession_number = checked_text(
        accession_number, dicom, field="accession_number", max_length=64
    )
    submitted = identity.Demographics(
        name=checked_text(
            patient_name, dicom, field="patient_name", max_length=200, identifier=False
        ),
        sex=known_sex(patient_sex or (dicom.patient_sex if dicom else "")),
        birth_date=checked_birth_date(patient_birth_date, dicom),
    )
    view = (view or (dicom.view_position if dicom else "") or "").upper()
    if view not in Study.View.values:
        raise UploadRejected(
            f"Unknown view {view!r}: use PA, AP or LATERAL, or leave it empty.", code="bad_view"
        )
    if priority not in Study.Priority.values:
        raise UploadRejected(f"Unknown priority {priority!r}.", code="bad_priority")

    if decoded.format == Image.Format.DICOM:
        data = _zeroed_preamble(data)
    sha256 = hashlib.sha256(data).hexdigest()
    written: list[str] = []
    try:
        with transaction.atomic():
            patient, confirmed = patient_for_upload(
                mrn=patient_id, submitted=submitted, confirm_identity=confirm_identity
            )
            study, study_created = _study_for_upload(
                patient=patient,
                accession_number=accession_number,
                view=view,
                priority=priority,
                uploaded_by=uploaded_by,
                decoded=decoded,
                batch_accession=_clean(batch_accession, 64),
            )
            image = _image_create(
                study=study,
                decoded=decoded,
                data=data,
                sha256=sha256,
                filename=filename,
                written=written,
            )
            prediction = _prediction_create(image=image)
    except BaseException as exc:
        storage_delete_quietly(written)
        if isinstance(exc, OSError):  # the media storage: unwritable, full, gone
            logger.error("upload not stored: %s", exc)
            raise StorageUnavailable(exc) from exc
        raise
    logger.info(
        "upload: study %s image %s prediction %s (%s, %d bytes)",
        study.pk,
        image.pk,
        prediction.pk,
        decoded.format,
        len(data),
    )
    return UploadResult(
        study=study,
        image=image,
        prediction=prediction,
        study_created=study_created,
        identity_confirmed=confirmed,
        stored_files=written,
    )


def study_upload_many(
    *, uploaded_by, files: Iterable[tuple[bytes, str]], **fields
) -> list[UploadResult]:
    """Files sent together (``(data, filename)`` pairs, one patient and one set of fields): all
    stored, or none.

    They become one study: without an accession number of their own, every file after the first
    joins the first one's study (``batch_accession``); DICOM files still follow their own
    accession number or StudyInstanceUID. A refused file raises its UploadRejected with
    ``filename`` set, and the files already stored are removed.
    """
    results: list[UploadResult] = []
    fields.pop("batch_accession", None)
    try:
        with transaction.atomic():
            for data, filename in files:
                batch = results[0].study.accession_number if results else ""
                try:
                    results.append(
                        study_upload(
                            uploaded_by=uploaded_by,
                            data=data,
                            filename=filename,
                            batch_accession=batch,
                            **fields,
                        )
                    )
                except UploadRejected as exc:
                    exc.filename = filename
                    raise
    except BaseException:
        storage_delete_quietly([name for r in results for name in r.stored_files])
        raise
    return results


def _zeroed_preamble(data: bytes) -> bytes:
    """A DICOM file with its 128-byte preamble zeroed. The preamble is free-form, so it can hold
    the header of another file type (a DICOM/PE or DICOM/ZIP polyglot, CVE-2019-11687); zeros are
    what PS3.10 asks of an application that does not use it, and the data set is unchanged."""
    return data if not any(data[:128]) else bytes(128) + data[128:]


def _study_for_upload(
    *,
    patient: Patient,
    accession_number: str,
    view: str,
    priority: int,
    uploaded_by,
    decoded: DecodedImage,
    batch_accession: str = "",
) -> tuple[Study, bool]:
    """The study the image joins (and False), or a new one (and True).

    The patient's row is locked by the caller, so two uploads of one patient's study (same
    accession or StudyInstanceUID) arriving at once cannot both create it.
    """
    dicom = decoded.dicom
    study_uid = dicom.study_instance_uid[:64] if dicom else ""
    if not accession_number and study_uid:
        existing = (
            Study.objects.select_for_update()
            .filter(study_instance_uid=study_uid)
            .order_by("pk")
            .first()
        )
        if existing is not None:
            if existing.patient_id != patient.pk:
                raise UploadRejected(
                    "The DICOM file's StudyInstanceUID belongs to another patient's study "
                    f"({existing.accession_number}). Check the patient ID and the file.",
                    code="study_uid_conflict",
                )
            return _study_add_image(existing, priority=priority, study_uid=study_uid), False
    accession_number = accession_number or batch_accession
    if accession_number:
        existing = (
            Study.objects.select_for_update().filter(accession_number=accession_number).first()
        )
        if existing is not None:
            if existing.patient_id != patient.pk:
                raise UploadRejected(
                    f"Accession number {accession_number} belongs to another patient's study. "
                    "Check the patient ID and the accession number.",
                    code="accession_conflict",
                )
            # Another image of the same study (e.g. the lateral view).
            return _study_add_image(existing, priority=priority, study_uid=study_uid), False
    else:
        accession_number = _new_accession_number()
    study = Study.objects.create(
        patient=patient,
        accession_number=accession_number,
        study_date=(dicom.study_date if dicom and dicom.study_date else timezone.localdate()),
        view=view,
        description=(dicom.study_description[:200] if dicom else ""),
        study_instance_uid=study_uid,
        priority=priority,
        uploaded_by=uploaded_by if getattr(uploaded_by, "pk", None) else None,
    )
    return study, True


def _study_add_image(study: Study, *, priority: int, study_uid: str) -> Study:
    """An existing study gains an image: the higher priority wins, and a study made from PNG or
    JPEG files learns the StudyInstanceUID of the first DICOM file that joins it."""
    changed: list[str] = []
    if priority > study.priority:
        study.priority, changed = priority, [*changed, "priority"]
    if study_uid and not study.study_instance_uid:
        study.study_instance_uid, changed = study_uid, [*changed, "study_instance_uid"]
    if changed:
        study.save(update_fields=changed)
    return study


def _image_create(
    *,
    study: Study,
    decoded: DecodedImage,
    data: bytes,
    sha256: str,
    filename: str,
    written: list[str],
) -> Image:
    dicom = decoded.dicom
    duplicate_of = Image.objects.filter(sha256=sha256).order_by("pk").first()
    image = Image(
        study=study,
        sha256=sha256,
        format=decoded.format,
        original_filename=_clean(filename, 255),
        size_bytes=len(data),
        width=decoded.width,
        height=decoded.height,
        source_mode=decoded.source_mode[:64],
        duplicate_of=duplicate_of,
        series_instance_uid=(dicom.series_instance_uid[:64] if dicom else ""),
        sop_instance_uid=(dicom.sop_instance_uid[:64] if dicom else ""),
        dicom_tags=(dicom.tags if dicom else {}),
    )
    if duplicate_of is not None:
        # Same bytes: share the stored files rather than keeping a second copy.
        image.original.name = duplicate_of.original.name
        image.display.name = duplicate_of.display.name
    else:
        image.original.save("original", ContentFile(data), save=False)
        written.append(image.original.name)
        if decoded.original_is_display:  # 8-bit grayscale PNG/JPEG: the file itself serves
            image.display.name = image.original.name
        else:
            image.display.save("display.png", ContentFile(decoded.to_png_bytes()), save=False)
            written.append(image.display.name)
    image.save()
    return image


def _prediction_create(*, image: Image) -> Prediction:
    # Only what the upload's answer shows: not the version's metrics and curves (JSON, parsed on
    # every upload otherwise).
    version = (
        ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION)
        .only("pk", "name", "architecture")
        .first()
    )
    if version is None:
        return Prediction.objects.create(image=image, model_version=None)
    # The dispatch is recorded in the row it creates (no second UPDATE); the task is sent once
    # the upload commits. If the broker is down then, the reconciler sends it again later.
    prediction = Prediction.objects.create(
        image=image, model_version=version, dispatches=1, last_dispatched_at=timezone.now()
    )
    prediction_enqueue_on_commit(prediction.pk, recorded=True)
    return prediction
