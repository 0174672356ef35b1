from __future__ import annotations

import io
import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage
from rest_framework.test import APIClient

from diagnosis.models import Image, Prediction, Study
from tests import imagegen


@pytest.fixture
def api(api_token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token}")
    return client


# The JSON fields that link a done prediction's pictures -> the path each links to. The last two
# are v1's deprecated names: "heatmap_url" links the overlay, "cam_url" the heatmap layer.
FILE_URL_FIELDS = {
    "overlay_url": "overlay.png",
    "heatmap_layer_url": "heatmap-layer.png",
    "heatmap_url": "heatmap.png",
    "cam_url": "cam.png",
}
# v1's URLs, kept as deprecated aliases -> the canonical URL each answers as.
ALIASES = {"heatmap.png": "overlay.png", "cam.png": "heatmap-layer.png"}


def _post(api, data: bytes, name: str = "chest.png", **fields):
    return api.post(
        "/api/v1/studies/", {"image": SimpleUploadedFile(name, data), **fields}, format="multipart"
    )


def test_upload_returns_201_with_the_study_and_its_prediction(api, production_model):
    resp = _post(
        api, imagegen.png_bytes(), patient_id="API-1", accession_number="ACC-API-1", view="PA"
    )
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert body["id"] == Study.objects.get().pk
    assert body["accession_number"] == "ACC-API-1"
    assert body["view"] == "PA"
    [prediction] = body["predictions"]
    assert prediction["status"] == "queued"
    assert prediction["model_version"] == production_model.name
    assert prediction["url"].endswith(f"/api/v1/predictions/{prediction['id']}/")
    assert [prediction[k] for k in FILE_URL_FIELDS] == [None] * 4  # until it is done


def test_prediction_detail_reports_a_waiting_prediction(api):
    resp = _post(api, imagegen.png_bytes(), patient_id="API-2")
    pid = resp.json()["predictions"][0]["id"]
    detail = api.get(f"/api/v1/predictions/{pid}/").json()
    assert detail["status"] == "queued"
    assert detail["model_version"] is None
    assert "no model version is in production" in detail["message"]
    assert detail["probabilities"] is None


@pytest.mark.parametrize(
    "make, name, fragment",
    [
        (imagegen.text_named_png, "fake.png", "PNG, JPEG"),
        (imagegen.truncated_png, "cut.png", "truncated"),
        (imagegen.truncated_jpeg, "cut.jpg", "truncated"),
        (imagegen.bomb_png, "bomb.png", "pixels"),
        (lambda: imagegen.dicom_bytes(with_pixels=False), "sr.dcm", "pixel data"),
    ],
)
def test_bad_input_gets_a_400_with_an_error_and_stores_nothing(api, settings, make, name, fragment):
    resp = _post(api, make(), name=name, patient_id="API-BAD")
    assert resp.status_code == 400, resp.content
    assert fragment.lower() in resp.json()["error"].lower()
    assert (Study.objects.count(), Image.objects.count(), Prediction.objects.count()) == (0, 0, 0)
    assert not any(files for _, _, files in os.walk(settings.MEDIA_ROOT))


def test_an_empty_file_gets_a_400(api):
    resp = _post(api, b"", name="empty.png", patient_id="API-E")
    assert resp.status_code == 400
    assert "empty" in resp.json()["error"].lower()


def test_a_file_over_the_limit_gets_a_400_naming_the_limit(api, settings):
    settings.CXR_MAX_UPLOAD_BYTES = 2048
    resp = _post(api, imagegen.png_bytes(imagegen.make_xray(512, 512)), patient_id="API-L")
    assert resp.status_code == 400
    assert "limit" in resp.json()["error"]
    assert Study.objects.count() == 0


def test_a_missing_image_gets_a_400(api):
    resp = api.post("/api/v1/studies/", {"patient_id": "X"}, format="multipart")
    assert resp.status_code == 400
    assert "image" in resp.json()["error"].lower()


