"""Results back out to the PACS, the web side: which DICOM objects to send for a study, and when.

A study whose views have all finished (its result is done or failed), and, as configured by
CXR_PACS_SEND_ON, a signed reading, get a Secondary Capture (the overlay) and an SR each, one
``PacsExport`` row per object, sent after commit by the workers (diagnosis.worker.pacs). The
rows are made once per result: a redelivered task or a second call makes nothing new; a
re-analysis (other predictions) or an amendment (another reading) makes new ones.
"""

from __future__ import annotations

from django.conf import settings
from django.db import IntegrityError, transaction
from pydicom.uid import generate_uid

from diagnosis.dispatch import pacs_export_enqueue_on_commit
from diagnosis.models import PacsExport, Prediction, Reading, Study
from diagnosis.results import DONE, FAILED, current_predictions

RESULT_KEY_PREFIX = "result:"
READING_KEY_PREFIX = "reading:"


def pacs_destination() -> str:
    """Where objects go (CXR_PACS_URL, else CXR_PACS_AE); "" when sending is off."""
    return settings.CXR_PACS_URL or settings.CXR_PACS_AE


def pacs_sends_on(trigger: str) -> bool:
    return bool(pacs_destination()) and settings.CXR_PACS_SEND_ON in (trigger, "both")


def study_uid_ensure(*, study: Study) -> str:
    """The study's StudyInstanceUID: the source's for DICOM uploads; for PNG/JPEG uploads one
    made now and stored, so that every object sent later joins the same study in the PACS."""
    if not study.study_instance_uid:
        Study.objects.filter(pk=study.pk, study_instance_uid="").update(
            study_instance_uid=generate_uid()
        )
        study.study_instance_uid = (
            Study.objects.filter(pk=study.pk).values_list("study_instance_uid", flat=True).get()
        )
    return study.study_instance_uid


def pacs_exports_for_result(*, study_id: int) -> list[PacsExport]:
    """After a view's prediction finished or failed: once every view of the study has finished,
    the study's result (done, or failed: the SR says so) goes to the PACS, if configured."""
    if not pacs_sends_on(PacsExport.Trigger.RESULT):
        return []
    current = current_predictions(
        Prediction.objects.filter(image__study_id=study_id).only(
            "pk", "image_id", "status", "queued_at"
        )
    )
    if not current or any(p.status not in (DONE, FAILED) for p in current):
        return []  # a view is still queued or running: its result is not complete yet
    key = RESULT_KEY_PREFIX + ",".join(str(p.pk) for p in sorted(current, key=lambda p: p.pk))
    return _exports_create(study_id=study_id, trigger=PacsExport.Trigger.RESULT, key=key)


def pacs_exports_for_failed_since(*, since) -> int:
    """The studies with a view failed since `since` by another path than the worker's finish
    (the reconciler gives up on a lost or crashing prediction): their result goes to the PACS
    too, with an SR that says it failed. Idempotent; how many objects were made."""
    if not pacs_sends_on(PacsExport.Trigger.RESULT):
        return 0
    study_ids = (
        Prediction.objects.filter(status=FAILED, finished_at__gte=since)
        .values_list("image__study_id", flat=True)
        .distinct()
    )
    return sum(len(pacs_exports_for_result(study_id=pk)) for pk in study_ids)


def pacs_exports_for_reading(*, reading: Reading) -> list[PacsExport]:
    """After a reading (or an amendment) was signed: its SR, with the radiologist's label."""
    if not pacs_sends_on(PacsExport.Trigger.READING):
        return []
    return _exports_create(
        study_id=reading.study_id,
        trigger=PacsExport.Trigger.READING,
        key=f"{READING_KEY_PREFIX}{reading.pk}",
        reading=reading,
    )


def _exports_create(
    *, study_id: int, trigger: str, key: str, reading: Reading | None = None
) -> list[PacsExport]:
    study = Study.objects.get(pk=study_id)
    study_uid_ensure(study=study)
    made = []
    for kind in (PacsExport.Kind.SC, PacsExport.Kind.SR):
        if PacsExport.objects.filter(
            study_id=study_id, kind=kind, trigger=trigger, result_key=key
        ).exists():
            continue
        try:
            with transaction.atomic():
                export = PacsExport.objects.create(
                    study_id=study_id,
                    kind=kind,
                    trigger=trigger,
                    result_key=key,
                    reading=reading,
                    destination=pacs_destination()[:300],
                    series_instance_uid=generate_uid(),
                    sop_instance_uid=generate_uid(),
                )
        except IntegrityError:
            continue  # made meanwhile by a concurrent finish of another view
        pacs_export_enqueue_on_commit(export.pk)
        made.append(export)
    return made


class PacsResendRefused(Exception):
    """A PACS export cannot be sent again now; the message says why."""


def pacs_export_resend(*, export: PacsExport) -> PacsExport:
    """Send a failed export again (after the PACS or its configuration was fixed): back to
    pending with its attempts reset, and queued after commit. Not failed (sent, or already being
    sent by another resend): nothing changes. Shared by ``manage.py pacs_resend`` and the study
    page's Re-send button."""
    if not pacs_destination():
        raise PacsResendRefused("Sending to the PACS is off: set CXR_PACS_URL or CXR_PACS_AE.")
    updated = PacsExport.objects.filter(pk=export.pk, status=PacsExport.Status.FAILED).update(
        status=PacsExport.Status.PENDING, attempts=0, destination=pacs_destination()[:300]
    )
    if updated:
        pacs_export_enqueue_on_commit(export.pk)
    export.refresh_from_db()
    return export
