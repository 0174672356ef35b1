"""Sending one PacsExport: build its DICOM object (diagnosis.pacs.build) from the study's rows
and files, send it (diagnosis.pacs.send), and record how it went on the row.

A transient failure (the PACS down, busy, timed out) leaves the row pending with the error and
the attempt counted, and raises :class:`PacsRetry` for the task to try again later; after
CXR_PACS_MAX_ATTEMPTS, or on a refusal, the row is failed with the reason. Sending the same row
twice is harmless: its UIDs are fixed, so the PACS stores the same instance again.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models import F
from django.utils import timezone
from pydicom import dcmread
from pydicom.dataset import Dataset

from diagnosis.models import Image, PacsExport, Prediction, Reading, Study
from diagnosis.pacs import build
from diagnosis.pacs.send import AeTarget, SendFailed, c_store, stow_rs
from diagnosis.results import DONE, FAILED, StudyResult, current_predictions, study_result
from diagnosis.services.pacs import (
    READING_KEY_PREFIX,
    RESULT_KEY_PREFIX,
    pacs_exports_for_failed_since,
)

logger = logging.getLogger(__name__)


class PacsRetry(Exception):
    """Try the send again after `countdown` seconds."""

    def __init__(self, message: str, *, countdown: float) -> None:
        super().__init__(message)
        self.countdown = countdown


class ExportImpossible(Exception):
    """The object cannot be built from what the app holds; the message says why."""


def pacs_export_run(*, export_id: int) -> PacsExport | None:
    """Build and send the export; None when it is no longer pending (sent or failed)."""
    export = (
        PacsExport.objects.select_related("study__patient", "reading__radiologist")
        .filter(pk=export_id, status=PacsExport.Status.PENDING)
        .first()
    )
    if export is None:
        return None
    PacsExport.objects.filter(pk=export.pk).update(
        attempts=F("attempts") + 1, last_attempt_at=timezone.now()
    )
    export.refresh_from_db(fields=["attempts", "last_attempt_at"])
    if not (settings.CXR_PACS_URL or settings.CXR_PACS_AE):
        return _fail(export, "Sending to the PACS is off: set CXR_PACS_URL or CXR_PACS_AE.")
    try:
        instance = pacs_export_build(export)
    except ExportImpossible as exc:
        return _fail(export, str(exc))
    try:
        _send(instance)
    except SendFailed as exc:
        if exc.transient and export.attempts < settings.CXR_PACS_MAX_ATTEMPTS:
            PacsExport.objects.filter(pk=export.pk).update(last_error=str(exc)[:2000])
            countdown = min(settings.CXR_PACS_RETRY_S * 2 ** (export.attempts - 1), 3600.0)
            logger.warning("PACS export %s: %s; again in %.0f s", export.pk, exc, countdown)
            raise PacsRetry(str(exc), countdown=countdown) from None
        tries = f" after {export.attempts} attempts" if exc.transient else ""
        return _fail(export, f"{exc}{tries}")
    PacsExport.objects.filter(pk=export.pk).update(
        status=PacsExport.Status.SENT, sent_at=timezone.now(), last_error=""
    )
    export.refresh_from_db()
    return export


def pacs_exports_after_reconcile() -> int:
    """After the reconciler ran: the SR and SC of the studies whose views it just failed (a
    failure there does not pass through prediction_fail). Looks back two reconciler periods."""
    since = timezone.now() - dt.timedelta(seconds=2 * settings.CXR_RECONCILE_EVERY_S + 60)
    return pacs_exports_for_failed_since(since=since)


def _fail(export: PacsExport, message: str) -> PacsExport:
    PacsExport.objects.filter(pk=export.pk).update(
        status=PacsExport.Status.FAILED, last_error=message[:2000]
    )
    logger.warning("PACS export %s failed: %s", export.pk, message)
    export.refresh_from_db()
    return export


def _send(instance: Dataset) -> None:
    timeout = settings.CXR_PACS_TIMEOUT_S
    if settings.CXR_PACS_URL:
        stow_rs(settings.CXR_PACS_URL, [instance], timeout=timeout)
    else:
        try:
            target = AeTarget.parse(settings.CXR_PACS_AE)
        except ValueError as exc:
            raise SendFailed(str(exc), transient=False) from None
        c_store(target, [instance], calling_ae=settings.CXR_PACS_CALLING_AE, timeout=timeout)


# ---- building ------------------------------------------------------------------------------


def pacs_export_build(export: PacsExport) -> Dataset:
    """The export's DICOM object, rebuilt the same way on every try (fixed UIDs)."""
    predictions = _result_predictions(export)
    result = study_result(predictions)
    source = _source_study(export.study)
    sc = _secondary_capture(export, result, predictions, source)
    if export.kind == PacsExport.Kind.SC:
        return sc
    sr_uids = build.InstanceUids(export.series_instance_uid, export.sop_instance_uid, 902)
    content = _report_content(export, result, predictions)
    return build.build_report(
        content=content, uids=sr_uids, evidence=[sc, *source.instances], images=[sc]
    )


