from __future__ import annotations

import os

import numpy as np
import pytest
from django.db import DatabaseError

from diagnosis import services
from diagnosis.dispatch import RUN_PREDICTION
from diagnosis.models import Image, Patient, Prediction, Study
from tests import imagegen
from training.ml.imaging import UploadRejected


def _sent_ids(sent_tasks):
    """The ids of the predictions sent to the workers so far, when called: each send checked to
    be the prediction task, sent at once and at the default priority."""

    def ids() -> list[int]:
        assert all(
            t.name == RUN_PREDICTION and len(t.args) == 1 and t.options == {} for t in sent_tasks
        ), sent_tasks
        return [t.args[0] for t in sent_tasks]

    return ids


def _files_under(root) -> list[str]:
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]


def test_it_stores_a_png_and_queues_a_waiting_prediction_without_a_production_model(
    radiologist, settings
):
    result = services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(), filename="chest.png", patient_id="MRN-1"
    )
    assert result.study.patient.mrn == "MRN-1"
    assert result.study.uploaded_by == radiologist
    assert result.image.format == "PNG"
    assert len(result.image.sha256) == 64
    assert result.prediction.status == Prediction.Status.QUEUED
    assert result.prediction.model_version is None
    assert "no model version is in production" in result.prediction.status_message
    assert os.path.exists(result.image.original.path)
    assert os.path.exists(result.image.display.path)


def test_it_queues_on_the_production_model_after_commit(
    radiologist, production_model, django_capture_on_commit_callbacks, sent_tasks
):
    sent = _sent_ids(sent_tasks)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = services.study_upload(
            uploaded_by=radiologist, data=imagegen.jpeg_bytes(), patient_id="MRN-2"
        )
        assert sent() == []  # nothing is sent before the transaction commits
    assert len(callbacks) == 1
    assert sent() == [result.prediction.pk]
    assert result.prediction.model_version == production_model


def test_it_takes_patient_and_study_fields_from_dicom_tags(radiologist):
    data = imagegen.dicom_bytes(
        patient_id="DCM-7",
        patient_name="Doe^Jane",
        sex="F",
        birth_date="19700102",
        accession="ACC-77",
        study_date="20260105",
        view="AP",
    )
    result = services.study_upload(uploaded_by=radiologist, data=data, filename="x.dcm")
    study = result.study
    assert study.patient.mrn == "DCM-7"
    assert "Doe" in study.patient.name and "Jane" in study.patient.name
    assert study.patient.sex == "F"
    assert str(study.patient.birth_date) == "1970-01-02"
    assert study.accession_number == "ACC-77"
    assert str(study.study_date) == "2026-01-05"
    assert study.view == "AP"
    assert result.image.format == "DICOM"
    assert result.image.sop_instance_uid


def test_an_explicit_patient_id_wins_over_the_dicom_tag(radiologist):
    data = imagegen.dicom_bytes(patient_id="DCM-8", accession="ACC-88")
    result = services.study_upload(uploaded_by=radiologist, data=data, patient_id="FORM-8")
    assert result.study.patient.mrn == "FORM-8"


def test_it_requires_a_patient_id_for_a_plain_image(radiologist):
    with pytest.raises(UploadRejected) as exc:
        services.study_upload(uploaded_by=radiologist, data=imagegen.png_bytes())
    assert exc.value.code == "missing_patient_id"
    assert Study.objects.count() == 0


@pytest.mark.parametrize(
    "make, code",
    [
        (imagegen.text_named_png, "unsupported_format"),
        (imagegen.truncated_png, "corrupt"),
        (imagegen.truncated_jpeg, "corrupt"),
        (imagegen.bomb_png, "too_many_pixels"),
        (imagegen.empty_bytes, "empty"),
        (lambda: imagegen.dicom_bytes(with_pixels=False), "dicom_no_pixels"),
    ],
)
def test_bad_input_is_rejected_and_nothing_is_left_behind(radiologist, settings, make, code):
    with pytest.raises(UploadRejected) as exc:
        services.study_upload(uploaded_by=radiologist, data=make(), patient_id="MRN-BAD")
    assert exc.value.code == code
    assert str(exc.value)
    assert (Patient.objects.count(), Study.objects.count(), Image.objects.count()) == (0, 0, 0)
    assert _files_under(settings.MEDIA_ROOT) == []


def test_a_file_over_the_size_limit_is_rejected(radiologist, settings):
    settings.CXR_MAX_UPLOAD_BYTES = 1000
    with pytest.raises(UploadRejected) as exc:
        services.study_upload(uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="M")
    assert exc.value.code == "too_large"
    assert Image.objects.count() == 0


