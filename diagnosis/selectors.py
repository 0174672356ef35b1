"""Reads of the diagnosis app, with the joins they need (no N+1 queries)."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from diagnosis.models import Image, Prediction, Study


def study_list() -> QuerySet[Study]:
    return Study.objects.select_related("patient", "uploaded_by").prefetch_related(
        Prefetch(
            "images__predictions",
            queryset=Prediction.objects.select_related("model_version").order_by("-queued_at"),
        )
    )


def study_detail(pk: int) -> Study:
    return study_list().get(pk=pk)


def study_predictions(study: Study) -> list[Prediction]:
    return [p for image in study.images.all() for p in image.predictions.all()]


def prediction_detail(pk: int) -> Prediction:
    return Prediction.objects.select_related(
        "image__study__patient", "model_version"
    ).get(pk=pk)


def image_detail(pk: int) -> Image:
    return Image.objects.select_related("study__patient").get(pk=pk)
