"""Reads of the diagnosis app, with the joins they need (no N+1 queries)."""

from __future__ import annotations

import datetime as dt
import hashlib

from django.db import connection
from django.db.models import (
    Case,
    Count,
    Exists,
    IntegerField,
    Max,
    Min,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)

from cxrweb.audit.models import AuditEvent
from diagnosis import results
from diagnosis.models import PacsExport, Prediction, Reading, Study
from diagnosis.results import StudyResult


def study_list() -> QuerySet[Study]:
    return Study.objects.select_related("patient", "uploaded_by").prefetch_related(
        Prefetch(
            "images__predictions",
            queryset=Prediction.objects.select_related("model_version").order_by("-queued_at"),
        ),
        Prefetch("readings", queryset=Reading.objects.select_related("radiologist")),
    )


def worklist(
    *,
    q: str = "",
    status: str = "",
    finding: str = "",
    reviewed: str = "",
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
) -> QuerySet[Study]:
    """Studies in reading order. Unread studies first: those that need attention (a view's
    current analysis failed, or its finished one is unlike the training data: the result is
    unreliable), then those the study result flags, then the rest; within each, by priority
    (STAT, urgent, routine), longest waiting first. Read studies last, newest first."""
    # A view's current prediction is its latest (diagnosis.results): older ones are history.
    newer = Prediction.objects.filter(image=OuterRef("image"), queued_at__gt=OuterRef("queued_at"))
    current = Prediction.objects.filter(image__study=OuterRef("pk")).filter(~Exists(newer))
    studies = (
        study_list()
        .annotate(
            is_reviewed=Exists(Reading.objects.filter(study=OuterRef("pk"))),
            analysis_failed=Exists(current.filter(status=Prediction.Status.FAILED)),
            unreliable=Exists(current.filter(status=Prediction.Status.DONE, ood_flagged=True)),
        )
        .annotate(
            sort_group=Case(
                When(
                    Q(analysis_failed=True) | Q(unreliable=True), is_reviewed=False, then=Value(0)
                ),
                When(is_reviewed=False, flagged_by_model=True, then=Value(1)),
                When(is_reviewed=False, then=Value(2)),
                default=Value(3),
                output_field=IntegerField(),
            )
        )
    )
    if q:
        studies = studies.filter(
            Q(patient__mrn__icontains=q)
            | Q(accession_number__icontains=q)
            | Q(patient__name__icontains=q)
        )
    studies = _with_status(studies, current, status)
    if finding == "flagged":
        studies = studies.filter(flagged_by_model=True)
    elif finding == "unreliable":
        studies = studies.filter(unreliable=True)
    elif finding:
        studies = studies.filter(result_label=finding)
    if reviewed == "yes":
        studies = studies.filter(is_reviewed=True)
    elif reviewed == "no":
        studies = studies.filter(is_reviewed=False)
    if date_from:
        studies = studies.filter(created_at__date__gte=date_from)
    if date_to:
        studies = studies.filter(created_at__date__lte=date_to)
    return studies.order_by(
        "sort_group",
        "-priority",
        Case(When(sort_group=3, then="created_at")).desc(nulls_last=True),
        "created_at",
    )


def _with_status(
    studies: QuerySet[Study], current: QuerySet[Prediction], status: str
) -> QuerySet[Study]:
    """The studies whose result has this status (`current`: each view's current prediction):
    failed (needs attention), done (every view), else the views still waiting for a model,
    queued or running; all of them for no status."""
    queued = current.filter(status=Prediction.Status.QUEUED)
    if status == "waiting":
        return studies.filter(Exists(queued.filter(model_version__isnull=True)))
    if status == "queued":
        return studies.filter(Exists(queued.filter(model_version__isnull=False)))
    if status == "running":
        return studies.filter(Exists(current.filter(status=Prediction.Status.RUNNING)))
    if status == "failed":
        return studies.filter(analysis_failed=True)
    if status == "done":
        return studies.filter(Exists(current)).exclude(
            Exists(current.exclude(status=Prediction.Status.DONE))
        )
    return studies


# The prediction states a study passes through before its result is final. Each is a small
# set of rows, read through the status index.
_PENDING_BUCKETS = {
    "waiting": Q(status=Prediction.Status.QUEUED, model_version__isnull=True),
    "queued": Q(status=Prediction.Status.QUEUED, model_version__isnull=False),
    "running": Q(status=Prediction.Status.RUNNING),
}


def worklist_token() -> str:
    """A short token that changes whenever the worklist may have changed: a study uploaded, a
    prediction queued, started, finished or failed (or queued again), a reading signed.

    Two cheap queries, whatever the number of studies: the newest study, prediction and reading
    ids (primary-key index), and a fingerprint (count, sum, min, max of the ids) of each pending
    state's predictions (status index; these are the few rows still in flight). Rows only ever
    reach done or failed by leaving a pending state, and readings are append-only, so every
    change moves one of them. Not covered: an admin changing a version's normal classes (the
    re-flagged studies show on the next page load). The part before the dot is the newest study
    id, which worklist_new_count() reads back."""
    quote = connection.ops.quote_name
    newest = ", ".join(
        f"(SELECT MAX({quote('id')}) FROM {quote(m._meta.db_table)})"
        for m in (Study, Prediction, Reading)
    )
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {newest}")
        study_id, *others = cursor.fetchone()
    pending = Prediction.objects.filter(
        status__in=[Prediction.Status.QUEUED, Prediction.Status.RUNNING]
    ).aggregate(
        **{
            f"{name}_{agg.__name__}": agg("id", filter=where)
            for name, where in _PENDING_BUCKETS.items()
            for agg in (Count, Sum, Min, Max)
        }
    )
    parts = [study_id, *others, *(pending[k] for k in sorted(pending))]
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()
    return f"{study_id or 0}.{digest}"


