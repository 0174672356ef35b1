"""Re-analysis: read studies again with a model version (the production one, after a promotion
or a roll back), keeping every earlier prediction as history.

An image holds at most one prediction per model version (the unique constraint keeps a re-run
idempotent), and its *current* prediction is its most recently queued one
(:func:`diagnosis.results.current_predictions`). So re-analysing an image with version V:

- creates V's prediction when the image has none: the earlier ones stay, as history;
- does nothing when V's prediction is already the current one and is done, queued or running
  (a second click, or a promotion of the version that read it); a failed one is queued again;
- queues V's earlier prediction again when a newer one from another version came after it
  (a roll back to V): V computes the same result again and it becomes the current one.

Re-runs are sent with a lower broker priority than uploads (:data:`REANALYSIS_PRIORITY`), so a
new upload is never stuck behind hundreds of re-runs. Why a priority and not a queue: with the
Redis transport a worker that consumes several queues takes them in turn (kombu's
``queue_order_strategy`` is round robin), so a separate ``reanalysis`` queue would still get
every other slot; kombu does honour priorities on Redis, though: it keeps one list per priority
step (0, 3, 6, 9; 0 is the most urgent and the default) and its BRPOP names every queue's
priority-0 list before any lower one, so a worker always takes a waiting upload first. The
prefetch multiplier of 1 (settings) keeps a worker from holding re-runs it fetched earlier.
The filesystem transport (the fallback broker) ignores priorities: there re-runs are plain
FIFO. A re-run whose message is lost is sent again by the reconciler at the default priority.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from diagnosis.dispatch import prediction_dispatch
from diagnosis.models import Image, Prediction, Study
from diagnosis.services.predictions import study_result_store
from training.models import ModelVersion

logger = logging.getLogger(__name__)

# The broker priority of a re-run (Redis: 0 is the most urgent, uploads are sent with it).
REANALYSIS_PRIORITY = 9


class ReanalysisRefused(Exception):
    """Nothing can be re-analysed (no production version); the message says what to do."""


@dataclass
class ReanalysisOutcome:
    studies: int = 0  # studies with at least one image queued
    queued: int = 0  # predictions queued (new ones, or a version's earlier one again)
    unchanged: int = 0  # images already read (or being read) by the version

    def as_detail(self, version: ModelVersion) -> dict:
        return {
            "version": version.name,
            "studies": self.studies,
            "queued": self.queued,
            "unchanged": self.unchanged,
        }


def production_version() -> ModelVersion:
    version = ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).first()
    if version is None:
        raise ReanalysisRefused("No model version is in production: promote one first.")
    return version


def _enqueue_reanalysis_on_commit(prediction_id: int) -> None:
    transaction.on_commit(
        lambda: prediction_dispatch(prediction_id, priority=REANALYSIS_PRIORITY), robust=True
    )


def prediction_reanalyse(*, image: Image, version: ModelVersion) -> Prediction | None:
    """Queue `image` for `version` (see the module's docstring); None when there is nothing
    to do. Call inside a transaction; the task is sent after it commits."""
    predictions = list(
        Prediction.objects.select_for_update().filter(image=image).order_by("-queued_at", "-pk")
    )
    current = predictions[0] if predictions else None
    existing = next((p for p in predictions if p.model_version_id == version.pk), None)
    if existing is None:
        prediction = Prediction.objects.create(image=image, model_version=version)
    elif (
        current is not None
        and existing.pk == current.pk
        and existing.status != Prediction.Status.FAILED
    ):
        return None
    else:
        # A roll back (V's prediction is history) or a failed one: V reads the image again.
        Prediction.objects.filter(pk=existing.pk).update(
            status=Prediction.Status.QUEUED,
            error="",
            attempts=0,
            dispatches=0,
            last_dispatched_at=None,
            started_at=None,
            finished_at=None,
            queued_at=timezone.now(),
        )
        prediction = existing
    _enqueue_reanalysis_on_commit(prediction.pk)
    return prediction


def _reanalyse(studies, version: ModelVersion) -> ReanalysisOutcome:
    outcome = ReanalysisOutcome()
    for study in studies:
        queued = 0
        # Only views whose analysis was requested (an image may be stored without one).
        for image in study.images.filter(predictions__isnull=False).distinct().order_by("pk"):
            if prediction_reanalyse(image=image, version=version) is None:
                outcome.unchanged += 1
            else:
                queued += 1
        if queued:
            outcome.studies += 1
            outcome.queued += queued
            study_result_store(study_id=study.pk)  # the flag follows the (now pending) result
    return outcome


@transaction.atomic
def study_reanalyse(*, study: Study, version: ModelVersion | None = None) -> ReanalysisOutcome:
    """Re-analyse every view of `study` with `version` (default: the production version).

    Raises ReanalysisRefused without a production version. A signed reading stays valid
    history; a new reading must be signed against the new predictions."""
    version = version or production_version()
    outcome = _reanalyse([study], version)
    logger.info("study %s re-analysed with %s: %s", study.pk, version.name, outcome)
    return outcome


@transaction.atomic
def studies_reanalyse_open(*, version: ModelVersion) -> ReanalysisOutcome:
    """Re-analyse every open study (no signed reading) with `version`: offered on a promotion
    and a roll back, so that flags of a withdrawn model do not stay on the worklist. Signed
    studies are left as they were read."""
    studies = Study.objects.filter(readings__isnull=True).order_by("-priority", "created_at")
    outcome = _reanalyse(studies.iterator(), version)
    logger.info("open studies re-analysed with %s: %s", version.name, outcome)
    return outcome