def test_a_missing_patient_id_gets_a_400(api):
    resp = _post(api, imagegen.png_bytes())
    assert resp.status_code == 400
    assert "patient id" in resp.json()["error"].lower()


def test_the_api_refuses_requests_without_a_token(db):
    resp = APIClient().post("/api/v1/studies/", {}, format="multipart")
    assert resp.status_code == 401
    assert "error" in resp.json()


def test_the_api_refuses_a_user_without_a_clinical_role(outsider):
    from cxrweb.apitokens.models import ApiToken

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.objects.create(user=outsider)[1]}")
    resp = _post(client, imagegen.png_bytes(), patient_id="X")
    assert resp.status_code == 403
    assert Study.objects.count() == 0


def test_an_unknown_prediction_is_a_404(api):
    resp = api.get("/api/v1/predictions/999999/")
    assert resp.status_code == 404
    assert "error" in resp.json()


def test_an_oversized_request_is_refused_before_its_body_is_read(api, settings):
    settings.CXR_MAX_UPLOAD_BYTES = 1024
    big = imagegen.png_bytes() + b"\0" * (2 * 1024 * 1024)  # trailing bytes: never decoded
    resp = _post(api, big, patient_id="API-HUGE")
    assert resp.status_code == 413
    assert resp.json()["code"] == "too_large"
    assert Study.objects.count() == 0


def test_form_errors_carry_a_machine_code(api):
    resp = _post(api, b"", name="empty.png", patient_id="X")
    assert resp.json()["code"] == "empty"


def test_a_repeated_poll_costs_three_queries_and_a_new_study_answer_no_re_read(
    api, production_model, django_assert_num_queries
):
    """The API is polled: the token, the user and the roles come in one query, then the row,
    then the look for this user's view of it already in the audit trail (the first poll's)."""
    resp = _post(api, imagegen.png_bytes(), patient_id="API-Q")
    assert resp.status_code == 201
    body = resp.json()
    assert body["patient_id"] == "API-Q" and len(body["images"]) == 1
    assert body["predictions"][0]["study_id"] == body["id"]
    api.get(f"/api/v1/predictions/{body['prediction_id']}/")  # the first view: an audit event
    with django_assert_num_queries(3):
        polled = api.get(f"/api/v1/predictions/{body['prediction_id']}/")
    assert polled.status_code == 200 and polled.json()["status"] == "queued"


def test_a_token_keeps_working_with_the_roles_its_user_has_now(api, radiologist):
    from django.contrib.auth.models import Group

    assert api.get("/api/v1/predictions/999999/").status_code == 404  # allowed in, not found
    radiologist.groups.remove(Group.objects.get(name="radiologist"))
    assert api.get("/api/v1/predictions/999999/").status_code == 403
    radiologist.groups.add(Group.objects.get(name="admin"))
    assert api.get("/api/v1/predictions/999999/").status_code == 404


def test_a_wrong_token_or_a_deactivated_user_is_refused_at_once(api, radiologist):
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    resp = bad.get("/api/v1/predictions/1/")
    assert resp.status_code == 401 and resp.json()["error"] == "Invalid token."
    assert api.get("/api/v1/predictions/999999/").status_code == 404
    radiologist.is_active = False
    radiologist.save(update_fields=["is_active"])
    resp = api.get("/api/v1/predictions/999999/")
    assert resp.status_code == 401 and "inactive" in resp.json()["error"]


def test_an_upload_is_recorded_as_the_token_users(api, radiologist):
    from cxrweb.audit.models import AuditEvent

    resp = _post(api, imagegen.png_bytes(), patient_id="WHO")
    assert resp.status_code == 201
    assert Study.objects.get(pk=resp.json()["id"]).uploaded_by == radiologist
    event = AuditEvent.objects.get(action="upload")
    assert (event.user_id, event.username) == (radiologist.pk, radiologist.username)