def worklist_new_count(*, since: str, filters: dict) -> int:
    """How many studies matching the worklist's `filters` were uploaded after the study that
    was newest when `since` (a worklist_token()) was read; 0 for a token that is not one."""
    newest, _, digest = since.partition(".")
    if not newest.isdigit() or not digest:
        return 0
    return worklist(**filters).filter(pk__gt=int(newest)).count()


def known_findings() -> list[str]:
    return sorted(
        set(Study.objects.exclude(result_label="").values_list("result_label", flat=True))
    )


def study_detail(pk: int) -> Study:
    return study_list().get(pk=pk)


def study_predictions(study: Study) -> list[Prediction]:
    """Every prediction of the study, history included (newest first per image)."""
    return [p for image in study.images.all() for p in image.predictions.all()]


def study_result(study: Study) -> StudyResult:
    """The study's one result (diagnosis.results.study_result), from the prefetched predictions
    of study_list()/study_detail()."""
    return results.study_result(study_predictions(study))


def study_pacs_exports(study: Study, *, limit: int = 8) -> list[PacsExport]:
    """The study's latest DICOM objects sent (or being sent) to the PACS, newest first."""
    return list(study.pacs_exports.order_by("-created_at", "kind")[:limit])


def study_readings(study: Study) -> list[Reading]:
    return sorted(study.readings.all(), key=lambda r: r.signed_at, reverse=True)


def prediction_for_api(pk: int) -> Prediction:
    """What the API's prediction endpoints read (polled often): the prediction, its image's
    study id, and the version's name, architecture and classes; not the version's metrics and
    curves (JSON parsed on every poll otherwise), nor the image's DICOM tags."""
    return (
        Prediction.objects.select_related("image", "model_version")
        .only(
            *(f.name for f in Prediction._meta.concrete_fields),
            "image__study",
            "model_version__name",
            "model_version__architecture",
            "model_version__class_labels",
        )
        .get(pk=pk)
    )


def prediction_file_for_api(pk: int) -> Prediction:
    """What the API's heatmap downloads read: the prediction's own fields and the patient's
    record number, which the download's audit event names (no further query for it)."""
    return (
        Prediction.objects.select_related("image__study__patient")
        .only(
            *(f.name for f in Prediction._meta.concrete_fields),
            "image__study__patient__mrn",
        )
        .get(pk=pk)
    )


def agreement_by_version() -> list[dict]:
    """Per model version: current readings, and how often the radiologist agreed with the model."""
    rows = (
        Reading.objects.filter(model_version__isnull=False, amended_by__isnull=True)
        .values("model_version__name", "model_version__architecture", "model_version__status")
        .annotate(
            readings=Count("id"),
            agreed=Count("id", filter=Q(agrees_with_model=True)),
        )
        .order_by("-readings")
    )
    return [
        {**row, "rate": (row["agreed"] / row["readings"]) if row["readings"] else None}
        for row in rows
    ]


def audit_events(
    *,
    user: str = "",
    action: str = "",
    patient: str = "",
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
) -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.all()
    if user:
        events = events.filter(username__icontains=user)
    if action:
        events = events.filter(action=action)
    if patient:
        events = events.filter(patient_mrn__icontains=patient)
    if date_from:
        events = events.filter(at__date__gte=date_from)
    if date_to:
        events = events.filter(at__date__lte=date_to)
    return events


def readings_for_calibration(*, version, studies: int) -> list[dict]:
    """For a site calibration: the current (not amended) signed readings of the last ``studies``
    studies read against ``version``, one row per finished prediction of that version the
    reading was signed against: ``{"path", "label", "probabilities", "finished_at"}`` (the
    display file's storage name, the final label, the stored probabilities)."""
    readings = (
        Reading.objects.filter(model_version=version, amended_by__isnull=True)
        .order_by("-signed_at", "-pk")
        .values("study_id", "final_label", "prediction_ids")
    )
    chosen: dict[int, dict] = {}
    for reading in readings.iterator():
        if reading["study_id"] not in chosen:
            chosen[reading["study_id"]] = reading
            if len(chosen) >= studies:
                break
    wanted = {
        int(pk): r["final_label"] for r in chosen.values() for pk in r["prediction_ids"] or []
    }
    predictions = Prediction.objects.filter(
        pk__in=wanted, model_version=version, status=Prediction.Status.DONE
    ).values("pk", "probabilities", "finished_at", "image__display")
    return [
        {
            "path": p["image__display"],
            "label": wanted[p["pk"]],
            "probabilities": p["probabilities"],
            "finished_at": p["finished_at"],
        }
        for p in predictions.order_by("pk")
        if p["probabilities"] and p["image__display"]
    ]
