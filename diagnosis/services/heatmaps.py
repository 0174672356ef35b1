"""Per-class heatmaps on demand: requested by the web process, computed by a worker
(diagnosis.worker.heatmaps)."""

from __future__ import annotations

from django.db import transaction

from diagnosis.dispatch import class_heatmap_enqueue_on_commit
from diagnosis.models import ClassHeatmap, Prediction


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
        ClassHeatmap.objects.filter(pk=heatmap.pk).update(
            status=ClassHeatmap.Status.QUEUED, error=""
        )
        heatmap.refresh_from_db()
        created = True
    if created:
        class_heatmap_enqueue_on_commit(heatmap.pk)
    return heatmap
