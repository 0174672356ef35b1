"""One result per study (diagnosis.results.study_result), shown the same on every surface, and
triage by thresholds: any abnormal class at or above its operating threshold flags."""

from __future__ import annotations

import io
import re

import pytest
from rest_framework.test import APIClient

from diagnosis import results, selectors
from diagnosis.models import Study
from tests.diagnosis.conftest import fail_prediction as _fail
from tests.diagnosis.conftest import finish_prediction as _finish
from tests.diagnosis.conftest import upload_view as _image
from training.models import ModelVersion


@pytest.fixture
def two_views(radiologist, pneumonia_model) -> dict:
    """The issue's study: image 1 NORMAL 0.59, image 2 PNEUMONIA 0.65, one patient and accession."""
    first = _image(radiologist, "TV-1", "ACC-TV-1", seed=11)
    second = _image(radiologist, "TV-1", "ACC-TV-1", seed=12)
    assert second.study.pk == first.study.pk
    p1 = _finish(first.prediction, pneumonia_model, {"NORMAL": 0.59, "PNEUMONIA": 0.41})
    p2 = _finish(second.prediction, pneumonia_model, {"NORMAL": 0.35, "PNEUMONIA": 0.65})
    return {
        "study": Study.objects.get(pk=first.study.pk),
        "p1": p1,
        "p2": p2,
        "image2": second.image,
    }


def test_two_views_give_one_flagged_result_driven_by_the_abnormal_view(two_views):
    result = selectors.study_result(selectors.study_detail(two_views["study"].pk))
    assert result.status == "done"
    assert result.label == "PNEUMONIA" and result.flagged
    assert result.flagged_classes == ["PNEUMONIA"]
    assert result.probabilities == {"NORMAL": 0.59, "PNEUMONIA": 0.65}  # per class, the max
    assert result.driving_image == two_views["image2"].pk
    assert sorted(result.prediction_ids) == sorted([two_views["p1"].pk, two_views["p2"].pk])
    assert result.model_version == "pneu-v1"
    study = two_views["study"]
    assert study.flagged_by_model and study.flagged_finding == "PNEUMONIA"
    assert study.result_label == "PNEUMONIA"


def test_every_surface_shows_the_one_result(two_views, rad_client, api_token):
    study = two_views["study"]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token}")
    body = api.get(f"/api/v1/studies/{study.pk}/").json()
    assert body["result"]["label"] == "PNEUMONIA" and body["result"]["flagged"] is True
    assert body["result"]["status"] == "done"
    assert body["result"]["flagged_classes"] == ["PNEUMONIA"]
    assert body["result"]["driving_image"] == two_views["image2"].pk
    assert sorted(body["result"]["prediction_ids"]) == sorted(p["id"] for p in body["predictions"])
    assert body["result"]["model_version"] == "pneu-v1"

    worklist = rad_client.get("/").content.decode()
    row = re.search(rf'<tr[^>]*data-study-id="{study.pk}".*?</tr>', worklist, re.S).group(0)
    assert "flagged" in row and "<span data-study-label>PNEUMONIA</span>" in row
    assert "NORMAL" not in row

    page = rad_client.get(f"/studies/{study.pk}/").content.decode()
    assert "the model says <strong data-shown-label>PNEUMONIA</strong>" in page
    assert "⚑ flagged: PNEUMONIA" in page
    ids = ",".join(str(i) for i in sorted([two_views["p1"].pk, two_views["p2"].pk]))
    assert f'name="prediction_ids" value="{ids}"' in page
    # Each image's own result stays beside it.
    assert "Model result for image 1" in page and "Model result for image 2" in page
    assert "This image: <strong>NORMAL</strong>" in page

    from pypdf import PdfReader

    pdf = rad_client.get(f"/studies/{study.pk}/report.pdf").content
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    text = re.sub(r"\s+", " ", text)
    assert "Model result: PNEUMONIA (0.650), flagged: PNEUMONIA" in text
    html = rad_client.get(f"/studies/{study.pk}/report/").content.decode()
    assert "Model result: PNEUMONIA (0.650), flagged: PNEUMONIA" in html


def test_agreeing_on_the_page_signs_the_shown_study_label(two_views, rad_client):
    study = two_views["study"]
    ids = f"{two_views['p1'].pk},{two_views['p2'].pk}"
    resp = rad_client.post(
        f"/studies/{study.pk}/reading/", {"decision": "agree", "prediction_ids": ids}
    )
    assert resp.status_code == 302
    reading = study.readings.get()
    assert reading.final_label == "PNEUMONIA" and reading.agrees_with_model is True
    assert reading.prediction == two_views["p2"]
    assert sorted(reading.prediction_ids) == sorted([two_views["p1"].pk, two_views["p2"].pk])


