"""Every write of the diagnosis app.

The upload path (study_upload) runs in the web process and never imports torch. The inference
path (prediction_run) runs in a Celery worker and imports the ML code lazily.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import secrets
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from diagnosis.imaging import DecodedImage, UploadRejected, decode_upload
from diagnosis.models import ClassHeatmap, Image, Patient, Prediction, Reading, Study
from training.models import ModelVersion

logger = logging.getLogger(__name__)


@dataclass
class UploadResult:
    study: Study
    image: Image
    prediction: Prediction


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
    decoded = decode_upload(
        data, max_bytes=settings.CXR_MAX_UPLOAD_BYTES, max_pixels=settings.CXR_MAX_IMAGE_PIXELS
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
            study = _study_for_upload(
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
    return UploadResult(study=study, image=image, prediction=prediction)


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
) -> Study:
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
            return existing
    else:
        accession_number = _new_accession_number()
    return Study.objects.create(
        patient=patient,
        accession_number=accession_number,
        study_date=(dicom.study_date if dicom and dicom.study_date else timezone.localdate()),
        view=view,
        description=(dicom.study_description[:200] if dicom else ""),
        study_instance_uid=(dicom.study_instance_uid[:64] if dicom else ""),
        priority=priority,
        uploaded_by=uploaded_by if getattr(uploaded_by, "pk", None) else None,
    )


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
        image.display.save("display.png", ContentFile(decoded.to_png_bytes()), save=False)
        written.append(image.display.name)
    image.save()
    return image


def _prediction_create(*, image: Image) -> Prediction:
    version = ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).first()
    prediction = Prediction.objects.create(image=image, model_version=version)
    if version is not None:
        prediction_enqueue_on_commit(prediction.pk)
    return prediction


def prediction_enqueue_on_commit(prediction_id: int) -> None:
    """Send the inference task once the current transaction commits.

    robust=True: a broker that is down must not undo an accepted upload; the prediction stays
    queued in the database, which is the source of truth, and can be sent again.
    """
    from diagnosis.tasks import run_prediction

    transaction.on_commit(lambda: run_prediction.delay(prediction_id), robust=True)


@transaction.atomic
def prediction_rerun(*, prediction: Prediction) -> Prediction:
    """Queue a failed prediction again (e.g. after the model file was fixed)."""
    updated = Prediction.objects.filter(pk=prediction.pk, status=Prediction.Status.FAILED).update(
        status=Prediction.Status.QUEUED, error="", attempts=0, started_at=None, finished_at=None,
        queued_at=timezone.now(),
    )
    if not updated:
        raise ValueError("Only a failed prediction can be re-run.")
    prediction.refresh_from_db()
    if prediction.model_version_id is None:
        version = ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).first()
        if version is not None:
            prediction.model_version = version
            prediction.save(update_fields=["model_version"])
    if prediction.model_version_id is not None:
        prediction_enqueue_on_commit(prediction.pk)
    return prediction


def predictions_assign_waiting(*, version: ModelVersion) -> int:
    """Give predictions that were waiting for a production model to `version` and queue them.

    Called inside the promotion's transaction; the tasks are sent after it commits.
    """
    waiting = Prediction.objects.select_for_update().filter(
        model_version__isnull=True, status=Prediction.Status.QUEUED
    )
    count = 0
    for prediction in waiting:
        if Prediction.objects.filter(image_id=prediction.image_id, model_version=version).exists():
            # This image already has a prediction from this version (e.g. after a roll back).
            prediction.status = Prediction.Status.FAILED
            prediction.error = f"Superseded by the existing prediction of {version.name}."
            prediction.model_version = None
            prediction.save(update_fields=["status", "error"])
            continue
        prediction.model_version = version
        prediction.queued_at = timezone.now()
        prediction.save(update_fields=["model_version", "queued_at"])
        prediction_enqueue_on_commit(prediction.pk)
        count += 1
    return count


# --- the worker side ------------------------------------------------------------------------


class PredictionFailure(Exception):
    """A permanent failure: the prediction is marked failed with this message."""


def prediction_claim(*, prediction_id: int, worker: str) -> Prediction | None:
    """Claim a prediction for this worker with one conditional UPDATE.

    Returns None when there is nothing to do: it is done or failed (a redelivered task), another
    worker is running it, it is waiting for a model, or it no longer exists.
    """
    now = timezone.now()
    stale_before = now - dt.timedelta(seconds=settings.CXR_PREDICTION_STALE_AFTER_S)
    claimed = (
        Prediction.objects.filter(pk=prediction_id, model_version__isnull=False)
        .filter(
            Q(status=Prediction.Status.QUEUED)
            | Q(status=Prediction.Status.RUNNING, started_at__lt=stale_before)
        )
        .update(
            status=Prediction.Status.RUNNING, started_at=now, finished_at=None,
            attempts=F("attempts") + 1, worker=worker[:200], error="",
        )
    )
    if claimed != 1:
        return None
    return Prediction.objects.select_related("image", "model_version").get(pk=prediction_id)


def prediction_run(*, prediction_id: int, worker: str = "") -> Prediction | None:
    """Run the model and Grad-CAM for one queued prediction. Idempotent.

    Permanent problems (unreadable image, missing or corrupt weights) mark the prediction failed
    with a message; database errors propagate so the task can be retried.
    """
    prediction = prediction_claim(prediction_id=prediction_id, worker=worker)
    if prediction is None:
        logger.info("prediction %s: nothing to do (already claimed or finished)", prediction_id)
        return None
    if prediction.attempts > settings.CXR_PREDICTION_MAX_ATTEMPTS:
        return _prediction_fail(
            prediction,
            f"Gave up after {prediction.attempts - 1} attempts: the worker stopped while "
            "analysing this image each time.",
        )
    try:
        outcome = _compute(prediction)
    except PredictionFailure as exc:
        return _prediction_fail(prediction, str(exc))
    except Exception as exc:  # noqa: BLE001 - any model/image error is this prediction's failure
        from django.db import DatabaseError

        if isinstance(exc, DatabaseError):
            raise
        logger.exception("prediction %s failed", prediction_id)
        return _prediction_fail(prediction, f"{type(exc).__name__}: {exc}")

    heatmap_name = default_storage.save(
        f"heatmaps/{prediction.pk}/cam-{outcome['cam_class']}.png", ContentFile(outcome["heatmap"])
    )
    overlay_name = default_storage.save(
        f"heatmaps/{prediction.pk}/overlay.png", ContentFile(outcome["overlay"])
    )
    finished = timezone.now()
    updated = Prediction.objects.filter(
        pk=prediction.pk, status=Prediction.Status.RUNNING, started_at=prediction.started_at
    ).update(
        status=Prediction.Status.DONE,
        probabilities=outcome["probabilities"],
        label=outcome["label"],
        cam_class=outcome["cam_class"],
        cam_method="Grad-CAM",
        heatmap=heatmap_name,
        overlay=overlay_name,
        device=outcome["device"],
        compute_ms=outcome["compute_ms"],
        finished_at=finished,
    )
    if updated != 1:
        # Someone else took it over meanwhile (we were presumed dead): keep their result.
        default_storage.delete(heatmap_name)
        default_storage.delete(overlay_name)
        logger.warning("prediction %s: claim lost before saving the result", prediction.pk)
        return None
    prediction.refresh_from_db()
    study_flag_from_prediction(prediction=prediction)
    return prediction


def study_flag_from_prediction(*, prediction: Prediction) -> bool:
    """Flag the study when the top finding is abnormal at or above its threshold.

    Only ever raises a study: a later normal result (e.g. from another model version) does not
    clear the flag, and the study's own priority is never changed by the model.
    """
    version = prediction.model_version
    if prediction.status != Prediction.Status.DONE or version is None or not prediction.label:
        return False
    probability = (prediction.probabilities or {}).get(prediction.label, 0.0)
    if version.is_normal_label(prediction.label) or probability < version.threshold_for(
        prediction.label
    ):
        return False
    Study.objects.filter(pk=prediction.image.study_id, flagged_by_model=False).update(
        flagged_by_model=True, flagged_finding=prediction.label[:64]
    )
    return True


class ReadingRejected(ValueError):
    """The reading cannot be signed as given; the message says why."""


@transaction.atomic
def reading_sign(
    *, study: Study, radiologist, final_label: str, agrees: bool | None = None, notes: str = "",
    amends: Reading | None = None,
) -> Reading:
    """Sign a reading of `study`. An amendment is a new reading that points at the one it amends."""
    study = Study.objects.select_for_update().get(pk=study.pk)
    prediction = (
        Prediction.objects.filter(image__study=study, status=Prediction.Status.DONE)
        .select_related("model_version").order_by("-finished_at").first()
    )
    classes = list(prediction.model_version.class_labels) if prediction else []
    final_label = (final_label or "").strip()
    if agrees and prediction is not None:
        final_label = prediction.label
    if not final_label:
        raise ReadingRejected("Choose the final label (one of the model's classes, or other).")
    if final_label != Reading.OTHER and classes and final_label not in classes:
        raise ReadingRejected(
            f"Unknown label {final_label!r}: choose one of {', '.join(classes)} or other."
        )
    if final_label == Reading.OTHER and not notes.strip():
        raise ReadingRejected("Describe the finding in the notes when the label is other.")
    if amends is not None:
        if amends.study_id != study.pk:
            raise ReadingRejected("That reading belongs to another study.")
        if Reading.objects.filter(amends=amends).exists():
            raise ReadingRejected("That reading was already amended; amend the latest one.")
    elif study.readings.exists():
        raise ReadingRejected("This study already has a signed reading: amend it instead.")
    return Reading.objects.create(
        study=study,
        prediction=prediction,
        model_version=prediction.model_version if prediction else None,
        radiologist=radiologist,
        agrees_with_model=(final_label == prediction.label) if prediction else None,
        final_label=final_label[:64],
        notes=notes.strip(),
        amends=amends,
    )


@transaction.atomic
def class_heatmap_request(*, prediction: Prediction, class_label: str) -> ClassHeatmap:
    """Ask the worker for the Grad-CAM of one class (the web process never runs the model)."""
    if prediction.status != Prediction.Status.DONE or prediction.model_version is None:
        raise ValueError("The prediction has not finished yet.")
    if class_label not in prediction.model_version.class_labels:
        raise ValueError(f"Unknown class {class_label!r} for {prediction.model_version.name}.")
    heatmap, created = ClassHeatmap.objects.get_or_create(
        prediction=prediction, class_label=class_label, method="Grad-CAM"
    )
    if not created and heatmap.status == ClassHeatmap.Status.FAILED:
        ClassHeatmap.objects.filter(pk=heatmap.pk).update(status=ClassHeatmap.Status.QUEUED,
                                                          error="")
        heatmap.refresh_from_db()
        created = True
    if created:
        from diagnosis.tasks import run_class_heatmap

        transaction.on_commit(lambda: run_class_heatmap.delay(heatmap.pk), robust=True)
    return heatmap


def class_heatmap_run(*, heatmap_id: int) -> ClassHeatmap | None:
    """Worker side of class_heatmap_request. Idempotent: a finished heatmap is left alone."""
    heatmap = ClassHeatmap.objects.select_related(
        "prediction__image", "prediction__model_version"
    ).filter(pk=heatmap_id, status=ClassHeatmap.Status.QUEUED).first()
    if heatmap is None:
        return None
    try:
        from diagnosis import inference

        prediction = heatmap.prediction
        predictor = inference.predictor_for(prediction.model_version)
        picture = _open_display(prediction.image)
        [result] = predictor.predict([picture], cam_classes=[heatmap.class_label])
        heatmap_png, _ = inference.render_pngs(picture, result.cam, overlay=False)
    except Exception as exc:  # noqa: BLE001
        from django.db import DatabaseError

        if isinstance(exc, DatabaseError):
            raise
        ClassHeatmap.objects.filter(pk=heatmap.pk).update(
            status=ClassHeatmap.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000]
        )
        return ClassHeatmap.objects.get(pk=heatmap.pk)
    name = default_storage.save(
        f"heatmaps/{prediction.pk}/cam-{heatmap.class_label}.png", ContentFile(heatmap_png)
    )
    ClassHeatmap.objects.filter(pk=heatmap.pk).update(status=ClassHeatmap.Status.DONE, file=name)
    return ClassHeatmap.objects.get(pk=heatmap.pk)


def _open_display(image: Image):
    from PIL import Image as PILImage

    try:
        with image.display.open("rb") as fh:
            picture = PILImage.open(io.BytesIO(fh.read()), formats=["PNG"])
            picture.load()
    except FileNotFoundError as exc:
        raise PredictionFailure(f"The stored image file is missing ({image.display.name}).") from exc
    return picture


def _prediction_fail(prediction: Prediction, message: str) -> Prediction:
    Prediction.objects.filter(pk=prediction.pk).update(
        status=Prediction.Status.FAILED, error=message[:2000], finished_at=timezone.now()
    )
    prediction.refresh_from_db()
    logger.warning("prediction %s failed: %s", prediction.pk, message)
    return prediction


def _compute(prediction: Prediction) -> dict:
    from diagnosis import inference  # imports torch: worker side only

    predictor = inference.predictor_for(prediction.model_version)
    picture = _open_display(prediction.image)
    started = time.perf_counter()
    result = predictor.predict([picture])[0]
    heatmap_png, overlay_png = inference.render_pngs(picture, result.cam)
    compute_ms = (time.perf_counter() - started) * 1000.0
    return {
        "probabilities": {k: float(v) for k, v in result.probabilities.items()},
        "label": result.label,
        "cam_class": result.cam_class,
        "heatmap": heatmap_png,
        "overlay": overlay_png,
        "device": str(predictor.device),
        "compute_ms": compute_ms,
    }
