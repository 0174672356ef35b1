"""Per-class heatmaps on demand, the worker side: the Grad-CAM of one class, stored as a PNG
(requested by diagnosis.services.heatmaps.class_heatmap_request)."""

from __future__ import annotations

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DatabaseError

from diagnosis.models import ClassHeatmap
from diagnosis.worker import compute
from training.ml.infer.render import render_pngs

# Grad-CAM keeps only what raises the class's score (a ReLU over the weighted activations) and
# scales the map to [0, 1]: a map with nothing above this level is empty, not a failure.
EMPTY_CAM_LEVEL = 1e-3
EMPTY_CAM_NOTE = (
    "The model's attention for this class is empty: no region of the image raises "
    "its score, so this heatmap shows nothing."
)


def class_heatmap_run(*, heatmap_id: int) -> ClassHeatmap | None:
    """Worker side of class_heatmap_request. Idempotent: a finished heatmap is left alone."""
    heatmap = (
        ClassHeatmap.objects.select_related("prediction__image", "prediction__model_version")
        .filter(pk=heatmap_id, status=ClassHeatmap.Status.QUEUED)
        .first()
    )
    if heatmap is None:
        return None
    try:
        prediction = heatmap.prediction
        predictor = compute.predictor_of(prediction)
        picture = compute.open_display(prediction.image, predictor.preprocessing)
        [result] = predictor.predict([picture], cam_classes=[heatmap.class_label])
        heatmap_png, _ = render_pngs(picture, result.cam, overlay=False)
        empty = float(result.cam.max()) < EMPTY_CAM_LEVEL
    except Exception as exc:  # noqa: BLE001
        if isinstance(exc, DatabaseError):
            raise
        ClassHeatmap.objects.filter(pk=heatmap.pk).update(
            status=ClassHeatmap.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000]
        )
        return ClassHeatmap.objects.get(pk=heatmap.pk)
    try:
        name = default_storage.save(
            f"heatmaps/{prediction.pk}/cam-{heatmap.class_label}.png", ContentFile(heatmap_png)
        )
    except OSError as exc:  # failed at once (asking again retries), not left queued
        ClassHeatmap.objects.filter(pk=heatmap.pk).update(
            status=ClassHeatmap.Status.FAILED,
            error=(
                f"The heatmap could not be stored ({exc.strerror or type(exc).__name__}): "
                "the media storage is full or not writable."
            ),
        )
        return ClassHeatmap.objects.get(pk=heatmap.pk)
    # A finished heatmap's `error` says why it shows nothing (the viewer puts it in words).
    ClassHeatmap.objects.filter(pk=heatmap.pk).update(
        status=ClassHeatmap.Status.DONE, file=name, error=EMPTY_CAM_NOTE if empty else ""
    )
    return ClassHeatmap.objects.get(pk=heatmap.pk)
