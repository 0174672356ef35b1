"""Site calibration from the clinic's side: fitted on the signed readings of the last N studies
(final labels against the stored predictions, features recomputed from the stored images), and a
real worker reading the next image with the newly activated temperature."""

from __future__ import annotations

from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command

from diagnosis.models import Prediction
from diagnosis.services import reading_sign
from tests.conftest import wait_for
from tests.diagnosis.conftest import PNEUMONIA_CLASSES, finish_prediction, upload_view
from training.ml.train.calibration import softmax
from training.models import ModelCalibration
from training.services import calibration_activate, model_version_import, model_version_promote


@pytest.fixture
def version(db, state_dict_file, settings):
    settings.CXR_CALIBRATION_MIN_IMAGES = 8
    settings.CXR_INFERENCE_FREEZE = False
    v = model_version_import(
        path=state_dict_file("mobilenet_v2", 2),
        architecture="mobilenet_v2",
        classes=PNEUMONIA_CLASSES,
        name="pneu-site",
    )
    return model_version_promote(version=v, reason="test", override_reason="tests: no dataset")


def _signed_study(radiologist, version, i: int, final_label: str, p_pneumonia: float):
    upload = upload_view(radiologist, f"CAL-{i}", f"ACC-CAL-{i}", seed=100 + i)
    finish_prediction(
        upload.prediction, version, {"NORMAL": 1 - p_pneumonia, "PNEUMONIA": p_pneumonia}
    )
    return reading_sign(
        study=upload.study, radiologist=radiologist, final_label=final_label, notes="seen"
    )


def test_it_calibrates_on_the_signed_readings_of_the_last_n_studies(version, radiologist):
    rng = np.random.default_rng(0)
    for i in range(12):
        label = "PNEUMONIA" if i % 2 else "NORMAL"
        p = float(np.clip(rng.normal(0.7 if i % 2 else 0.3, 0.15), 0.01, 0.99))
        _signed_study(radiologist, version, i, label, p)
    _signed_study(radiologist, version, 12, "other", 0.5)  # not a class of the version

    out = StringIO()
    call_command("calibrate", "pneu-site", "--readings", "11", stdout=out)

    calibration = ModelCalibration.objects.get(version=version, number=2)
    assert calibration.status == "done", calibration.error
    assert calibration.kind == "readings" and calibration.readings == 11
    assert calibration.source == "signed readings of the last 11 studies"
    # The last 11 studies: 10 with a class of the version, the "other" one left out and said so.
    assert calibration.n_images == 10
    assert calibration.metrics["notes"] == [
        "1 image(s) whose final label is not a class of the version left out"
    ]
    assert set(calibration.thresholds) == set(PNEUMONIA_CLASSES)
    assert calibration.ood_summary["threshold"] > 0  # from the stored images' features
    assert "(n=10)" in out.getvalue()


def test_too_few_readings_are_refused_with_what_to_do(version, radiologist):
    for i in range(3):
        _signed_study(radiologist, version, i, "NORMAL" if i else "PNEUMONIA", 0.4)
    with pytest.raises(Exception, match=r"Only 3 usable image\(s\).*more readings"):
        call_command("calibrate", "pneu-site", "--readings", "50", stdout=StringIO())


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_worker_reads_the_next_image_with_the_activated_temperature(
    tmp_path, settings, radiologist, celery_worker
):
    import torch
    import torchvision

    settings.CXR_INFERENCE_FREEZE = False
    # weights=None gives ~0.5/0.5 on everything; a biased head gives probabilities a temperature
    # visibly changes.
    torch.manual_seed(0)
    model = torchvision.models.get_model("mobilenet_v2", weights=None, num_classes=2)
    with torch.no_grad():
        model.classifier[1].bias.copy_(torch.tensor([1.5, -1.5]))
    torch.save(model.state_dict(), tmp_path / "biased.pt")
    version = model_version_promote(
        version=model_version_import(
            path=tmp_path / "biased.pt",
            architecture="mobilenet_v2",
            classes=PNEUMONIA_CLASSES,
            name="pneu-live",
        ),
        reason="test",
        override_reason="tests: no dataset",
    )

    def done(prediction: Prediction) -> Prediction:
        def finished():
            """the prediction to finish"""
            prediction.refresh_from_db()
            return prediction if prediction.status in ("done", "failed") else None

        wait_for(finished)
        assert prediction.status == "done", prediction.error
        return prediction

    first = done(upload_view(radiologist, "LIVE-T1", "ACC-LIVE-T1", seed=7).prediction)
    fitted = ModelCalibration.objects.create(
        version=version,
        number=2,
        kind="dataset",
        status="done",
        source="dataset site split all",
        temperature=4.0,
        thresholds={"NORMAL": 0.5, "PNEUMONIA": 0.3},
    )
    calibration_activate(calibration=fitted)
    # The same pixels in another study: the same logits, now divided by 4.
    second = done(upload_view(radiologist, "LIVE-T2", "ACC-LIVE-T2", seed=7).prediction)

    p1 = np.array([[first.probabilities[c] for c in PNEUMONIA_CLASSES]])
    p2 = np.array([[second.probabilities[c] for c in PNEUMONIA_CLASSES]])
    assert not np.allclose(p1, p2, atol=1e-3)
    assert np.allclose(p2, softmax(np.log(p1), 4.0), atol=1e-4)