def test_an_abnormal_class_over_its_threshold_flags_whatever_the_top_class(
    radiologist, pneumonia_model, rad_client
):
    upload = _image(radiologist, "TH-1", "ACC-TH-1", seed=21)
    _finish(upload.prediction, pneumonia_model, {"NORMAL": 0.523, "PNEUMONIA": 0.477})
    study = selectors.study_detail(upload.study.pk)
    result = selectors.study_result(study)
    assert result.flagged and result.label == "PNEUMONIA"
    assert study.flagged_by_model and study.flagged_finding == "PNEUMONIA"
    html = rad_client.get(f"/studies/{study.pk}/results/").content.decode()
    bars = re.findall(r'<li class="([^"]*)">\s*<span class="prob-label">(\w+)</span>', html)
    assert len(bars) == 4  # the study's and the image's
    for cls, label in bars:
        assert ("over" in cls) == (label == "PNEUMONIA")


def test_a_confident_normal_is_not_red_nor_flagged(radiologist, pneumonia_model, rad_client):
    upload = _image(radiologist, "TH-2", "ACC-TH-2", seed=22)
    _finish(upload.prediction, pneumonia_model, {"NORMAL": 0.967, "PNEUMONIA": 0.033})
    study = selectors.study_detail(upload.study.pk)
    assert not study.flagged_by_model and selectors.study_result(study).label == "NORMAL"
    html = rad_client.get(f"/studies/{study.pk}/results/").content.decode()
    assert not re.search(r'<li class="[^"]*over[^"]*">', html)
    assert "⚑ flagged" not in html


def test_the_worklist_puts_failed_studies_first_stat_first_then_flagged_then_priority(
    radiologist, pneumonia_model
):
    normal = {"NORMAL": 0.9, "PNEUMONIA": 0.1}
    routine = _image(radiologist, "O-R", "ACC-O-R", seed=31)
    _finish(routine.prediction, pneumonia_model, normal)
    stat = _image(radiologist, "O-S", "ACC-O-S", seed=32, priority=Study.Priority.STAT)
    _finish(stat.prediction, pneumonia_model, normal)
    flagged = _image(radiologist, "O-F", "ACC-O-F", seed=33)
    _finish(flagged.prediction, pneumonia_model, {"NORMAL": 0.3, "PNEUMONIA": 0.7})
    failed = _image(radiologist, "O-X", "ACC-O-X", seed=34)
    _fail(failed.prediction, pneumonia_model)
    failed_stat = _image(radiologist, "O-XS", "ACC-O-XS", seed=35, priority=Study.Priority.STAT)
    _fail(failed_stat.prediction, pneumonia_model)
    assert [s.patient.mrn for s in selectors.worklist()] == ["O-XS", "O-X", "O-F", "O-S", "O-R"]
    assert [s.patient.mrn for s in selectors.worklist(status="failed")] == ["O-XS", "O-X"]
    assert [s.patient.mrn for s in selectors.worklist(finding="PNEUMONIA")] == ["O-F"]
    failed_result = selectors.study_result(selectors.study_detail(failed.study.pk))
    assert failed_result.status == "failed" and failed_result.needs_attention


def test_a_view_still_analysed_keeps_the_study_pending(radiologist, pneumonia_model):
    first = _image(radiologist, "P-1", "ACC-P-1", seed=41)
    _image(radiologist, "P-1", "ACC-P-1", seed=42)
    _finish(first.prediction, pneumonia_model, {"NORMAL": 0.8, "PNEUMONIA": 0.2})
    result = selectors.study_result(selectors.study_detail(first.study.pk))
    assert result.status == "pending" and result.label == "NORMAL"
    assert result.prediction_ids == [first.prediction.pk]
    assert list(selectors.worklist(status="done")) == []
    assert [s.pk for s in selectors.worklist(status="waiting")] == [first.study.pk]


# The rule itself, on plain objects: no database (the module imports no Django).


class _Version:
    def __init__(
        self, name="v", classes=("NORMAL", "PNEUMONIA"), normal=("NORMAL",), thresholds=None
    ):
        self.name, self.class_labels = name, list(classes)
        self.normal, self.thresholds = set(normal), thresholds or {}

    def is_normal_label(self, label):
        return label in self.normal

    def threshold_for(self, label):
        return self.thresholds.get(label, 0.5)


