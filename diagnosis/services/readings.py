"""Signed readings. A reading is never changed: an amendment is a new reading."""

from __future__ import annotations

from django.db import transaction

from diagnosis.models import Prediction, Reading, Study


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


