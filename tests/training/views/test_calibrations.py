"""The model page's calibrations (training/views/calibrations.py): the table, the Recalibrate
form that queues a training task, activating an older calibration, and who may do it."""

from __future__ import annotations

import pytest

from cxrweb.audit.models import AuditEvent
from tests.training.views.conftest import sent_ids
from training.dispatch import RUN_CALIBRATION
from training.models import ModelCalibration, ModelVersion
from training.services import calibration_activate

pytestmark = pytest.mark.django_db


def _fitted(version: ModelVersion, number: int, **extra) -> ModelCalibration:
    return ModelCalibration.objects.create(
        version=version,
        number=number,
        kind="dataset",
        status="done",
        source="dataset <b>site</b> split all",
        n_images=240,
        target_sensitivity=0.95,
        temperature=1.8,
        thresholds={"normal": 0.4, "covid19": 0.12},
        ood_summary={"threshold": 41.25},
        metrics={"before": {"ece": 0.091}, "after": {"ece": 0.023}},
        **extra,
    )


def test_the_model_page_lists_calibrations_and_marks_the_active_one(admin_client, model_version):
    _fitted(model_version, 2)
    ModelCalibration.objects.create(
        version=model_version,
        number=3,
        kind="readings",
        status="failed",
        source="signed readings of the last 50 studies",
        error="Only 12 usable image(s)",
    )
    html = admin_client.get(f"/training/models/{model_version.pk}/").content.decode()

    for text in (
        "Calibrations",
        "recorded with the imported weights",
        "dataset &lt;b&gt;site&lt;/b&gt; split all",  # escaped
        "1.800",
        'covid19 <span class="num">0.120</span>',
        "41.25",
        "0.091 → 0.023",
        "<strong>Active</strong>",
        "Only 12 usable image(s)",
        f'action="/training/models/{model_version.pk}/calibrations/2/activate/"',
        "Recalibrate on a dataset or on readings",
    ):
        assert text in html, text
    assert "<b>site</b>" not in html
    # Calibration 1 is the active one: no activate button for it.
    assert f"/training/models/{model_version.pk}/calibrations/1/activate/" not in html


def test_the_form_queues_a_calibration_for_a_training_worker(
    admin_client, admin_user, model_version, dataset, sent_tasks, django_capture_on_commit_callbacks
):
    queued = sent_ids(sent_tasks, RUN_CALIBRATION)
    with django_capture_on_commit_callbacks(execute=True):
        resp = admin_client.post(
            f"/training/models/{model_version.pk}/calibrate/",
            {
                "source": "dataset",
                "dataset": dataset.pk,
                "split": "all",
                "target_sensitivity": "0.95",
            },
        )
    assert resp.status_code == 302 and resp["Location"].endswith("#calibrations")
    calibration = ModelCalibration.objects.get(version=model_version, number=2)
    assert queued() == [calibration.pk]
    assert (calibration.status, calibration.split, calibration.target_sensitivity) == (
        "queued",
        "all",
        0.95,
    )
    assert calibration.created_by == admin_user
    page = admin_client.get(f"/training/models/{model_version.pk}/").content.decode()
    assert (
        f'data-poll-url="/training/models/{model_version.pk}/calibrations/" data-poll-ms=' in page
    )


def test_the_form_says_what_is_missing(admin_client, model_version, sent_tasks):
    resp = admin_client.post(
        f"/training/models/{model_version.pk}/calibrate/",
        {"source": "readings", "target_sensitivity": "0.9"},
    )
    assert resp.status_code == 400
    assert "Give how many recent studies to calibrate on." in resp.content.decode()
    resp = admin_client.post(
        f"/training/models/{model_version.pk}/calibrate/",
        {"source": "readings", "readings": "100", "target_sensitivity": "1.5"},
    )
    assert resp.status_code == 400
    assert not sent_tasks and model_version.calibrations.count() == 1


def test_activating_an_older_calibration_makes_it_live_and_is_audited(
    admin_client, admin_user, model_version
):
    second = _fitted(model_version, 2)
    calibration_activate(calibration=second)
    resp = admin_client.post(f"/training/models/{model_version.pk}/calibrations/1/activate/")

    assert resp.status_code == 302
    model_version.refresh_from_db()
    assert model_version.calibration_number == 1 and model_version.temperature == 1.0
    event = AuditEvent.objects.filter(action=AuditEvent.Action.ACTIVATE_CALIBRATION).first()
    assert event.user == admin_user and event.detail["previous"] == 2
    assert event.detail["calibration"] == 1


def test_a_calibration_still_fitting_cannot_be_activated(admin_client, model_version):
    ModelCalibration.objects.create(version=model_version, number=2, kind="dataset")
    admin_client.post(f"/training/models/{model_version.pk}/calibrations/2/activate/", follow=True)
    model_version.refresh_from_db()
    assert model_version.calibration_number == 1


def test_only_model_admins_may_recalibrate(client, rad_client, model_version, sent_tasks):
    url = f"/training/models/{model_version.pk}/calibrate/"
    data = {"source": "readings", "readings": "10", "target_sensitivity": "0.9"}
    assert rad_client.post(url, data).status_code == 403
    assert (
        rad_client.post(f"/training/models/{model_version.pk}/calibrations/1/activate/").status_code
        == 403
    )
    assert client.post(url, data).status_code in (302, 403)
    assert not sent_tasks and model_version.calibrations.count() == 1
