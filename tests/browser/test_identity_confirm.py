"""The upload page's confirm step for a known patient ID with other details (issue #20, item 4),
in a real browser under the Content-Security-Policy: both sets of details side by side, nothing
stored until the radiologist confirms, the record left as it was, the confirmation audited; a
cancel stores nothing; several files at once each ask; the form without JavaScript asks too."""

from __future__ import annotations

import re

import pytest

from cxrweb.audit.models import AuditEvent
from diagnosis.models import Image, Patient, Study
from tests.browser.conftest import sign_in, xray_files

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

MRN = "MRN-X"
CONFIRM = "This is the same patient: upload"
CANCEL = "Not the same patient: do not upload"

REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.cxrCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || "inline"}`
                         + ` at ${e.sourceFile}:${e.lineNumber}`);
});
"""


class Watch:
    """CSP violations, console errors and warnings, page errors and failed loads of one page.
    A 409 from the upload (the API's, or the form's without JavaScript) is the mismatch the test
    provokes: counted apart."""

    def __init__(self, page, conflict_path: str = "/api/v1/studies/") -> None:
        self.conflict_path = conflict_path
        self.problems: list[str] = []
        self.conflicts: list[str] = []
        page.expose_function("cxrCspViolation", lambda t: self.problems.append(f"CSP: {t}"))
        page.add_init_script(REPORT_VIOLATIONS)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("response", self._response)

    def _console(self, m) -> None:
        # The browser logs each non-2xx answer as "Failed to load resource"; _response judges them.
        if m.type in ("error", "warning") and not m.text.startswith("Failed to load resource"):
            self.problems.append(f"console {m.type}: {m.text}")

    def _response(self, r) -> None:
        if r.status == 409 and r.url.endswith(self.conflict_path):
            self.conflicts.append(r.url)
        elif r.status >= 400 and not r.url.endswith("/favicon.ico"):
            self.problems.append(f"HTTP {r.status}: {r.url}")


@pytest.fixture
def watched(page):
    return page, Watch(page)


@pytest.fixture
def shots(artifacts_dir):
    path = artifacts_dir / "identity"
    path.mkdir(exist_ok=True)
    return path


_xrays = xray_files


def _fill(page, files: list[str], name: str, sex: str = "", birth_date: str = "") -> None:
    page.get_by_label("Chest X-ray").set_input_files(files)
    page.get_by_label("Patient ID (MRN)").fill(MRN)
    page.get_by_label("Patient name").fill(name)
    if sex:
        page.get_by_label("Sex").select_option(sex)
    if birth_date:
        page.get_by_label("Birth date").fill(birth_date)


def _on_record(page, live_server, tmp_path) -> Patient:
    """DOE^JOHN, male, born 1970-01-01, uploaded through the page."""
    page.goto(f"{live_server.url}/studies/upload/")
    _fill(page, _xrays(tmp_path, 1), "DOE^JOHN", "M", "1970-01-01")
    page.get_by_role("button", name="Upload and analyse").click()
    page.wait_for_url(re.compile(r".*/studies/\d+/$"))
    return Patient.objects.get(mrn=MRN)


def _counts() -> tuple[int, int, int]:
    return Patient.objects.count(), Study.objects.count(), Image.objects.count()


def _record(patient: Patient) -> tuple[str, str, str]:
    patient.refresh_from_db()
    return patient.name, patient.sex, str(patient.birth_date)


def _assert_mismatch_shown(box) -> None:
    """Both sets of details, row by row, the differing ones marked."""
    assert box.is_visible()
    assert MRN in box.inner_text()
    rows = {
        r.locator("th").inner_text(): [c.inner_text() for c in r.locator("td").all()]
        for r in box.locator("tbody tr").all()
    }
    assert rows == {
        "Name (differs)": ["DOE^JOHN", "ROE^RICHARD"],
        "Sex": ["Male", "—"],
        "Birth date (differs)": ["1970-01-01", "1980-02-02"],
    }

    # The differing rows stand out from the agreeing one.
    def background(row: str) -> str:
        return box.locator(f"{row} td").first.evaluate("(c) => getComputedStyle(c).backgroundColor")

    assert background("tr.differs") != background("tbody tr:not(.differs)")
    assert "confirm_identity" not in box.inner_text()  # API wording stays out of the page


def test_a_mismatch_is_shown_then_confirmed_onto_the_patient_on_record(
    watched, live_server, radiologist, shots, tmp_path
):
    page, watch = watched
    sign_in(page, live_server, radiologist.username)
    patient = _on_record(page, live_server, tmp_path)
    assert _counts() == (1, 1, 1)

    page.goto(f"{live_server.url}/studies/upload/")
    _fill(page, _xrays(tmp_path, 2), "ROE^RICHARD", birth_date="1980-02-02")
    page.get_by_role("button", name="Upload and analyse").click()
    box = page.locator("#upload-file-0 .identity-mismatch")
    box.wait_for()
    _assert_mismatch_shown(box)
    assert (
        page.locator("#upload-file-0 .fstate").inner_text()
        == "Not uploaded yet: check the patient."
    )
    page.screenshot(path=shots / "01-mismatch.png", full_page=True)
    assert _counts() == (1, 1, 1)  # nothing stored yet
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.IDENTITY_CONFIRMED).exists()

    box.get_by_role("button", name=CONFIRM).click()
    # One file: straight to its study, as an upload without a mismatch.
    page.wait_for_url(re.compile(r".*/studies/\d+/$"))
    page.wait_for_load_state("networkidle")
    page.screenshot(path=shots / "02-confirmed-study.png", full_page=True)
    assert _counts() == (1, 2, 2)
    study = Study.objects.latest("pk")
    assert page.url.endswith(study.get_absolute_url())
    assert study.patient_id == patient.pk
    assert _record(patient) == ("DOE^JOHN", "M", "1970-01-01")
    event = AuditEvent.objects.get(action=AuditEvent.Action.IDENTITY_CONFIRMED)
    assert (event.user_id, event.patient_mrn, event.object_type, event.object_id) == (
        radiologist.pk,
        MRN,
        "Study",
        str(study.pk),
    )
    assert event.detail["stored"]["name"] == "DOE^JOHN"
    assert event.detail["submitted"]["name"] == "ROE^RICHARD"
    assert event.detail["mismatched"] == ["name", "birth_date"]
    assert watch.conflicts == [f"{live_server.url}/api/v1/studies/"]
    assert watch.problems == []


def test_cancelling_a_mismatch_stores_nothing(watched, live_server, radiologist, shots, tmp_path):
    page, watch = watched
    sign_in(page, live_server, radiologist.username)
    patient = _on_record(page, live_server, tmp_path)

    page.goto(f"{live_server.url}/studies/upload/")
    _fill(page, _xrays(tmp_path, 2), "ROE^RICHARD", birth_date="1980-02-02")
    page.get_by_role("button", name="Upload and analyse").click()
    box = page.locator("#upload-file-0 .identity-mismatch")
    box.wait_for()
    box.get_by_role("button", name=CANCEL).click()
    assert box.count() == 0
    status = page.locator("#upload-file-0 .fstate")
    assert status.inner_text() == "Not uploaded: the details do not match patient MRN-X."
    assert page.locator("[data-dicom-note]").inner_text() == "0 of 1 file(s) uploaded."
    page.screenshot(path=shots / "03-cancelled.png", full_page=True)
    assert page.url == f"{live_server.url}/studies/upload/"
    assert _counts() == (1, 1, 1)
    assert _record(patient) == ("DOE^JOHN", "M", "1970-01-01")
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.IDENTITY_CONFIRMED).exists()
    assert watch.conflicts == [f"{live_server.url}/api/v1/studies/"]
    assert watch.problems == []


def test_several_files_with_a_mismatch_each_ask_and_only_confirmed_ones_are_stored(
    watched, live_server, radiologist, shots, tmp_path
):
    page, watch = watched
    sign_in(page, live_server, radiologist.username)
    patient = _on_record(page, live_server, tmp_path)

    page.goto(f"{live_server.url}/studies/upload/")
    _fill(page, _xrays(tmp_path, 2, 3, 4), "ROE^RICHARD", birth_date="1980-02-02")
    page.get_by_role("button", name="Upload and analyse").click()
    page.wait_for_function(
        "() => document.querySelectorAll('.file-list .identity-mismatch').length === 3"
    )
    note = page.locator("[data-dicom-note]")
    assert note.inner_text() == ("0 of 3 file(s) uploaded; 3 wait for you to check the patient.")
    for i in range(3):
        _assert_mismatch_shown(page.locator(f"#upload-file-{i} .identity-mismatch"))
    page.screenshot(path=shots / "04-several-mismatch.png", full_page=True)
    assert _counts() == (1, 1, 1)

    page.locator("#upload-file-0").get_by_role("button", name=CONFIRM).click()
    page.locator("#upload-file-0 .fstate.ok").wait_for()
    page.locator("#upload-file-1").get_by_role("button", name=CANCEL).click()
    assert note.inner_text() == "1 of 3 file(s) uploaded; 1 waits for you to check the patient."
    page.locator("#upload-file-2").get_by_role("button", name=CONFIRM).click()
    page.locator("#upload-file-2 .fstate.ok").wait_for()
    # Several files stay on the page, whatever was confirmed.
    assert page.url == f"{live_server.url}/studies/upload/"
    assert note.inner_text() == (
        "2 of 3 file(s) uploaded. They appear in the worklist as they are analysed."
    )
    page.screenshot(path=shots / "05-several-resolved.png", full_page=True)

    # The two confirmed files were sent together: one new study (issue #22, item 6).
    assert _counts() == (1, 2, 3)
    assert set(Study.objects.values_list("patient_id", flat=True)) == {patient.pk}
    assert _record(patient) == ("DOE^JOHN", "M", "1970-01-01")
    assert AuditEvent.objects.filter(action=AuditEvent.Action.IDENTITY_CONFIRMED).count() == 2
    assert "err" in page.locator("#upload-file-1 .fstate").get_attribute("class")
    assert len(watch.conflicts) == 3
    assert watch.problems == []


def test_without_javascript_the_form_asks_with_a_box_to_tick(
    browser, live_server, radiologist, shots, tmp_path
):
    context = browser.new_context(
        viewport={"width": 1400, "height": 1000}, java_script_enabled=False
    )
    page = context.new_page()
    watch = Watch(page, conflict_path="/studies/upload/")
    try:
        # Without JavaScript the login page still works (a plain form).
        page.goto(f"{live_server.url}/accounts/login/")
        page.get_by_label("User name").fill(radiologist.username)
        page.get_by_label("Password").fill("correct horse battery")
        page.get_by_role("button", name="Sign in").click()
        patient = Patient.objects.create(mrn=MRN, name="DOE^JOHN", sex="M", birth_date="1970-01-01")

        page.goto(f"{live_server.url}/studies/upload/")
        _fill(page, _xrays(tmp_path, 2), "ROE^RICHARD", birth_date="1980-02-02")
        with page.expect_response(re.compile(r".*/studies/upload/$")) as answer:
            page.get_by_role("button", name="Upload and analyse").click()
        assert answer.value.status == 409
        box = page.locator(".identity-mismatch")
        _assert_mismatch_shown(box)
        page.screenshot(path=shots / "06-no-js-mismatch.png", full_page=True)
        assert _counts() == (1, 0, 0)
        # The typed details survive the round trip; the file is chosen again.
        assert page.get_by_label("Patient name").input_value() == "ROE^RICHARD"

        page.get_by_label("Chest X-ray").set_input_files(_xrays(tmp_path, 2))
        page.get_by_label("This is the same patient").check()
        page.get_by_role("button", name="Upload and analyse").click()
        page.wait_for_url(re.compile(r".*/studies/\d+/$"))
        page.screenshot(path=shots / "07-no-js-confirmed.png", full_page=True)
        assert _counts() == (1, 1, 1)
        assert Study.objects.get().patient_id == patient.pk
        assert _record(patient) == ("DOE^JOHN", "M", "1970-01-01")
        event = AuditEvent.objects.get(action=AuditEvent.Action.IDENTITY_CONFIRMED)
        assert event.detail["via"] == "browser"
        assert watch.conflicts == [f"{live_server.url}/studies/upload/"]
        assert watch.problems == []
    finally:
        context.close()
