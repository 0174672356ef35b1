"""The refused page (403) and the audit trail's readable details and upload channels."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from cxrweb.audit.models import AuditEvent
from tests import imagegen

pytestmark = pytest.mark.django_db


def test_a_user_without_a_role_gets_the_styled_refused_page_with_sign_out(client, outsider):
    client.force_login(outsider)
    resp = client.get("/")
    assert resp.status_code == 403
    html = resp.content.decode()
    assert 'href="/static/css/app.css"' in html  # the app's layout, not a bare "403 Forbidden"
    assert "Access refused" in html
    assert "ask an administrator" in html.lower()
    assert 'action="/accounts/logout/"' in html and "csrfmiddlewaretoken" in html
    # The sign-out button works: it signs the user out.
    client.post("/accounts/logout/")
    assert client.get("/").status_code == 302


def test_an_admin_page_refuses_a_radiologist_with_the_styled_page(rad_client):
    resp = rad_client.get("/audit/")
    assert resp.status_code == 403
    assert "administrators only" in resp.content.decode()
    assert "Sign out" in resp.content.decode()


def test_the_api_still_refuses_in_json(outsider):
    api = APIClient()
    api.force_authenticate(outsider)
    resp = api.get("/api/v1/studies/1/")
    assert resp.status_code == 403
    assert resp["Content-Type"].startswith("application/json")
    assert "error" in resp.json()


def test_the_403_handler_answers_json_under_api(rf, outsider):
    from django.core.exceptions import PermissionDenied

    from cxrweb.responses import permission_denied

    request = rf.get("/api/v1/anything/")
    request.user = outsider
    resp = permission_denied(request, PermissionDenied("No."))
    assert resp.status_code == 403 and resp["Content-Type"] == "application/json"


def _upload(client, **extra):
    return client.post(
        "/api/v1/studies/",
        {
            "image": SimpleUploadedFile("chest.png", imagegen.png_bytes()),
            "patient_id": extra.pop("patient_id", "CHAN-1"),
            **extra,
        },
    )


def test_an_upload_from_the_browser_page_is_logged_as_browser(rad_client):
    # The upload page's script posts each file to the API with the user's session.
    resp = _upload(rad_client, patient_id="CHAN-B")
    assert resp.status_code == 201, resp.content
    event = AuditEvent.objects.get(action=AuditEvent.Action.UPLOAD)
    assert event.detail == {"via": "browser", "format": "PNG"}


def test_an_upload_with_the_upload_form_is_logged_as_browser(rad_client):
    resp = rad_client.post(
        "/studies/upload/",
        {
            "image": SimpleUploadedFile("chest.png", imagegen.png_bytes()),
            "patient_id": "CHAN-F",
            "priority": 0,
        },
    )
    assert resp.status_code == 302, resp.content
    assert AuditEvent.objects.get(action=AuditEvent.Action.UPLOAD).detail["via"] == "browser"


def test_an_upload_with_an_api_token_is_logged_as_api(api_token):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token}")
    resp = api.post(
        "/api/v1/studies/",
        {"image": SimpleUploadedFile("scan.dcm", imagegen.dicom_bytes()), "patient_id": "CHAN-A"},
        format="multipart",
    )
    assert resp.status_code == 201, resp.content
    event = AuditEvent.objects.get(action=AuditEvent.Action.UPLOAD)
    assert event.detail == {"via": "api", "format": "DICOM"}


def test_an_unknown_upload_channel_is_refused(rf):
    from diagnosis.audit import audit_upload

    with pytest.raises(ValueError, match="browser, api, dicom"):
        audit_upload(rf.get("/"), object(), via="fax")


def test_the_audit_page_shows_details_as_escaped_key_value_pairs(client, admin_user):
    AuditEvent.objects.create(
        action=AuditEvent.Action.VIEW_STUDY,
        username="rad1",
        detail={
            "view": "worklist",
            "studies": [3, 4],
            "filters": {"q": "<script>x</script>"},
            "agrees": True,
        },
    )
    client.force_login(admin_user)
    html = client.get("/audit/").content.decode()
    assert "<dt>view</dt><dd>worklist</dd>" in html
    assert "<dt>studies</dt><dd>3, 4</dd>" in html
    assert "<dt>agrees</dt><dd>yes</dd>" in html
    assert "q=&lt;script&gt;x&lt;/script&gt;" in html
    assert "<script>x</script>" not in html
    assert "{&#x27;" not in html and "{'view'" not in html  # no raw Python dict
