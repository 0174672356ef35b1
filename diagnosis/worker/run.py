"""One prediction task's work: claim it, add a micro-batch of what waits for the same model,
compute, and store every outcome in one transaction."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

from diagnosis.models import Prediction
from diagnosis.services import storage_delete_quietly
from diagnosis.worker import claim, compute, finish

logger = logging.getLogger(__name__)


def prediction_run(*, prediction_id: int, worker: str = "") -> Prediction | None:
    """Run the model and Grad-CAM for one queued prediction, and for a micro-batch of others
    waiting for the same model (see compute.batch_size) in one forward pass. Idempotent.

    Permanent problems (unreadable image, missing or corrupt weights) mark a prediction failed
    with a message at once. Any other error (the model crashed on this image) puts it back in the
    queue behind the others, up to CXR_PREDICTION_MAX_ATTEMPTS, then marks it failed with the
    error: a poison image never blocks the queue, and never fails the images batched with it
    (a batch that crashes is run again one image at a time). Database errors propagate, so the
    task retries; the batch's other rows are put back in the queue first when the database
    allows it.
    Returns this task's own prediction, or None when there was nothing to do.
    """
    worker = claim.worker_identity(worker)
    prediction = claim.prediction_claim(prediction_id=prediction_id, worker=worker)
    if prediction is None:
        logger.info("prediction %s: nothing to do (already claimed or finished)", prediction_id)
        return None
    if prediction.attempts > settings.CXR_PREDICTION_MAX_ATTEMPTS:
        return finish.prediction_fail(
            prediction,
            f"Gave up after {prediction.attempts - 1} attempts: the worker stopped while "
            "analysing this image each time.",
        )
    batch = [prediction]
    if prediction.attempts == 1:
        batch += claim.predictions_claim_batch_companions(
            prediction=prediction, limit=compute.batch_size() - 1, worker=worker
        )
    outcomes = compute.compute_batch(batch)
    # The batch's outcomes are stored in one transaction: one commit (one WAL flush, for which
    # the worker's core would otherwise sit idle) per batch instead of one or two per image. A
    # database error (or any other, e.g. a full disk) stores none of them: their files are
    # removed, the companions go back to the queue, and this task's retry (or the reconciler)
    # takes its own claim back. A storage that cannot take the files (not writable, full) is
    # each prediction's error at once: retried, then failed, not left running for the reconciler.
    finished: dict[int, Prediction | None] = {}
    written: list[str] = []
    try:
        with transaction.atomic():
            for member, outcome in zip(batch, outcomes, strict=True):
                finished[member.pk] = finish.prediction_finish(member, outcome, written=written)
    except BaseException as exc:
        storage_delete_quietly(written)
        if isinstance(exc, OSError):
            logger.error("prediction %s: results not stored: %s", prediction_id, exc)
            reason = exc.strerror or type(exc).__name__
            message = (
                f"The result could not be stored ({reason}): the media storage is full "
                "or not writable."
            )
            return {m.pk: finish.prediction_retry_or_fail(m, message) for m in batch}[prediction.pk]
        finish.release_unfinished(batch[1:], worker=worker)
        raise
    if len(batch) > 1:
        logger.info("prediction %s: ran in a micro-batch of %d", prediction_id, len(batch))
    return finished[prediction.pk]
