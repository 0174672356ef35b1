"""The Content-Security-Policy in a real browser (issue #20, item 7): the app's own pages and the
Django admin run under it without one violation or console error, and still work (the results
panel replaced by polling, the probability bars, the heatmap's opacity slider)."""

from __future__ import annotations

import re

import pytest

from diagnosis.models import Patient, Study
from tests import imagegen
from tests.browser.conftest import sign_in
from tests.training.views.conftest import make_dataset, make_run
from training.models import TrainingRun

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.cxrCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || "inline"}`
                         + ` at ${e.sourceFile}:${e.lineNumber}`);
});
"""


@pytest.fixture
def watched(page):
    """The page, and every CSP violation and console error or warning it reports."""
    problems: list[str] = []
    page.expose_function("cxrCspViolation", lambda text: problems.append(f"CSP: {text}"))
    page.add_init_script(REPORT_VIOLATIONS)
    page.on(
        "console",
        lambda m: (
            problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning") and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    # A failed load, by URL; the Django admin declares no icon, so the browser asks for
    # /favicon.ico, which the app does not serve.
    page.on(
        "response",
        lambda r: (
            problems.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    return page, problems


def _visit(page, url: str, problems: list[str], shot=None) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    if shot is not None:
        page.screenshot(path=shot, full_page=True)
    assert problems == [], url


def test_the_clinical_pages_run_under_the_policy_without_a_violation(
    watched, live_server, radiologist, production_model, celery_worker, artifacts_dir, tmp_path
):
    page, problems = watched
    shots = artifacts_dir / "csp"
    shots.mkdir(exist_ok=True)
    sign_in(page, live_server, radiologist.username)
    assert problems == []

    xray = tmp_path / "chest.png"
    xray.write_bytes(imagegen.png_bytes(imagegen.make_xray(512, 400, seed=5)))
    _visit(page, f"{live_server.url}/studies/upload/", problems)
    page.get_by_label("Chest X-ray").set_input_files(str(xray))
    page.get_by_label("Patient ID (MRN)").fill("CSP-1")
    page.get_by_role("button", name="Upload and analyse").click()
    page.wait_for_url(re.compile(r".*/studies/\d+/$"))
    # The results panel arrives by polling (innerHTML): bars and the stage's aspect ratio are set
    # from data- attributes, the heatmap's opacity from the slider, all through element.style.
    page.wait_for_selector("[data-status='done']", timeout=90_000)
    page.wait_for_function(
        "() => { const i = document.querySelector('.stage .heatmap');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    bar_widths = page.locator(".probs .bar").evaluate_all("(bars) => bars.map(b => b.style.width)")
    assert bar_widths and all(w.endswith("%") for w in bar_widths)
    assert page.locator(".probs .thr").first.evaluate("(t) => t.style.left").endswith("%")
    stage = page.locator(".stage").first
    assert stage.evaluate("(s) => s.style.getPropertyValue('--ar')").strip() == "512 / 400"
    heatmap = page.locator(".stage .heatmap")
    assert heatmap.evaluate("(h) => getComputedStyle(h).opacity") == "0.6"
    page.get_by_label("Opacity").fill("35")
    assert heatmap.evaluate("(h) => getComputedStyle(h).opacity") == "0.35"
    page.screenshot(path=shots / "study.png", full_page=True)
    assert problems == []

    study = Study.objects.get(patient__mrn="CSP-1")
    _visit(page, f"{live_server.url}/studies/{study.pk}/report/", problems, shots / "report.png")
    assert page.locator("figure img").evaluate("(i) => i.naturalWidth") > 0
    _visit(page, f"{live_server.url}/", problems, shots / "worklist.png")
    assert page.get_by_role("link", name="CSP-1").is_visible()


def test_the_training_pages_and_the_admin_run_under_the_policy_without_a_violation(
    watched, live_server, admin_user, model_version, artifacts_dir
):
    page, problems = watched
    shots = artifacts_dir / "csp"
    shots.mkdir(exist_ok=True)
    dataset = make_dataset("csp-data", root="/srv/datasets/csp")
    run = make_run(dataset, TrainingRun.Status.DONE, user=admin_user, plots=True)
    patient = Patient.objects.create(mrn="CSP-ADMIN", name="Doe^Jane")
    sign_in(page, live_server, admin_user.username)
    for name, path in [
        ("training", "/training/"),
        ("datasets", "/training/datasets/"),
        ("dataset", f"/training/datasets/{dataset.pk}/"),
        ("runs", "/training/runs/"),
        ("run-start", "/training/runs/new/"),
        ("run", f"/training/runs/{run.pk}/"),
        ("versions", "/training/models/"),
        ("version", f"/training/models/{model_version.pk}/"),
        ("compare", "/training/compare/"),
        ("agreement", "/agreement/"),
        ("audit", "/audit/"),
        ("admin", "/admin/"),
        ("admin-patients", "/admin/diagnosis/patient/"),
        ("admin-patient", f"/admin/diagnosis/patient/{patient.pk}/change/"),
        ("admin-user-add", "/admin/auth/user/add/"),
    ]:
        _visit(page, f"{live_server.url}{path}", problems, shots / f"{name}.png")
    # The admin's own scripts work: the date widget's calendar opens.
    page.goto(f"{live_server.url}/admin/diagnosis/patient/{patient.pk}/change/")
    page.locator(".datetimeshortcuts a").last.click()
    assert page.locator(".calendarbox").first.is_visible()
    assert problems == []


def test_the_api_docs_page_runs_under_the_policy_without_a_violation(
    watched, live_server, radiologist, artifacts_dir
):
    page, problems = watched
    shots = artifacts_dir / "csp"
    shots.mkdir(exist_ok=True)
    sign_in(page, live_server, radiologist.username)
    page.goto(f"{live_server.url}/api/v1/docs/")
    # Swagger UI's scripts, from this server, fetched the schema and drew every operation.
    page.wait_for_selector(".opblock", timeout=30_000)
    page.wait_for_load_state("networkidle")
    assert page.locator(".opblock").count() >= 9
    assert page.locator(".opblock-deprecated").count() == 2
    page.screenshot(path=shots / "api-docs.png", full_page=True)
    assert problems == []
