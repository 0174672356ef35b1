from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from diagnosis import services
from diagnosis.models import Study
from tests import imagegen


def test_pages_require_sign_in(client, db):
    resp = client.get("/")
    assert resp.status_code == 302
    assert "/accounts/login/" in resp["Location"]


def test_a_user_without_a_role_is_refused(client, outsider):
    client.force_login(outsider)
    assert client.get("/").status_code == 403
    assert client.get("/studies/upload/").status_code == 403


def test_the_upload_form_stores_a_study_and_redirects_to_it(rad_client):
    resp = rad_client.post(
        "/studies/upload/",
        {
            "image": SimpleUploadedFile("c.jpg", imagegen.jpeg_bytes()),
            "patient_id": "WEB-1",
            "priority": "1",
        },
    )
    study = Study.objects.get()
    assert resp.status_code == 302
    assert resp["Location"] == f"/studies/{study.pk}/"
    assert study.priority == Study.Priority.URGENT
    page = rad_client.get(resp["Location"])
    assert page.status_code == 200
    html = page.content.decode()
    assert "WEB-1" in html
    assert "waiting for model" in html
    assert "does not replace, a radiologist" in html


@pytest.mark.parametrize(
    "make, fragment",
    [
        (imagegen.text_named_png, "PNG, JPEG"),
        (imagegen.truncated_png, "truncated"),
        (imagegen.bomb_png, "pixels"),
    ],
)
def test_the_upload_form_shows_the_error_and_stores_nothing(rad_client, make, fragment):
    resp = rad_client.post(
        "/studies/upload/",
        {
            "image": SimpleUploadedFile("x.png", make()),
            "patient_id": "WEB-BAD",
        },
    )
    assert resp.status_code == 400
    assert fragment.lower() in resp.content.decode().lower()
    assert Study.objects.count() == 0


def test_the_upload_form_rejects_an_empty_file(rad_client):
    resp = rad_client.post(
        "/studies/upload/",
        {
            "image": SimpleUploadedFile("x.png", b""),
            "patient_id": "WEB-E",
        },
    )
    assert resp.status_code == 400
    assert "empty" in resp.content.decode().lower()


def test_images_are_served_only_to_clinical_users(client, radiologist, outsider):
    result = services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="M"
    )
    url = f"/images/{result.image.pk}/display.png"
    assert client.get(url).status_code == 302  # anonymous: to the sign-in page
    client.force_login(outsider)
    assert client.get(url).status_code == 403
    client.force_login(radiologist)
    resp = client.get(url)
    assert resp.status_code == 200
    assert resp["Content-Type"] == "image/png"
    assert b"".join(resp.streaming_content).startswith(b"\x89PNG")


def test_a_grayscale_jpeg_is_shown_as_the_jpeg_it_is(rad_client, radiologist):
    data = imagegen.jpeg_bytes()
    result = services.study_upload(uploaded_by=radiologist, data=data, patient_id="J")
    resp = rad_client.get(f"/images/{result.image.pk}/display.png")
    assert resp.status_code == 200
    assert resp["Content-Type"] == "image/jpeg"
    assert b"".join(resp.streaming_content) == data


def test_worklist_lists_studies_and_searches(rad_client, radiologist):
    services.study_upload(uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="FIND-ME")
    services.study_upload(uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="OTHER")
    html = rad_client.get("/?q=find").content.decode()
    assert "FIND-ME" in html
    assert "OTHER" not in html
