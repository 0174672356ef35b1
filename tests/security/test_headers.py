"""Security headers (issue #20, item 7): no cache keeps patient data, a Content-Security-Policy
that the app's own pages satisfy, and no referrer leaves the site."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.urls import reverse

from tests.diagnosis import test_workspace_views
from tests.training.views.conftest import make_dataset, make_run
from training.models import TrainingRun

study = test_workspace_views.study  # the fixture: a study the model has read

pytestmark = pytest.mark.django_db


def _no_store(response) -> bool:
    return "no-store" in [d.strip() for d in response.get("Cache-Control", "").split(",")]


def _patient_data_paths(study) -> list[str]:
    image = study.images.get()
    prediction = image.predictions.get()
    return [
        "/",
        f"/studies/{study.pk}/",
        f"/studies/{study.pk}/results/",
        f"/studies/{study.pk}/reading-form/",
        f"/studies/{study.pk}/report/",
        f"/studies/{study.pk}/report.pdf",
        f"/images/{image.pk}/display.png",
        f"/images/{image.pk}/original",
        f"/predictions/{prediction.pk}/overlay.png",
        f"/predictions/{prediction.pk}/heatmap-layer.png",
        f"/api/v1/studies/{study.pk}/",
        f"/api/v1/predictions/{prediction.pk}/",
        f"/api/v1/predictions/{prediction.pk}/overlay.png",
        f"/api/v1/predictions/{prediction.pk}/heatmap-layer.png",
        f"/api/v1/predictions/{prediction.pk}/heatmap-layer.png",  # deprecated aliases
        f"/api/v1/predictions/{prediction.pk}/cam.png",
    ]


def test_every_page_file_and_api_answer_with_patient_data_is_kept_in_no_cache(rad_client, study):
    for path in _patient_data_paths(study):
        response = rad_client.get(path)
        assert response.status_code == 200, path
        assert response["Cache-Control"] == "no-store", path  # not "private, max-age=..."
        if response.streaming:
            b"".join(response.streaming_content)  # to its end: the test client then closes it


def test_an_error_page_and_the_sign_in_page_are_not_cached_either(client, rad_client):
    assert _no_store(rad_client.get("/studies/999999/"))
    assert _no_store(client.get("/accounts/login/"))  # Django's never_cache: no-store and more


def test_every_answer_has_a_strict_content_security_policy_and_a_same_origin_referrer(
    client, rad_client, study
):
    for response in (
        client.get("/accounts/login/"),
        rad_client.get(f"/studies/{study.pk}/"),
        rad_client.get(f"/api/v1/studies/{study.pk}/"),
    ):
        policy = dict(
            (d.split()[0], d.split()[1:]) for d in response["Content-Security-Policy"].split(";")
        )
        assert policy["default-src"] == ["'self'"]
        assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
        assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]
        assert policy["base-uri"] == ["'self'"] and policy["form-action"] == ["'self'"]
        assert not any("unsafe" in s for sources in policy.values() for s in sources)
        assert response["Referrer-Policy"] == "same-origin"
        assert response["X-Content-Type-Options"] == "nosniff"


class _InlineFinder(HTMLParser):
    """What a strict CSP blocks: inline script, style elements and attributes, event handlers,
    javascript: URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if (
            tag == "script"
            and not attributes.get("src")
            and attributes.get("type") != "application/json"
        ):
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style> element")
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.found.append(f"<{tag} {name}=...>")
            if name in ("href", "src", "action") and (value or "").lower().startswith(
                "javascript:"
            ):
                self.found.append(f"<{tag} {name}=javascript:...>")


def _inline_code(html: str) -> list[str]:
    finder = _InlineFinder()
    finder.feed(html)
    return finder.found


def test_the_clinical_pages_have_no_inline_script_style_or_handler(rad_client, study):
    for path in [
        "/",
        "/studies/upload/",
        f"/studies/{study.pk}/",
        f"/studies/{study.pk}/results/",
        f"/studies/{study.pk}/reading-form/",
        f"/studies/{study.pk}/report/",
    ]:
        response = rad_client.get(path)
        assert response.status_code == 200, path
        assert _inline_code(response.content.decode()) == [], path


def test_the_admin_pages_have_no_inline_script_style_or_handler(
    client, admin_user, study, model_version
):
    dataset = make_dataset("hdr-data", root="/srv/datasets/hdr")
    run = make_run(dataset, TrainingRun.Status.DONE, user=admin_user, plots=True)
    client.force_login(admin_user)
    paths = [
        reverse(f"training:{name}")
        for name in ("overview", "datasets", "runs", "run-start", "versions", "compare")
    ]
    paths += [
        f"/training/runs/{run.pk}/",
        f"/training/datasets/{dataset.pk}/",
        f"/training/models/{model_version.pk}/",
        "/agreement/",
        "/audit/",
        "/admin/",
        "/admin/diagnosis/study/",
        f"/admin/diagnosis/study/{study.pk}/change/",
    ]
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, path
        assert _inline_code(response.content.decode()) == [], path


def test_the_finder_sees_what_the_policy_would_block():
    assert _inline_code('<p style="x" onclick="y"><script>1</script><a href="javascript:z">') == [
        "<p style=...>",
        "<p onclick=...>",
        "inline <script>",
        "<a href=javascript:...>",
    ]
    assert (
        _inline_code(
            '<script src="/static/js/app.js"></script><script type="application/json">{}</script>'
        )
        == []
    )
