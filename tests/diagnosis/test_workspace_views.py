from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cxrweb.audit.models import AuditEvent
from diagnosis import services
from diagnosis.models import Reading
from diagnosis.worker.run import prediction_run
from tests import imagegen


@pytest.fixture
def study(radiologist, production_model):
    result = services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="V-1"
    )
    prediction_run(prediction_id=result.prediction.pk)
    return result.study


def test_viewing_a_study_is_audited_with_who_what_and_where(rad_client, radiologist, study):
    resp = rad_client.get(
        f"/studies/{study.pk}/", REMOTE_ADDR="10.1.2.3", HTTP_USER_AGENT="pytest-browser"
    )
    assert resp.status_code == 200
    event = AuditEvent.objects.filter(action="view_study").get()
    assert (event.user, event.object_type, event.object_id) == (radiologist, "Study", str(study.pk))
    assert event.patient_mrn == "V-1"
    assert event.ip_address == "10.1.2.3"
    assert event.user_agent == "pytest-browser"


def test_a_denied_page_is_a_403_and_is_audited(client, outsider, radiologist, study):
    client.force_login(outsider)
    assert client.get(f"/studies/{study.pk}/").status_code == 403
    assert client.get(f"/images/{study.images.get().pk}/display.png").status_code == 403
    client.force_login(radiologist)
    assert client.get("/audit/").status_code == 403
    assert client.get("/agreement/").status_code == 403
    denied = AuditEvent.objects.filter(action="access_denied")
    assert denied.count() == 4
    assert set(denied.values_list("username", flat=True)) == {"outsider", "rad1"}


def test_signing_a_reading_in_the_browser(rad_client, study):
    prediction = study.images.get().predictions.get()
    resp = rad_client.post(
        f"/studies/{study.pk}/reading/",
        {
            "decision": "override",
            "final_label": "other",
            "notes": "left pneumothorax",
            "prediction_ids": str(prediction.pk),
        },
    )
    assert resp.status_code == 302
    reading = Reading.objects.get()
    assert reading.final_label == "other" and reading.agrees_with_model is False
    assert reading.prediction == prediction
    page = rad_client.get(f"/studies/{study.pk}/").content.decode()
    assert "left pneumothorax" in page and "Sign amendment" in page
    assert AuditEvent.objects.filter(action="reading", object_id=str(reading.pk)).exists()
    bad = rad_client.post(f"/studies/{study.pk}/reading/", {"decision": "override"})
    assert bad.status_code == 400
    assert "Choose the final label" in bad.content.decode()


def test_a_reading_while_the_model_works_offers_its_classes_and_the_form_follows_the_result(
    rad_client, radiologist, production_model
):
    """Opened before the result: the reading can only override, but with the model's classes to
    choose from; the page then fetches the reading section again (its own audit event, not a
    second page view), which now offers to agree."""
    result = services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(seed=3), patient_id="V-WAIT"
    )
    page = rad_client.get(f"/studies/{result.study.pk}/").content.decode()
    assert "Read without a model result" in page and "data-awaits-result" in page
    for label in production_model.class_labels:
        assert f'<option value="{label}">' in page
    prediction_run(prediction_id=result.prediction.pk)
    views_before = AuditEvent.objects.filter(action="view_study", detail__view="page").count()
    fragment = rad_client.get(f"/studies/{result.study.pk}/reading-form/")
    assert fragment.status_code == 200 and fragment["Cache-Control"] == "no-store"
    html = fragment.content.decode()
    assert "Agree with the model" in html and "data-awaits-result" not in html
    assert (
        AuditEvent.objects.filter(action="view_study", detail__view="page").count() == views_before
    )
    assert AuditEvent.objects.filter(action="view_study", detail__view="reading").count() == 1
    # A reading signed from the waiting form did not see the result that arrived since: it is
    # refused (nothing stored) and the page shows the result to review, its form bound to it.
    label = production_model.class_labels[0]
    resp = rad_client.post(
        f"/studies/{result.study.pk}/reading/",
        {"decision": "override", "final_label": label, "prediction_ids": ""},
    )
    assert resp.status_code == 409 and not Reading.objects.exists()
    html = resp.content.decode()
    assert "Review the current result" in html
    assert f'name="prediction_ids" value="{result.prediction.pk}"' in html
    resp = rad_client.post(
        f"/studies/{result.study.pk}/reading/",
        {"decision": "override", "final_label": label, "prediction_ids": str(result.prediction.pk)},
    )
    assert resp.status_code == 302 and Reading.objects.get().final_label == label