def test_a_database_failure_removes_the_files_it_wrote(radiologist, settings, monkeypatch):
    def boom(**kwargs):
        raise DatabaseError("connection lost")

    from diagnosis.services import uploads

    monkeypatch.setattr(uploads, "_prediction_create", boom)
    with pytest.raises(DatabaseError):
        services.study_upload(uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="M")
    assert Image.objects.count() == 0
    assert _files_under(settings.MEDIA_ROOT) == []


def test_an_existing_accession_adds_the_image_to_that_study(radiologist):
    first = services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="M1", accession_number="A1"
    )
    second = services.study_upload(
        uploaded_by=radiologist,
        data=imagegen.png_bytes(imagegen.make_xray(seed=3)),
        patient_id="M1",
        accession_number="A1",
        view="LATERAL",
    )
    assert second.study.pk == first.study.pk
    assert first.study.images.count() == 2


def test_an_accession_of_another_patient_is_refused(radiologist):
    services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="M1", accession_number="A1"
    )
    with pytest.raises(UploadRejected) as exc:
        services.study_upload(
            uploaded_by=radiologist,
            data=imagegen.png_bytes(),
            patient_id="M2",
            accession_number="A1",
        )
    assert exc.value.code == "accession_conflict"
    assert not Patient.objects.filter(mrn="M2").exists()


def test_the_same_file_twice_is_flagged_as_a_duplicate_and_stored_once(radiologist, settings):
    data = imagegen.png_bytes()
    first = services.study_upload(uploaded_by=radiologist, data=data, patient_id="M1")
    second = services.study_upload(uploaded_by=radiologist, data=data, patient_id="M1")
    assert second.image.duplicate_of == first.image
    assert second.image.original.name == first.image.original.name
    assert len(_files_under(settings.MEDIA_ROOT)) == 1  # an 8-bit grayscale PNG: its own display


@pytest.mark.parametrize(
    ("make", "own_display"),
    [
        (lambda: imagegen.png_bytes(), True),  # 8-bit grayscale
        (lambda: imagegen.png_bytes(imagegen.make_xray(mode="RGB")), False),
        (lambda: imagegen.jpeg_bytes(), True),  # 8-bit grayscale
        (lambda: imagegen.jpeg_bytes(exif_orientation=1), True),  # "as stored"
        (lambda: imagegen.jpeg_bytes(exif_orientation=6), False),  # turned on upload
        (lambda: imagegen.jpeg_bytes(imagegen.make_xray(mode="RGB")), False),
        (lambda: _with_icc_profile(imagegen.make_xray()), False),
        (lambda: imagegen.png16_bytes(), False),
        (lambda: imagegen.dicom_bytes(), False),
    ],
    ids=[
        "png-8bit-gray",
        "png-rgb",
        "jpeg-gray",
        "jpeg-orientation-1",
        "jpeg-orientation-6",
        "jpeg-rgb",
        "jpeg-icc",
        "png-16bit",
        "dicom",
    ],
)
def test_the_display_copy_is_the_upload_itself_only_when_nothing_would_change(
    radiologist, make, own_display
):
    from PIL import Image as PILImage

    from training.ml.imaging import decode_upload

    data = make()
    result = services.study_upload(uploaded_by=radiologist, data=data, patient_id="DISP")
    image = result.image
    assert (image.display.name == image.original.name) is own_display
    expected = decode_upload(data, max_bytes=10**8, max_pixels=10**8).image
    with PILImage.open(image.display.path) as shown:
        assert shown.format == (image.format if own_display else "PNG") and shown.mode == "L"
        assert np.array_equal(np.asarray(shown), np.asarray(expected))
    assert image.display_content_type == f"image/{shown.format.lower()}"


def _with_icc_profile(img) -> bytes:
    """A grayscale JPEG carrying a colour profile, which a browser would apply."""
    from io import BytesIO

    from PIL import ImageCms

    buf = BytesIO()
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img.save(buf, format="JPEG", icc_profile=profile)
    return buf.getvalue()


def test_promotion_assigns_waiting_predictions_and_queues_them(
    radiologist, model_version, django_capture_on_commit_callbacks, sent_tasks
):
    from training.services import model_version_promote

    sent = _sent_ids(sent_tasks)
    result = services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="M1"
    )
    assert result.prediction.model_version is None
    with django_capture_on_commit_callbacks(execute=True):
        model_version_promote(
            override_reason="test weights", version=model_version, reason="first model"
        )
    result.prediction.refresh_from_db()
    assert result.prediction.model_version == model_version
    assert sent() == [result.prediction.pk]


def test_only_a_failed_prediction_can_be_rerun(radiologist, production_model):
    result = services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="M1"
    )
    with pytest.raises(ValueError):
        services.prediction_rerun(prediction=result.prediction)
    Prediction.objects.filter(pk=result.prediction.pk).update(status="failed", error="x")
    services.prediction_rerun(prediction=result.prediction)
    result.prediction.refresh_from_db()
    assert result.prediction.status == "queued"
    assert result.prediction.error == ""