def test_an_upload_does_not_read_the_model_versions_metrics(api, production_model):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        resp = _post(api, imagegen.png_bytes(), patient_id="NO-METRICS")
    assert resp.status_code == 201
    prediction = resp.json()["predictions"][0]
    assert (prediction["model_version"], prediction["architecture"]) == (
        production_model.name,
        production_model.architecture,
    )
    version_reads = [q["sql"] for q in queries if 'FROM "training_modelversion"' in q["sql"]]
    assert len(version_reads) == 1
    assert '"metrics"' not in version_reads[0]


def _finished_prediction(api, patient_id: str, *, field: str = "overlay", **values) -> Prediction:
    """An upload through the API whose prediction is then marked done, with a PNG stored in
    `field` (the overlay, or the colour map `heatmap`) and any other `values` set."""
    from django.core.files.base import ContentFile

    resp = _post(api, imagegen.png_bytes(), patient_id=patient_id)
    prediction = Prediction.objects.get(pk=resp.json()["prediction_id"])
    prediction.status = Prediction.Status.DONE
    for name, value in values.items():
        setattr(prediction, name, value)
    getattr(prediction, field).save(f"{field}.png", ContentFile(imagegen.png_bytes()), save=False)
    prediction.save()
    return prediction


def test_polling_a_finished_prediction_reads_neither_metrics_nor_dicom_tags(
    api, production_model, django_assert_num_queries
):
    """Polls and heatmap downloads are the API's most frequent requests: three queries for a
    repeated poll (its third looks for the first poll's audit event), and neither the version's
    metrics (curves, confusion matrices) nor the image's DICOM tags."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    classes = list(production_model.class_labels)
    prediction = _finished_prediction(
        api,
        "POLL-DONE",
        label=classes[-1],
        probabilities={c: 1.0 / len(classes) for c in reversed(classes)},
    )
    api.get(f"/api/v1/predictions/{prediction.pk}/")  # the first view: an audit event
    # A download's count depends on how its audit event is chained: not pinned here.
    for path, count in (
        (f"/api/v1/predictions/{prediction.pk}/", 3),
        (f"/api/v1/predictions/{prediction.pk}/overlay.png", None),
    ):
        with CaptureQueriesContext(connection) as queries:
            got = api.get(path)
        assert got.status_code == 200
        assert count is None or len(queries) == count
        row_read = queries[1]["sql"]
        assert '"diagnosis_prediction"' in row_read
        assert '"metrics"' not in row_read and '"dicom_tags"' not in row_read
    body = api.get(f"/api/v1/predictions/{prediction.pk}/").json()
    assert body["status"] == "done" and body["label"] == classes[-1]
    assert list(body["probabilities"]) == classes  # the version's order, not the stored one
    assert body["study_id"] == Study.objects.get(patient__mrn="POLL-DONE").pk
    assert body["model_version"] == production_model.name


@pytest.mark.parametrize(
    "file_name, field",
    [
        ("overlay.png", "overlay"),
        ("heatmap-layer.png", "heatmap"),
        ("heatmap.png", "overlay"),
        ("cam.png", "heatmap"),  # the deprecated aliases
    ],
)
def test_a_heatmap_downloaded_through_the_api_is_an_audit_event_naming_the_patient(
    api, radiologist, production_model, file_name, field
):
    from cxrweb.audit.models import AuditEvent

    prediction = _finished_prediction(api, "AUDIT-DL", field=field)

    got = api.get(f"/api/v1/predictions/{prediction.pk}/{file_name}")

    assert got.status_code == 200 and b"".join(got.streaming_content).startswith(b"\x89PNG")
    [event] = AuditEvent.objects.filter(action=AuditEvent.Action.DOWNLOAD)
    assert event.username == radiologist.username
    assert event.patient_mrn == "AUDIT-DL"
    assert (event.object_type, event.object_id) == ("Prediction", str(prediction.pk))
    assert event.detail == {"file": file_name, "via": "api", "study": prediction.image.study_id}


def test_a_heatmap_that_is_not_ready_is_a_404_and_not_an_audited_download(api, production_model):
    from cxrweb.audit.models import AuditEvent

    resp = _post(api, imagegen.png_bytes(), patient_id="AUDIT-WAIT")
    for name in FILE_URL_FIELDS.values():
        got = api.get(f"/api/v1/predictions/{resp.json()['prediction_id']}/{name}")
        assert got.status_code == 404 and "no heatmap yet" in got.json()["error"], name
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.DOWNLOAD).exists()


@pytest.fixture
def analysed(radiologist, production_model) -> Prediction:
    """A prediction the model has run: its overlay and heatmap layer as the worker renders them."""
    from diagnosis import services
    from diagnosis.worker.run import prediction_run

    result = services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="PIX-1"
    )
    prediction = prediction_run(prediction_id=result.prediction.pk)
    assert prediction.status == Prediction.Status.DONE, prediction.error
    return prediction


def _png(response) -> tuple[bytes, PILImage.Image]:
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    data = b"".join(response.streaming_content)
    picture = PILImage.open(io.BytesIO(data))
    picture.load()
    return data, picture


def test_a_done_prediction_links_each_picture_by_its_canonical_and_its_deprecated_name(
    api, analysed
):
    body = api.get(f"/api/v1/predictions/{analysed.pk}/").json()
    for field, name in FILE_URL_FIELDS.items():
        assert body[field] == f"http://testserver/api/v1/predictions/{analysed.pk}/{name}", field


def test_the_overlay_is_the_x_ray_with_the_colour_map_blended_in(api, analysed):
    _, overlay = _png(api.get(f"/api/v1/predictions/{analysed.pk}/overlay.png"))
    with analysed.image.display.open("rb") as fh:
        display_size = PILImage.open(fh).size
    assert overlay.size == display_size
    assert overlay.mode == "RGB"  # opaque: the X-ray itself is in it


def test_the_heatmap_layer_is_the_colour_map_alone_transparent_where_the_model_did_not_look(
    api, analysed
):
    _, layer = _png(api.get(f"/api/v1/predictions/{analysed.pk}/heatmap-layer.png"))
    assert layer.mode == "RGBA"
    alpha = layer.getchannel("A")
    assert alpha.getextrema()[0] < 255  # see-through somewhere: drawn over the X-ray


def test_the_api_and_the_study_page_serve_the_same_file_under_the_same_name(
    api, rad_client, analysed
):
    """One vocabulary: the page's overlay.png and heatmap-layer.png (the layer it draws over the
    X-ray) are the API's files of the same names (v1's heatmap.png is the overlay's alias)."""
    for name in ("overlay.png", "heatmap-layer.png"):
        ours = _png(api.get(f"/api/v1/predictions/{analysed.pk}/{name}"))[0]
        assert ours == _png(rad_client.get(f"/predictions/{analysed.pk}/{name}"))[0]


@pytest.mark.parametrize("alias, canonical", sorted(ALIASES.items()))
def test_a_v1_alias_answers_its_canonical_urls_bytes_and_says_it_is_deprecated(
    api, analysed, alias, canonical
):
    base = f"/api/v1/predictions/{analysed.pk}/"
    got = api.get(base + alias)
    assert _png(got)[0] == _png(api.get(base + canonical))[0]
    assert got["Deprecation"] == "true"
    assert got["Link"] == f'<http://testserver{base}{canonical}>; rel="successor-version"'
    assert "Deprecation" not in api.get(base + canonical)


def test_a_v1_alias_says_it_is_deprecated_on_an_error_too(api, production_model):
    pk = _post(api, imagegen.png_bytes(), patient_id="PIX-2").json()["prediction_id"]
    got = api.get(f"/api/v1/predictions/{pk}/cam.png")
    assert got.status_code == 404 and got["Deprecation"] == "true"
    assert got["Link"].endswith(
        f'/api/v1/predictions/{pk}/heatmap-layer.png>; rel="successor-version"'
    )
