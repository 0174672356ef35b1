"""A prediction unlike the training data (out-of-distribution): the study's result is unreliable,
needs attention, is never shown as a confident normal, on every surface (worklist, study page,
reading, report, PDF, API)."""

from __future__ import annotations

import datetime as dt
import io
import math
import re
from types import SimpleNamespace

import pytest
from rest_framework.test import APIClient

from diagnosis import results, selectors
from diagnosis.models import Prediction, Study
from diagnosis.results import UNRELIABLE_LABEL
from diagnosis.worker.finish import ood_fields
from tests.diagnosis.conftest import fail_prediction as _fail
from tests.diagnosis.conftest import finish_prediction as _finish
from tests.diagnosis.conftest import upload_view as _image

OOD_SCORE = {
    "score": 41.2,
    "threshold": 18.0,
    "flagged": True,
    "reasons": ["unlike the training data (score 41.2 > 18.0)"],
}
OOD_PHOTO = {
    "score": None,
    "threshold": None,
    "flagged": True,
    "reasons": ["a colour photograph, not a radiograph"],
}
IN_DISTRIBUTION = {"score": 3.5, "threshold": 18.0, "flagged": False, "reasons": []}
CONFIDENT_NORMAL = {"NORMAL": 0.97, "PNEUMONIA": 0.03}


# ---- the rule, plain Python ---------------------------------------------------------------------
class _Version:
    name = "v"
    class_labels = ["NORMAL", "PNEUMONIA"]

    def is_normal_label(self, label: str) -> bool:
        return label == "NORMAL"

    def threshold_for(self, label: str) -> float:
        return 0.5


def _p(pk, image_id, probabilities, *, status="done", ood=None, at=None):
    fields = ood_fields(ood)
    return SimpleNamespace(
        pk=pk,
        image_id=image_id,
        status=status,
        probabilities=probabilities,
        label=max(probabilities, key=probabilities.get) if probabilities else "",
        queued_at=at or dt.datetime(2026, 1, 1),
        model_version=_Version(),
        **fields,
    )


def test_an_ood_normal_is_unreliable_needs_attention_and_is_not_shown_as_normal():
    result = results.study_result([_p(1, 1, CONFIDENT_NORMAL, ood=OOD_SCORE)])
    assert result.label == "NORMAL"  # what the model said, kept for the record
    assert result.unreliable and result.needs_attention
    assert result.shown_label == UNRELIABLE_LABEL
    assert result.unreliable_reasons == OOD_SCORE["reasons"]
    body = result.as_dict()
    assert body["unreliable"] is True and body["needs_attention"] is True
    assert body["shown_label"] == UNRELIABLE_LABEL


def test_an_ood_abnormal_keeps_its_flag_and_label_but_is_unreliable():
    result = results.study_result([_p(1, 1, {"NORMAL": 0.1, "PNEUMONIA": 0.9}, ood=OOD_PHOTO)])
    assert result.flagged and result.label == "PNEUMONIA" and result.shown_label == "PNEUMONIA"
    assert result.unreliable and result.needs_attention


def test_an_in_distribution_result_is_reliable():
    result = results.study_result([_p(1, 1, CONFIDENT_NORMAL, ood=IN_DISTRIBUTION)])
    assert not result.unreliable and not result.needs_attention
    assert result.shown_label == "NORMAL"


def test_one_ood_view_makes_the_study_unreliable_and_reasons_come_once():
    result = results.study_result(
        [
            _p(1, 1, CONFIDENT_NORMAL, ood=OOD_PHOTO),
            _p(2, 2, CONFIDENT_NORMAL),
            _p(3, 3, CONFIDENT_NORMAL, ood=OOD_PHOTO),
        ]
    )
    assert result.unreliable and result.shown_label == UNRELIABLE_LABEL
    assert result.unreliable_reasons == OOD_PHOTO["reasons"]
    assert [p.pk for p in result.unreliable_predictions] == [1, 3]


def test_only_the_current_prediction_of_a_view_counts():
    old = _p(1, 1, CONFIDENT_NORMAL, ood=OOD_SCORE, at=dt.datetime(2026, 1, 1))
    new = _p(2, 1, CONFIDENT_NORMAL, ood=IN_DISTRIBUTION, at=dt.datetime(2026, 1, 2))
    assert not results.study_result([old, new]).unreliable
    notice = results.reanalysis_notice([old, new])
    assert notice.previous_label == UNRELIABLE_LABEL  # what the study said before: not NORMAL


def test_one_images_shown_label():
    assert results.prediction_shown_label(_p(1, 1, CONFIDENT_NORMAL, ood=OOD_SCORE)) == (
        UNRELIABLE_LABEL
    )
    assert results.prediction_shown_label(_p(1, 1, CONFIDENT_NORMAL)) == "NORMAL"
    abnormal = _p(1, 1, {"NORMAL": 0.2, "PNEUMONIA": 0.8}, ood=OOD_SCORE)
    assert results.prediction_shown_label(abnormal) == "PNEUMONIA"


