"""No one-click "agree" on an unreliable result (a view unlike the training data): the label
agreeing would sign is one the radiologist was not shown (an unreliable normal) or not one to
trust, so the service, the study page's form and the API all make the final label a choice."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from cxrweb.audit.models import AuditEvent
from diagnosis import services
from diagnosis.models import Reading, Study
from diagnosis.results import UNRELIABLE_LABEL
from tests.diagnosis.conftest import finish_prediction as _finish
from tests.diagnosis.conftest import upload_view as _image

OOD = {
    "score": 41.2,
    "threshold": 18.0,
    "flagged": True,
    "reasons": ["unlike the training data (score 41.2 > 18.0)"],
}
CONFIDENT_NORMAL = {"NORMAL": 0.97, "PNEUMONIA": 0.03}


@pytest.fixture
def ood_normal(radiologist, pneumonia_model) -> Study:
    """A confident NORMAL on an image unlike the training data: shown as unreliable."""
    upload = _image(radiologist, "UR-1", "ACC-UR-1", seed=81)
    _finish(upload.prediction, pneumonia_model, CONFIDENT_NORMAL, ood=OOD)
    return Study.objects.get(pk=upload.study.pk)


def _ids(study: Study) -> list[int]:
    return list(study.images.values_list("predictions__pk", flat=True))


# ---- the service --------------------------------------------------------------------------------
def test_the_service_refuses_agree_on_an_unreliable_result(ood_normal, radiologist):
    with pytest.raises(services.ReadingAgreeRefused, match="nothing to agree with") as caught:
        services.reading_sign(
            study=ood_normal, radiologist=radiologist, final_label="", agrees=True
        )
    assert caught.value.code == "unreliable_result"
    # Nor does a label sent with "agree" slip through: agree is refused as such.
    with pytest.raises(services.ReadingAgreeRefused):
        services.reading_sign(
            study=ood_normal, radiologist=radiologist, final_label="NORMAL", agrees=True
        )
    assert not Reading.objects.exists()


def test_the_service_signs_a_label_chosen_on_an_unreliable_result(ood_normal, radiologist):
    reading = services.reading_sign(
        study=ood_normal,
        radiologist=radiologist,
        final_label="PNEUMONIA",
        agrees=False,
        prediction_ids=_ids(ood_normal),
    )
    assert reading.final_label == "PNEUMONIA" and reading.agrees_with_model is False


def test_the_service_still_agrees_on_a_reliable_result(radiologist, pneumonia_model):
    upload = _image(radiologist, "UR-2", "ACC-UR-2", seed=82)
    _finish(upload.prediction, pneumonia_model, CONFIDENT_NORMAL)
    reading = services.reading_sign(
        study=upload.study, radiologist=radiologist, final_label="", agrees=True
    )
    assert reading.final_label == "NORMAL" and reading.agrees_with_model is True


# ---- the study page -----------------------------------------------------------------------------
def test_the_reading_form_offers_no_agree_on_an_unreliable_result(ood_normal, rad_client):
    page = rad_client.get(f"/studies/{ood_normal.pk}/").content.decode()
    assert 'value="agree"' not in page and "Agree with the model" not in page
    assert "data-agree-withheld" in page
    assert '<input type="hidden" name="decision" value="override">' in page
    assert "is what agreeing signs" not in page and "NORMAL)" not in page
    assert f"the model says <strong data-shown-label>{UNRELIABLE_LABEL}</strong>" in page


def test_a_posted_agree_on_an_unreliable_result_is_refused_with_a_clear_message(
    ood_normal, rad_client
):
    response = rad_client.post(
        f"/studies/{ood_normal.pk}/reading/",
        {
            "decision": "agree",
            "final_label": "",
            "prediction_ids": ",".join(str(i) for i in _ids(ood_normal)),
        },
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "is unreliable (unlike its training data), so there is nothing to agree with" in page
    assert not Reading.objects.exists()
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.READING).exists()


def test_a_chosen_label_on_an_unreliable_result_is_signed_from_the_page(
    ood_normal, rad_client, radiologist
):
    response = rad_client.post(
        f"/studies/{ood_normal.pk}/reading/",
        {
            "decision": "override",
            "final_label": "NORMAL",
            "prediction_ids": ",".join(str(i) for i in _ids(ood_normal)),
        },
    )
    assert response.status_code == 302
    reading = Reading.objects.get()
    assert reading.final_label == "NORMAL" and reading.radiologist == radiologist


def test_the_form_without_a_label_asks_for_one(ood_normal, rad_client):
    response = rad_client.post(
        f"/studies/{ood_normal.pk}/reading/",
        {"decision": "override", "prediction_ids": ",".join(str(i) for i in _ids(ood_normal))},
    )
    assert response.status_code == 400
    assert "Choose the final label." in response.content.decode()
    assert not Reading.objects.exists()


# ---- the API ------------------------------------------------------------------------------------
@pytest.fixture
def api(api_token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token}")
    return client


def test_the_api_refuses_agree_on_an_unreliable_result_and_says_why(ood_normal, api):
    result = api.get(f"/api/v1/studies/{ood_normal.pk}/").json()["result"]
    assert result["unreliable"] is True
    url = f"/api/v1/studies/{ood_normal.pk}/readings/"
    response = api.post(
        url, {"agree": True, "prediction_ids": result["prediction_ids"]}, format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "unreliable_result"
    assert "unreliable" in body["error"] and "choose the final label" in body["error"]
    assert not Reading.objects.exists()
    response = api.post(
        url,
        {"agree": False, "label": "PNEUMONIA", "prediction_ids": result["prediction_ids"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["label"] == "PNEUMONIA" and response.json()["agree"] is False
