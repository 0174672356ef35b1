"""The upload path (web process): validate, store, create the rows, queue the analysis.

Never imports torch.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from diagnosis.imaging import DecodedImage, UploadRejected, decode_upload
from diagnosis.models import Image, Patient, Prediction, Study
from diagnosis.services.predictions import prediction_enqueue_on_commit
from training.models import ModelVersion

logger = logging.getLogger(__name__)


@dataclass
class UploadResult:
    study: Study
    image: Image
    prediction: Prediction
    study_created: bool = True  # False: the image was added to an existing study (accession)


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
) -> UploadResult:
    """Validate an uploaded chest X-ray, store it and queue its analysis.

    Raises UploadRejected (nothing stored) for bad input. Files are written before the rows, in
    one transaction with them: if anything fails, the files written by this call are removed.
    The inference task is sent only after the transaction commits.
    """
    # check_only: a JPEG that serves as its own display copy is only checked here (decoded at
    # an eighth of its size, every step still read); the worker decodes it for the model.
    decoded = decode_upload(
        data, max_bytes=settings.CXR_MAX_UPLOAD_BYTES, max_pixels=settings.CXR_MAX_IMAGE_PIXELS,
        check_only=True,
    )
    dicom = decoded.dicom
    patient_id = _clean(patient_id, 64) or (_clean(dicom.patient_id, 64) if dicom else "")
    if not patient_id:
        raise UploadRejected(
            "A patient ID (medical record number) is required: enter it, or upload a DICOM file "
            "that carries one.",
            code="missing_patient_id",
        )
    accession_number = _clean(accession_number, 64) or (
        _clean(dicom.accession_number, 64) if dicom else ""
    )
    view = (view or (dicom.view_position if dicom else "") or "").upper()
    if view not in Study.View.values:
        raise UploadRejected(
            f"Unknown view {view!r}: use PA, AP or LATERAL, or leave it empty.", code="bad_view"
        )
    if priority not in Study.Priority.values:
        raise UploadRejected(f"Unknown priority {priority!r}.", code="bad_priority")

    sha256 = hashlib.sha256(data).hexdigest()
    written: list[str] = []
    try:
        with transaction.atomic():
            patient = _patient_for_upload(
                mrn=patient_id,
                name=_clean(patient_name, 200) or (dicom.patient_name if dicom else ""),
                sex=(patient_sex or (dicom.patient_sex if dicom else "")).upper()[:1],
                birth_date=patient_birth_date or (dicom.patient_birth_date if dicom else None),
            )
            study, study_created = _study_for_upload(
                patient=patient,
                accession_number=accession_number,
                view=view,
                priority=priority,
                uploaded_by=uploaded_by,
                decoded=decoded,
            )
            image = _image_create(
                study=study, decoded=decoded, data=data, sha256=sha256, filename=filename,
                written=written,
            )
            prediction = _prediction_create(image=image)
    except BaseException:
        for name in written:
            default_storage.delete(name)
        raise
    logger.info(
        "upload: study %s image %s prediction %s (%s, %d bytes)",
        study.pk, image.pk, prediction.pk, decoded.format, len(data),
    )
    return UploadResult(
        study=study, image=image, prediction=prediction, study_created=study_created
    )


def _patient_for_upload(*, mrn: str, name: str, sex: str, birth_date: dt.date | None) -> Patient:
    patient, created = Patient.objects.select_for_update().get_or_create(
        mrn=mrn,
        defaults={"name": name, "sex": sex if sex in Patient.Sex.values else "",
                  "birth_date": birth_date},
    )
    if not created:
        # Fill what we did not know; never overwrite what is recorded.
        changed = []
        if name and not patient.name:
            patient.name, changed = name, [*changed, "name"]
        if sex in ("F", "M", "O") and not patient.sex:
            patient.sex, changed = sex, [*changed, "sex"]
        if birth_date and not patient.birth_date:
            patient.birth_date, changed = birth_date, [*changed, "birth_date"]
        if changed:
            patient.save(update_fields=changed)
    return patient


def _study_for_upload(
    *, patient: Patient, accession_number: str, view: str, priority: int, uploaded_by,
    decoded: DecodedImage,
) -> tuple[Study, bool]:
    dicom = decoded.dicom
    if accession_number:
        existing = Study.objects.select_for_update().filter(
            accession_number=accession_number
        ).first()
        if existing is not None:
            if existing.patient_id != patient.pk:
                raise UploadRejected(
                    f"Accession number {accession_number} belongs to another patient's study. "
                    "Check the patient ID and the accession number.",
                    code="accession_conflict",
                )
            # Another image of the same study (e.g. the lateral view).
            if priority > existing.priority:
                existing.priority = priority
                existing.save(update_fields=["priority"])
            return existing, False
    else:
        accession_number = _new_accession_number()
    study = Study.objects.create(
        patient=patient,
        accession_number=accession_number,
        study_date=(dicom.study_date if dicom and dicom.study_date else timezone.localdate()),
        view=view,
        description=(dicom.study_description[:200] if dicom else ""),
        study_instance_uid=(dicom.study_instance_uid[:64] if dicom else ""),
        priority=priority,
        uploaded_by=uploaded_by if getattr(uploaded_by, "pk", None) else None,
    )
    return study, True


def _image_create(
    *, study: Study, decoded: DecodedImage, data: bytes, sha256: str, filename: str,
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