def test_the_worker_stores_what_json_and_the_database_can_hold():
    assert ood_fields(None) == {
        "ood_score": None,
        "ood_threshold": None,
        "ood_flagged": False,
        "ood_reasons": [],
    }
    stored = ood_fields({"score": math.inf, "threshold": 18.0, "flagged": True, "reasons": ["x"]})
    assert stored["ood_score"] is None and stored["ood_flagged"] is True
    assert ood_fields({"score": math.nan, "threshold": 2})["ood_score"] is None


# ---- stored, sorted and shown -------------------------------------------------------------------
@pytest.fixture
def ood_normal(radiologist, pneumonia_model) -> Study:
    """A confident NORMAL on an image unlike the training data."""
    upload = _image(radiologist, "OOD-1", "ACC-OOD-1", seed=31)
    _finish(upload.prediction, pneumonia_model, CONFIDENT_NORMAL, ood=OOD_SCORE)
    return Study.objects.get(pk=upload.study.pk)


def test_the_study_stores_the_shown_label_so_a_normal_filter_never_lists_it(
    ood_normal, radiologist, pneumonia_model, rad_client
):
    assert ood_normal.result_label == UNRELIABLE_LABEL and not ood_normal.flagged_by_model
    plain = _image(radiologist, "OOD-2", "ACC-OOD-2", seed=32)
    _finish(plain.prediction, pneumonia_model, CONFIDENT_NORMAL, ood=IN_DISTRIBUTION)
    assert [s.pk for s in selectors.worklist(finding="NORMAL")] == [plain.study.pk]
    assert [s.pk for s in selectors.worklist(finding="unreliable")] == [ood_normal.pk]
    assert list(selectors.worklist(status="failed")) == []  # unreliable is not failed
    page = rad_client.get("/", {"finding": "unreliable"}).content.decode()
    assert "ACC-OOD-1" in page and "ACC-OOD-2" not in page


def test_the_worklist_reads_unreliable_with_the_failed_before_the_flagged(
    radiologist, pneumonia_model
):
    def study(n, probabilities=None, ood=None, failed=False, **kw):
        upload = _image(radiologist, f"WL-{n}", f"ACC-WL-{n}", seed=40 + n, **kw)
        if failed:
            _fail(upload.prediction, pneumonia_model)
        else:
            _finish(upload.prediction, pneumonia_model, probabilities, ood=ood)
        return upload.study.pk

    flagged_stat = study(1, {"NORMAL": 0.1, "PNEUMONIA": 0.9}, priority=Study.Priority.STAT)
    plain = study(2, CONFIDENT_NORMAL)
    unreliable = study(3, CONFIDENT_NORMAL, OOD_PHOTO)
    failed = study(4, failed=True)
    unreliable_stat = study(5, CONFIDENT_NORMAL, OOD_SCORE, priority=Study.Priority.STAT)
    order = [s.pk for s in selectors.worklist()]
    # Needs attention (failed or unreliable) first, by priority then waiting time.
    assert order == [unreliable_stat, unreliable, failed, flagged_stat, plain]


def test_the_study_page_warns_and_never_says_normal(ood_normal, rad_client):
    page = rad_client.get(f"/studies/{ood_normal.pk}/").content.decode()
    assert "data-ood-warning" in page
    assert "Unlike the training data — result unreliable" in page
    assert "41.2" in page and "18.0" in page  # score against threshold
    assert "unlike the training data (score 41.2 &gt; 18.0)" in page.lower()
    assert f"Model result: <strong data-study-label>{UNRELIABLE_LABEL}</strong>" in page
    assert "<strong data-study-label>NORMAL</strong>" not in page
    assert f"This image: <strong>{UNRELIABLE_LABEL}</strong>" in page
    assert "This image: <strong>NORMAL</strong>" not in page
    assert "data-probs-unreliable" in page  # the probabilities stay, greyed
    assert f"the model says <strong data-shown-label>{UNRELIABLE_LABEL}</strong>" in page
    worklist = rad_client.get("/").content.decode()
    row = re.search(rf'<tr[^>]*data-study-id="{ood_normal.pk}".*?</tr>', worklist, re.S).group(0)
    assert "row-attention" in row and "data-ood-badge" in row
    assert f'<span data-study-label class="unreliable-label">{UNRELIABLE_LABEL}</span>' in row
    assert ">NORMAL<" not in row


def test_the_report_and_pdf_say_unreliable_not_normal(ood_normal, rad_client):
    html = rad_client.get(f"/studies/{ood_normal.pk}/report/").content.decode()
    assert "Unlike the training data — result unreliable" in html
    assert f"Model result: {UNRELIABLE_LABEL}" in html
    assert "Model result: NORMAL" not in html and "<strong>NORMAL</strong>" not in html

    from pypdf import PdfReader

    pdf = rad_client.get(f"/studies/{ood_normal.pk}/report.pdf").content
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    text = re.sub(r"\s+", " ", text)
    assert "Unlike the training data — result unreliable" in text
    assert "Score 41.2, threshold 18.0." in text
    assert f"Model result: {UNRELIABLE_LABEL}" in text
    assert f"This image: {UNRELIABLE_LABEL}" in text
    assert "Model result: NORMAL" not in text and "This image: NORMAL" not in text


