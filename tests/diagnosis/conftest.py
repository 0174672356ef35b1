"""Fixtures of the diagnosis tests: a NORMAL/PNEUMONIA version with chosen thresholds, and
helpers that upload a view and write a worker's outcome (real rows, no model run)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from diagnosis import services
from diagnosis.models import Prediction
from tests import imagegen
from training.models import ModelVersion

# The version of the example: PNEUMONIA's operating threshold is 0.292.
PNEUMONIA_CLASSES = ["NORMAL", "PNEUMONIA"]
THRESHOLDS = {"NORMAL": 0.5, "PNEUMONIA": 0.292}


@pytest.fixture
def pneumonia_model(db) -> ModelVersion:
    """A version row with the chosen thresholds (no weights are run: predictions are set)."""
    return ModelVersion.objects.create(
        name="pneu-v1",
        architecture="mobilenet_v2",
        class_labels=PNEUMONIA_CLASSES,
        thresholds=THRESHOLDS,
        weights="models/pneu-v1.pt",
        sha256="0" * 64,
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
    )


def upload_view(user, mrn: str, accession: str, seed: int, **kw):
    return services.study_upload(
        uploaded_by=user,
        data=imagegen.png_bytes(seed=seed),
        patient_id=mrn,
        accession_number=accession,
        **kw,
    )


def finish_prediction(
    prediction: Prediction, version: ModelVersion, probabilities: dict, *, ood: dict | None = None
) -> Prediction:
    """The worker's outcome, written as the worker writes it, then the study's result stored.
    ``ood``: an OODResult.to_dict() (score, threshold, flagged, reasons), stored as the worker
    stores it (diagnosis.worker.finish.ood_fields)."""
    from diagnosis.worker.finish import ood_fields

    label = max(probabilities, key=probabilities.get)
    Prediction.objects.filter(pk=prediction.pk).update(
        model_version=version,
        status="done",
        label=label,
        cam_class=label,
        probabilities=probabilities,
        finished_at=timezone.now(),
        **ood_fields(ood),
    )
    prediction.refresh_from_db()
    services.study_flag_from_prediction(prediction=prediction)
    return prediction


def fail_prediction(prediction: Prediction, version: ModelVersion) -> None:
    Prediction.objects.filter(pk=prediction.pk).update(
        model_version=version, status="failed", error="decode error", finished_at=timezone.now()
    )
