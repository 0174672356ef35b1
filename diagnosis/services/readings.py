"""Signed readings. A reading is never changed: an amendment is a new reading."""

from __future__ import annotations

from collections.abc import Collection

from django.db import transaction

from diagnosis.models import Prediction, Reading, Study
from diagnosis.results import StudyResult, study_result
from diagnosis.services.pacs import pacs_exports_for_reading


class ReadingRejected(ValueError):
    """The reading cannot be signed as given; the message says why."""

    code = "invalid"


class ReadingAgreeRefused(ReadingRejected):
    """ "Agree" on an unreliable result (a view unlike the training data): the radiologist was
    not shown a label to agree with (a normal top class is withheld), and an unreliable answer
    is not one to sign in one click. The final label must be chosen."""

    code = "unreliable_result"


class ReadingStale(ReadingRejected):
    """The study's result changed after the radiologist saw it (a view finished, a re-analysis):
    nothing is signed; the result must be reviewed again."""

    code = "stale_result"

    def __init__(self, message: str, *, result: StudyResult) -> None:
        super().__init__(message)
        self.result = result  # the study's current result, to review again


@transaction.atomic
def reading_sign(
    *,
    study: Study,
    radiologist,
    final_label: str,
    agrees: bool | None = None,
    notes: str = "",
    amends: Reading | None = None,
    prediction_ids: Collection[int] | None = None,
) -> Reading:
    """Sign a reading of `study` against its result (diagnosis.results.study_result).

    `prediction_ids` are the result's predictions the radiologist was shown: when the study's
    current ones differ, :class:`ReadingStale` is raised and nothing is stored. Every surface that
    shows a result passes them; None (scripts, fixtures) signs against the current result.
    Agreeing signs the result's label, and is refused (:class:`ReadingAgreeRefused`) when the
    result is unreliable: the final label is then chosen explicitly. An amendment is a new reading that points at the one it
    amends.
    """
    study = Study.objects.select_for_update().get(pk=study.pk)
    result = study_result(
        Prediction.objects.filter(image__study=study).select_related("model_version")
    )
    if prediction_ids is not None and sorted(set(prediction_ids)) != sorted(result.prediction_ids):
        raise ReadingStale(
            "The model's result for this study changed after you opened it (a view finished or "
            "was analysed again). Review the current result, then sign again.",
            result=result,
        )
    prediction = result.driving_prediction
    version = prediction.model_version if prediction is not None else None
    classes: list[str] = []
    for label in version.class_labels if version else []:
        classes.append(label)
    classes += [c for c in result.probabilities if c not in classes]
    final_label = (final_label or "").strip()
    if agrees and result.unreliable:
        raise ReadingAgreeRefused(
            "The model's result for this study is unreliable (a view is unlike its training "
            "data), so there is nothing to agree with: choose the final label yourself."
        )
    if agrees and result.label:
        final_label = result.label
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
    reading = Reading.objects.create(
        study=study,
        prediction=prediction,
        prediction_ids=list(result.prediction_ids),
        model_version=version,
        radiologist=radiologist,
        agrees_with_model=(final_label == result.label) if result.label else None,
        final_label=final_label[:64],
        notes=notes.strip(),
        amends=amends,
    )
    pacs_exports_for_reading(reading=reading)
    return reading