class _P:
    def __init__(self, pk, image_id, status="done", probabilities=None, version=None, queued_at=0):
        self.pk, self.image_id, self.status = pk, image_id, status
        self.probabilities, self.model_version, self.queued_at = probabilities, version, queued_at


def test_the_rule_uses_each_images_current_prediction_only():
    v = _Version()
    old = _P(1, 10, probabilities={"NORMAL": 0.1, "PNEUMONIA": 0.9}, version=v, queued_at=1)
    new = _P(2, 10, probabilities={"NORMAL": 0.9, "PNEUMONIA": 0.1}, version=v, queued_at=2)
    result = results.study_result([old, new])
    assert result.label == "NORMAL" and not result.flagged and result.prediction_ids == [2]


def test_the_top_flagged_class_wins_over_a_higher_normal_class():
    v = _Version(classes=("normal", "a", "b"), normal=("normal",), thresholds={"a": 0.2, "b": 0.3})
    result = results.study_result(
        [
            _P(1, 1, probabilities={"normal": 0.5, "a": 0.25, "b": 0.25}, version=v),
            _P(2, 2, probabilities={"normal": 0.4, "a": 0.21, "b": 0.39}, version=v),
        ]
    )
    assert result.flagged_classes == ["b", "a"] and result.label == "b"
    assert result.driving_image == 2
    assert [(label, flagged) for label, _, _, flagged in result.bars()] == [
        ("normal", False),
        ("b", True),
        ("a", True),
    ]


@pytest.mark.parametrize(
    "statuses, expected",
    [
        (["done", "queued"], "pending"),
        (["done", "running"], "pending"),
        (["done", "failed"], "failed"),
        (["queued", "failed"], "failed"),
        (["done", "done"], "done"),
    ],
)
def test_the_study_status(statuses, expected):
    v = _Version()
    predictions = [
        _P(
            i,
            i,
            status=s,
            version=v,
            probabilities={"NORMAL": 0.7, "PNEUMONIA": 0.3} if s == "done" else None,
        )
        for i, s in enumerate(statuses)
    ]
    assert results.study_result(predictions).status == expected


def test_a_study_without_analysis_has_no_result():
    assert results.study_result([]).status == "none"
    assert results.study_result([]).label is None


# Which classes are normal: a property of the version.


@pytest.mark.parametrize(
    "classes, normal",
    [
        (["NORMAL", "PNEUMONIA"], ["NORMAL"]),
        (["No Finding", "Effusion"], ["No Finding"]),
        (["healthy", "covid"], ["healthy"]),
        (["a", "b"], []),
    ],
)
def test_a_version_learns_its_normal_classes_from_their_names(db, classes, normal):
    version = ModelVersion.objects.create(
        name="-".join(classes),
        architecture="resnet18",
        class_labels=classes,
        weights="m.pt",
        sha256="0",
    )
    assert version.normal_classes == normal


def test_an_admin_can_change_the_normal_classes_and_the_flags_follow(
    two_views, pneumonia_model, admin_client
):
    url = f"/admin/training/modelversion/{pneumonia_model.pk}/change/"
    form = admin_client.get(url).context["adminform"].form
    data = {name: form[name].value() for name in form.fields}
    data = {k: v for k, v in data.items() if v is not None}
    data["normal_classes"] = '["NORMAL", "PNEUMONIA"]'
    resp = admin_client.post(url, data)
    assert resp.status_code == 302, resp.context["adminform"].form.errors
    pneumonia_model.refresh_from_db()
    assert pneumonia_model.normal_classes == ["NORMAL", "PNEUMONIA"]
    study = Study.objects.get(pk=two_views["study"].pk)
    assert not study.flagged_by_model  # nothing abnormal is left to flag


def test_normal_classes_must_be_classes_of_the_version(pneumonia_model):
    from django.core.exceptions import ValidationError

    pneumonia_model.normal_classes = ["healthy"]
    with pytest.raises(ValidationError, match="Not classes of this version"):
        pneumonia_model.clean()


def test_import_model_takes_the_normal_classes(db, state_dict_file):
    from django.core.management import call_command

    call_command(
        "import_model",
        str(state_dict_file("mobilenet_v2", 2)),
        "--arch",
        "mobilenet_v2",
        "--classes",
        "clear,effusion",
        "--normal-classes",
        "CLEAR",
        "--name",
        "nc",
        stdout=io.StringIO(),
    )
    assert ModelVersion.objects.get(name="nc").normal_classes == ["clear"]


def test_the_rule_imports_no_django():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(root)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, diagnosis.results\n"
            "assert not [m for m in sys.modules if m.startswith('django')]",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