def test_the_pdf_escapes_the_reasons(radiologist, pneumonia_model, rad_client):
    upload = _image(radiologist, "OOD-3", "ACC-OOD-3", seed=33)
    hostile = {**OOD_PHOTO, "reasons": ['<img src="/etc/passwd"/> & <b>x</b>']}
    _finish(upload.prediction, pneumonia_model, CONFIDENT_NORMAL, ood=hostile)
    response = rad_client.get(f"/studies/{upload.study.pk}/report.pdf")
    assert response.status_code == 200

    from pypdf import PdfReader

    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(response.content)).pages)
    assert '<img src="/etc/passwd"/> & <b>x</b>' in re.sub(r"\s+", " ", text)
    page = rad_client.get(f"/studies/{upload.study.pk}/").content.decode()
    assert '<img src="/etc/passwd"/>' not in page and "&lt;img src=" in page


def test_the_api_gives_each_prediction_its_ood_and_the_study_its_reliability(ood_normal, api_token):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token}")
    body = api.get(f"/api/v1/studies/{ood_normal.pk}/").json()
    (prediction,) = body["predictions"]
    assert prediction["ood"] == {**OOD_SCORE, "checked": True, "note": None}
    assert body["result"]["unreliable"] is True and body["result"]["needs_attention"] is True
    assert body["result"]["shown_label"] == UNRELIABLE_LABEL
    assert body["result"]["unreliable_reasons"] == OOD_SCORE["reasons"]
    assert body["result"]["label"] == "NORMAL"  # the model's top class, for the record
    alone = api.get(f"/api/v1/predictions/{prediction['id']}/").json()
    assert alone["ood"] == {**OOD_SCORE, "checked": True, "note": None}


def test_a_prediction_without_ood_has_an_empty_ood_in_the_api(
    radiologist, pneumonia_model, api_token
):
    upload = _image(radiologist, "OOD-4", "ACC-OOD-4", seed=34)
    _finish(upload.prediction, pneumonia_model, CONFIDENT_NORMAL)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token}")
    body = api.get(f"/api/v1/predictions/{upload.prediction.pk}/").json()
    assert body["ood"] == {
        "score": None,
        "threshold": None,
        "flagged": False,
        "reasons": [],
        "checked": False,  # the version has no OOD reference: tests/diagnosis/test_no_ood_check.py
        "note": results.NO_OOD_CHECK,
    }
    study = api.get(f"/api/v1/studies/{upload.study.pk}/").json()
    assert study["result"]["unreliable"] is False and study["result"]["needs_attention"] is False
    assert study["result"]["shown_label"] == "NORMAL"


def test_the_schema_documents_ood(rad_client):
    schema = rad_client.get("/api/v1/schema/?format=json").json()
    parts = schema["components"]["schemas"]
    prediction = parts["Prediction"]["properties"]
    assert "ood" in prediction
    ood = parts[prediction["ood"]["$ref"].rsplit("/", 1)[1]]["properties"]
    assert set(ood) == {"score", "threshold", "flagged", "reasons", "checked", "note"}
    result = parts["StudyResult"]["properties"]
    assert {"unreliable", "needs_attention", "shown_label", "unreliable_reasons"} <= set(result)


def test_the_worker_writes_the_ood_result_on_the_row(radiologist, pneumonia_model):
    """prediction_finish, as the worker calls it with a computed outcome."""
    from django.utils import timezone

    from diagnosis.worker.finish import prediction_finish

    upload = _image(radiologist, "OOD-5", "ACC-OOD-5", seed=35)
    started = timezone.now()
    Prediction.objects.filter(pk=upload.prediction.pk).update(
        model_version=pneumonia_model, status="running", started_at=started
    )
    prediction = Prediction.objects.get(pk=upload.prediction.pk)
    outcome = {
        "probabilities": CONFIDENT_NORMAL,
        "label": "NORMAL",
        "cam_class": "NORMAL",
        "heatmap": b"\x89PNG",
        "overlay": b"\x89PNG",
        "device": "cpu",
        "compute_ms": 1.0,
        "ood": OOD_PHOTO,
    }
    assert prediction_finish(prediction, outcome) is not None
    stored = Prediction.objects.get(pk=prediction.pk)
    assert stored.ood_flagged and stored.ood_reasons == OOD_PHOTO["reasons"]
    assert stored.ood_score is None and stored.ood_threshold is None
    assert Study.objects.get(pk=upload.study.pk).result_label == UNRELIABLE_LABEL
