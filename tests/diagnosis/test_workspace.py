"""The radiologist's workspace: readings, flags, worklist order, per-class heatmaps, audit."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import DatabaseError, IntegrityError, transaction

from cxrweb.audit.models import AuditEvent
from diagnosis import selectors, services
from diagnosis.models import ClassHeatmap, Prediction, Reading, Study
from diagnosis.worker.heatmaps import class_heatmap_run
from diagnosis.worker.run import prediction_run
from tests import imagegen
from tests.conftest import CLASSES
from training.models import ModelVersion


def _upload(user, mrn: str, **kw):
    return services.study_upload(uploaded_by=user, data=imagegen.png_bytes(), patient_id=mrn, **kw)


def _finish(prediction: Prediction, label: str, p: float) -> Prediction:
    rest = (1 - p) / (len(CLASSES) - 1)
    Prediction.objects.filter(pk=prediction.pk).update(
        status="done",
        label=label,
        cam_class=label,
        probabilities={c: (p if c == label else rest) for c in CLASSES},
    )
    prediction.refresh_from_db()
    services.study_flag_from_prediction(prediction=prediction)
    return prediction


@pytest.fixture
def done(radiologist, production_model):
    result = _upload(radiologist, "W-1")
    return _finish(result.prediction, "covid19", 0.9)


def test_an_abnormal_finding_above_its_threshold_flags_the_study(done):
    study = Study.objects.get(pk=done.image.study_id)
    assert study.flagged_by_model and study.flagged_finding == "covid19"
    assert study.priority == Study.Priority.ROUTINE  # the model never changes the priority


def test_a_normal_finding_or_one_under_the_threshold_does_not_flag(radiologist, production_model):
    production_model.thresholds = {"covid19": 0.95}
    production_model.save()
    a = _finish(_upload(radiologist, "W-2").prediction, "normal", 0.9)
    b = _finish(_upload(radiologist, "W-3").prediction, "covid19", 0.9)
    assert not Study.objects.get(pk=a.image.study_id).flagged_by_model
    assert not Study.objects.get(pk=b.image.study_id).flagged_by_model


def test_the_worklist_puts_unreviewed_flagged_studies_first_then_priority(
    radiologist, production_model
):
    _finish(_upload(radiologist, "R").prediction, "normal", 0.9)
    _finish(_upload(radiologist, "S", priority=Study.Priority.STAT).prediction, "normal", 0.9)
    _finish(_upload(radiologist, "F").prediction, "viral_pneumonia", 0.8)
    read_flagged = _finish(_upload(radiologist, "RF").prediction, "covid19", 0.8)
    services.reading_sign(
        study=read_flagged.image.study, radiologist=radiologist, final_label="covid19", agrees=True
    )
    order = [s.patient.mrn for s in selectors.worklist()]
    assert order == ["F", "S", "R", "RF"]
    assert [s.patient.mrn for s in selectors.worklist(reviewed="no")] == ["F", "S", "R"]
    assert [s.patient.mrn for s in selectors.worklist(finding="flagged")] == ["F", "RF"]
    assert [s.patient.mrn for s in selectors.worklist(status="done", q="RF")] == ["RF"]
    assert list(selectors.worklist(status="failed")) == []
    tomorrow = dt.date.today() + dt.timedelta(days=2)
    assert list(selectors.worklist(date_from=tomorrow)) == []


def test_the_flag_follows_the_current_result_of_the_view(done, production_model):
    """The study shows one result, from each view's current prediction: a later confident normal
    result of the same view (a re-analysis) clears the flag the earlier one raised."""
    study = Study.objects.get(pk=done.image.study_id)
    newer = ModelVersion.objects.create(
        name="v2",
        architecture="mobilenet_v2",
        class_labels=CLASSES,
        weights="models/v2.pt",
        sha256="0",
    )
    again = Prediction.objects.create(
        image=done.image,
        model_version=newer,
        status="done",
        label="normal",
        probabilities={
            "normal": 0.97,
            "bacterial_pneumonia": 0.01,
            "viral_pneumonia": 0.01,
            "covid19": 0.01,
        },
    )
    assert services.study_flag_from_prediction(prediction=again) is False
    study.refresh_from_db()
    assert not study.flagged_by_model and study.result_label == "normal"


def test_signing_agreeing_takes_the_model_label_and_records_the_version(done, radiologist):
    reading = services.reading_sign(
        study=done.image.study,
        radiologist=radiologist,
        final_label="",
        agrees=True,
        notes="ground glass",
    )
    assert reading.final_label == "covid19"
    assert reading.agrees_with_model is True
    assert reading.model_version == done.model_version
    assert reading.prediction == done


def test_an_override_must_use_a_class_of_the_version_or_other_with_notes(done, radiologist):
    with pytest.raises(services.ReadingRejected):
        services.reading_sign(
            study=done.image.study,
            radiologist=radiologist,
            final_label="tuberculosis",
            agrees=False,
        )
    with pytest.raises(services.ReadingRejected):
        services.reading_sign(
            study=done.image.study, radiologist=radiologist, final_label="other", agrees=False
        )
    reading = services.reading_sign(
        study=done.image.study,
        radiologist=radiologist,
        final_label="other",
        agrees=False,
        notes="pneumothorax",
    )
    assert reading.agrees_with_model is False


def test_an_amendment_keeps_the_signed_reading(done, radiologist, second_radiologist):
    first = services.reading_sign(
        study=done.image.study, radiologist=radiologist, final_label="covid19", agrees=True
    )
    with pytest.raises(services.ReadingRejected):
        services.reading_sign(
            study=done.image.study,
            radiologist=second_radiologist,
            final_label="normal",
            agrees=False,
        )
    second = services.reading_sign(
        study=done.image.study,
        radiologist=second_radiologist,
        final_label="normal",
        agrees=False,
        amends=first,
    )
    first.refresh_from_db()
    assert not first.is_current and second.is_current
    assert Reading.objects.filter(study=done.image.study).count() == 2
    with pytest.raises(services.ReadingRejected):
        services.reading_sign(
            study=done.image.study,
            radiologist=radiologist,
            final_label="normal",
            agrees=False,
            amends=first,
        )


def test_signed_readings_and_audit_events_cannot_be_changed_or_deleted(done, radiologist):
    reading = services.reading_sign(
        study=done.image.study, radiologist=radiologist, final_label="covid19", agrees=True
    )
    event = AuditEvent.objects.create(action="view_study", username="x")
    for obj in (reading, event):
        with pytest.raises(ValueError):
            obj.save()
        with pytest.raises(ValueError):
            obj.delete()
        with pytest.raises(ValueError):
            type(obj).objects.filter(pk=obj.pk).update(notes="x") if isinstance(
                obj, Reading
            ) else type(obj).objects.filter(pk=obj.pk).update(username="y")
        with pytest.raises(ValueError):
            type(obj).objects.filter(pk=obj.pk).delete()


def test_the_database_refuses_changes_to_the_audit_trail_on_postgresql(db):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the trigger exists on PostgreSQL only")
    AuditEvent.objects.create(action="view_study", username="x")
    with (
        pytest.raises((DatabaseError, IntegrityError)),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE diagnosis_auditevent SET username = 'forged'")


def test_agreement_is_counted_per_version_on_current_readings(
    radiologist, second_radiologist, production_model
):
    a = _finish(_upload(radiologist, "A1").prediction, "normal", 0.9)
    b = _finish(_upload(radiologist, "A2").prediction, "covid19", 0.9)
    first = services.reading_sign(
        study=a.image.study, radiologist=radiologist, final_label="normal", agrees=True
    )
    services.reading_sign(
        study=a.image.study,
        radiologist=second_radiologist,
        final_label="covid19",
        agrees=False,
        amends=first,
    )
    services.reading_sign(
        study=b.image.study, radiologist=radiologist, final_label="covid19", agrees=True
    )
    [row] = selectors.agreement_by_version()
    assert row["model_version__name"] == production_model.name
    assert (row["readings"], row["agreed"]) == (2, 1)
    assert row["rate"] == pytest.approx(0.5)


def test_a_class_heatmap_is_computed_by_the_worker_service(radiologist, production_model):
    result = _upload(radiologist, "H-1")
    done = prediction_run(prediction_id=result.prediction.pk)
    other = next(c for c in CLASSES if c != done.cam_class)
    heatmap = services.class_heatmap_request(prediction=done, class_label=other)
    assert heatmap.status == ClassHeatmap.Status.QUEUED
    finished = class_heatmap_run(heatmap_id=heatmap.pk)
    assert finished.status == "done" and finished.file.name.endswith(".png")
    assert class_heatmap_run(heatmap_id=heatmap.pk) is None  # idempotent
    again = services.class_heatmap_request(prediction=done, class_label=other)
    assert again.pk == heatmap.pk
    with pytest.raises(ValueError):
        services.class_heatmap_request(prediction=done, class_label="not-a-class")