def test_the_report_prints_and_downloads_as_pdf(rad_client, study, radiologist):
    services.reading_sign(
        study=study, radiologist=radiologist, final_label="", agrees=True, notes="reviewed"
    )
    html = rad_client.get(f"/studies/{study.pk}/report/").content.decode()
    assert "V-1" in html and "do not replace" in html and "reviewed" in html
    pdf = rad_client.get(f"/studies/{study.pk}/report.pdf")
    assert pdf["Content-Type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF") and len(pdf.content) > 5000
    assert AuditEvent.objects.filter(action="download", detail__file="report.pdf").exists()


def test_the_pdf_report_shows_a_jpeg_that_is_its_own_display_copy(rad_client, radiologist):
    result = services.study_upload(
        uploaded_by=radiologist, data=imagegen.jpeg_bytes(), patient_id="J-1"
    )
    assert result.image.display.name == result.image.original.name
    pdf = rad_client.get(f"/studies/{result.study.pk}/report.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert b"/DCTDecode" in pdf.content  # the JPEG itself, embedded


def test_admins_filter_and_export_the_audit_trail(client, admin_user, study, rad_client):
    rad_client.get(f"/studies/{study.pk}/")
    client.force_login(admin_user)
    page = client.get("/audit/?action=view_study&patient=V-1")
    assert page.status_code == 200
    assert "Viewed a study" in page.content.decode()
    export = client.get("/audit/?action=view_study&format=csv")
    body = b"".join(export.streaming_content).decode()
    assert body.splitlines()[0].startswith("at,username,action")
    assert ",rad1,view_study," in body
    assert AuditEvent.objects.filter(action="export").exists()


def test_the_audit_trail_has_no_edit_or_delete_in_the_admin(client, admin_user):
    event = AuditEvent.objects.create(action="view_study", username="x")
    client.force_login(admin_user)
    assert client.get("/admin/audit/auditevent/").status_code == 200
    assert (
        client.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert client.get("/admin/audit/auditevent/add/").status_code == 403
    change = client.post(f"/admin/audit/auditevent/{event.pk}/change/", {"username": "y"})
    assert change.status_code == 403
    assert AuditEvent.objects.get(pk=event.pk).username == "x"


def test_the_audit_trails_old_admin_address_leads_to_its_new_one(client, admin_user):
    client.force_login(admin_user)
    resp = client.get("/admin/diagnosis/auditevent/?action=login")
    assert resp.status_code == 302
    assert resp["Location"] == "/admin/audit/auditevent/?action=login"


def test_failed_sign_ins_are_audited_and_locked_out(client, radiologist, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/accounts/login/", {"username": "rad1", "password": "wrong"})
    assert AuditEvent.objects.filter(action="login_failed").count() >= settings.AXES_FAILURE_LIMIT
    resp = client.post(
        "/accounts/login/", {"username": "rad1", "password": "correct horse battery"}
    )
    assert resp.status_code in (403, 429)
    assert "Too many failed sign-ins" in resp.content.decode()


def test_a_dicom_peek_returns_its_tags_without_storing_anything(rad_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from diagnosis.models import Image

    data = imagegen.dicom_bytes(patient_id="PEEK-1", accession="ACC-PEEK")[:2048]
    resp = rad_client.post("/api/v1/dicom/peek/", {"file": SimpleUploadedFile("a.dcm", data)})
    assert resp.status_code == 200
    assert resp.json()["patient_id"] == "PEEK-1"
    assert resp.json()["accession_number"] == "ACC-PEEK"
    assert Image.objects.count() == 0


def test_production_settings_pass_check_deploy():
    env = {
        **os.environ,
        "SECRET_KEY": "x" * 64 + "-production-secret-key-not-for-tests",
        "CXR_HTTPS": "true",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "cxr.hospital.example",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    proc = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_create_user_gives_the_role_and_admins_get_the_admin_site(client, db, monkeypatch):
    from django.contrib.auth.models import User
    from django.core.management import call_command

    monkeypatch.setenv("CXR_NEW_USER_PASSWORD", "a-long-enough-passphrase-42")
    call_command("create_user", "dr-who", "--role", "radiologist")
    call_command("create_user", "ml-admin", "--role", "admin")
    rad, adm = User.objects.get(username="dr-who"), User.objects.get(username="ml-admin")
    assert list(rad.groups.values_list("name", flat=True)) == ["radiologist"]
    assert adm.is_staff and not adm.is_superuser
    client.force_login(adm)
    assert client.get("/admin/auth/user/").status_code == 200
    assert client.get("/admin/training/modelversion/").status_code == 200
    assert client.get("/audit/").status_code == 200
    assert not adm.has_perm("audit.delete_auditevent")
    assert adm.has_perm("audit.view_auditevent")
    client.force_login(rad)
    assert client.get("/admin/", follow=False).status_code == 302  # not staff: to admin login