def _result_predictions(export: PacsExport) -> list[Prediction]:
    """The predictions the export's result is made of (as they were when it was made)."""
    if export.result_key.startswith(RESULT_KEY_PREFIX):
        ids = [int(i) for i in export.result_key[len(RESULT_KEY_PREFIX) :].split(",") if i]
    elif export.result_key.startswith(READING_KEY_PREFIX) and export.reading is not None:
        ids = list(export.reading.prediction_ids)
        if not ids:  # signed without a model result: the study's views as they are
            ids = list(
                Prediction.objects.filter(image__study_id=export.study_id).values_list(
                    "pk", flat=True
                )
            )
    else:
        ids = []
    found = list(Prediction.objects.filter(pk__in=ids).select_related("model_version", "image"))
    if not found and ids:
        raise ExportImpossible("The predictions of this result no longer exist.")
    return found


def _source_study(study: Study) -> build.SourceStudy:
    """Patient and study modules: from the first DICOM image's header when the study came as
    DICOM (copied from the source), else from the app's rows."""
    headers = [h for h in (_header(i) for i in _dicom_images(study)) if h is not None]
    patient = study.patient
    if headers:
        first = headers[0]
        orientation = tuple(str(v) for v in (first.get("PatientOrientation") or ()))
        return build.SourceStudy(
            study_instance_uid=study.study_instance_uid,
            patient_id=str(first.get("PatientID", "") or patient.mrn),
            patient_name=str(first.get("PatientName", "") or patient.name),
            patient_birth_date=patient.birth_date,
            patient_sex=str(first.get("PatientSex", "") or patient.sex),
            accession_number=str(first.get("AccessionNumber", "") or study.accession_number),
            study_date=study.study_date,
            study_id=str(first.get("StudyID", "") or ""),
            patient_orientation=orientation if len(orientation) == 2 else None,
            instances=tuple(h for h in headers if h.StudyInstanceUID == study.study_instance_uid),
        )
    return build.SourceStudy(
        study_instance_uid=study.study_instance_uid,
        patient_id=patient.mrn,
        patient_name=patient.name,
        patient_birth_date=patient.birth_date,
        patient_sex=patient.sex,
        accession_number=study.accession_number,
        study_date=study.study_date,
    )


def _dicom_images(study: Study) -> Iterable[Image]:
    return study.images.filter(format=Image.Format.DICOM).order_by("pk")


def _header(image: Image) -> Dataset | None:
    """The stored DICOM file's header (validated on upload), without its pixels."""
    try:
        with default_storage.open(image.original.name, "rb") as f:
            ds = dcmread(f, stop_before_pixels=True)
        for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            if not ds.get(keyword):
                return None
        return ds
    except (OSError, ValueError, AttributeError):
        logger.warning("image %s: DICOM header unreadable for the PACS export", image.pk)
        return None


def _secondary_capture(
    export: PacsExport, result: StudyResult, predictions: list[Prediction], source
) -> Dataset:
    """The SC of the result's driving view's overlay; for a failed result without one, of the
    first failed view's X-ray itself (said in its series description)."""
    sc_row = (
        export
        if export.kind == PacsExport.Kind.SC
        else PacsExport.objects.filter(
            study_id=export.study_id,
            kind=PacsExport.Kind.SC,
            trigger=export.trigger,
            result_key=export.result_key,
        ).first()
    )
    if sc_row is None:
        raise ExportImpossible("The secondary capture this report refers to is missing.")
    driver = result.driving_prediction
    if driver is not None and driver.overlay:
        name, description = driver.overlay.name, "CXR triage Grad-CAM overlay (decision support)"
    else:
        current = current_predictions(predictions)
        failed = [p for p in current if p.status == FAILED]
        if not (failed or current):
            raise ExportImpossible("This result has no image to capture.")
        name = (failed or current)[0].image.display.name
        description = "CXR triage: " + (
            "analysis failed, X-ray without overlay" if failed else "no model result, X-ray only"
        )
    try:
        with default_storage.open(name, "rb") as f:
            picture = f.read()
    except OSError as exc:
        raise ExportImpossible(f"The image file {name} could not be read: {exc}") from None
    uids = build.InstanceUids(sc_row.series_instance_uid, sc_row.sop_instance_uid, 901)
    return build.build_secondary_capture(
        source=source, png=picture, uids=uids, description=description
    )


def _report_content(
    export: PacsExport, result: StudyResult, predictions: list[Prediction]
) -> build.ReportContent:
    findings = [
        build.ClassFinding(label, p, threshold, flagged, label in result.normal_classes)
        for label, p, threshold, flagged in result.bars()
    ]
    current = current_predictions(predictions)
    failed = [p for p in current if p.status == FAILED]
    if failed or result.status == FAILED:
        status = FAILED
    else:
        status = DONE if findings else "none"  # none: a reading signed without a model result
    failure = "; ".join(f"view {p.image_id}: {p.error or 'failed'}" for p in failed)
    driver = result.driving_prediction
    reading: Reading | None = export.reading
    return build.ReportContent(
        status=status,
        label=result.label,
        flagged_classes=list(result.flagged_classes),
        findings=findings,
        model_version=result.model_version,
        failure=failure,
        ood_flagged=getattr(driver, "ood_flagged", None),
        ood_score=getattr(driver, "ood_score", None),
        ood_threshold=getattr(driver, "ood_threshold", None),
        final_label=reading.final_label if reading is not None else None,
        radiologist=_observer_name(reading),
        reading_notes=reading.notes if reading is not None else "",
    )


def _observer_name(reading: Reading | None) -> str:
    if reading is None:
        return ""
    user = reading.radiologist
    if user.last_name or user.first_name:
        return f"{user.last_name}^{user.first_name}"
    return user.get_username()
