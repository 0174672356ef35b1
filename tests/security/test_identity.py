"""Identity safety (issue #20, item 4): no silent merge of two patients under one ID, no ID cut to
fit, no implausible birth date, and every identity edit in the admin on the audit trail."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from cxrweb.audit.models import AuditEvent
from diagnosis.models import Patient, Study
from tests import imagegen
from tests.security.upload_helpers import api_client, post_api, post_form, stored

ON_RECORD = {
    "patient_id": "MRN-ID-1",
    "patient_name": "Doe^John",
    "patient_sex": "M",
    "patient_birth_date": "1970-01-01",
}
OTHER_PATIENT = {
    "patient_id": "MRN-ID-1",
    "patient_name": "Roe^Richard",
    "patient_birth_date": "1980-02-02",
}


@pytest.fixture
def api(api_token):
    return api_client(api_token)


@pytest.fixture
def on_record(api) -> Patient:
    resp = post_api(api, imagegen.png_bytes(seed=1), **ON_RECORD)
    assert resp.status_code == 201, resp.content
    return Patient.objects.get()


def test_the_api_answers_409_with_both_sets_of_details_and_stores_nothing(api, on_record):
    before = stored()
    resp = post_api(api, imagegen.png_bytes(seed=2), **OTHER_PATIENT)
    assert resp.status_code == 409, resp.content
    body = resp.json()
    assert body["code"] == "identity_mismatch"
    assert body["patient_id"] == "MRN-ID-1"
    assert body["mismatched"] == ["name", "birth_date"]
    assert body["stored"] == {"name": "Doe^John", "sex": "M", "birth_date": "1970-01-01"}
    assert body["submitted"] == {"name": "Roe^Richard", "sex": "", "birth_date": "1980-02-02"}
    assert "confirm_identity=true" in body["error"]
    assert stored() == before
    event = AuditEvent.objects.get(action=AuditEvent.Action.UPLOAD_REJECTED)
    assert (event.patient_mrn, event.detail["code"]) == ("MRN-ID-1", "identity_mismatch")


@pytest.mark.parametrize(
    "fields",
    [
        {"patient_id": "MRN-ID-1"},  # blank fields are no mismatch
        {
            "patient_id": "MRN-ID-1",
            "patient_name": "  DOE^JOHN ",
        },  # case, ^ and spaces do not count
        {"patient_id": "MRN-ID-1", "patient_name": "doe   john", "patient_sex": "M"},
    ],
)
def test_an_upload_that_agrees_with_the_record_or_leaves_details_blank_is_attached(
    api, on_record, fields
):
    resp = post_api(api, imagegen.png_bytes(seed=2), **fields)
    assert resp.status_code == 201, resp.content
    assert Study.objects.filter(patient=on_record).count() == 2
    on_record.refresh_from_db()
    assert on_record.name == "Doe^John"


def test_a_changed_order_of_name_parts_or_another_sex_is_a_mismatch(api, on_record):
    resp = post_api(
        api,
        imagegen.png_bytes(seed=2),
        patient_id="MRN-ID-1",
        patient_name="John Doe",
        patient_sex="F",
    )
    assert resp.status_code == 409
    assert resp.json()["mismatched"] == ["name", "sex"]


def test_a_confirmed_mismatch_joins_the_patient_on_record_unchanged_and_is_audited(api, on_record):
    resp = post_api(api, imagegen.png_bytes(seed=2), **OTHER_PATIENT, confirm_identity="true")
    assert resp.status_code == 201, resp.content
    study = Study.objects.get(pk=resp.json()["id"])
    assert study.patient_id == on_record.pk
    on_record.refresh_from_db()
    assert (on_record.name, on_record.birth_date) == ("Doe^John", dt.date(1970, 1, 1))
    event = AuditEvent.objects.get(action=AuditEvent.Action.IDENTITY_CONFIRMED)
    assert event.patient_mrn == "MRN-ID-1"
    assert (event.object_type, event.object_id) == ("Study", str(study.pk))
    assert event.detail["stored"]["name"] == "Doe^John"
    assert event.detail["submitted"]["name"] == "Roe^Richard"
    assert event.detail["mismatched"] == ["name", "birth_date"]


def test_a_confirmed_mismatch_does_not_fill_in_details_the_record_lacks(api):
    post_api(api, imagegen.png_bytes(seed=1), patient_id="MRN-ID-2", patient_name="Doe^Jane")
    resp = post_api(
        api,
        imagegen.png_bytes(seed=2),
        patient_id="MRN-ID-2",
        patient_name="Roe^Rita",
        patient_sex="F",
        confirm_identity="true",
    )
    assert resp.status_code == 201
    assert Patient.objects.get(mrn="MRN-ID-2").sex == ""


def test_confirm_identity_false_is_not_a_confirmation(api, on_record):
    resp = post_api(api, imagegen.png_bytes(seed=2), **OTHER_PATIENT, confirm_identity="false")
    assert resp.status_code == 409


def test_a_dicom_upload_with_another_patients_details_under_a_known_id_is_a_mismatch(api):
    resp = post_api(api, imagegen.png_bytes(), patient_id="MRN-001", patient_name="Roe^Rita")
    assert resp.status_code == 201
    resp = post_api(
        api, imagegen.dicom_bytes(patient_id="MRN-001", patient_name="Doe^Jane"), name="x.dcm"
    )
    assert resp.status_code == 409
    assert resp.json()["submitted"]["name"] == "Doe Jane"


def test_the_browser_form_asks_to_confirm_then_attaches_with_the_box_ticked(
    rad_client, api, on_record
):
    before = stored()
    hostile = {**OTHER_PATIENT, "patient_name": "<img src=x onerror=alert(1)>"}
    resp = post_form(rad_client, imagegen.png_bytes(seed=2), **hostile)
    assert resp.status_code == 409
    page = resp.content.decode()
    assert "is on record with other details" in page
    assert "Doe^John" in page and "1970-01-01" in page and "1980-02-02" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<img src=x" not in page
    assert 'type="checkbox" name="confirm_identity"' in page
    assert "This is the same patient" in page
    assert stored() == before

    resp = post_form(rad_client, imagegen.png_bytes(seed=2), **hostile, confirm_identity="on")
    assert resp.status_code == 302
    study = Study.objects.latest("pk")
    assert resp["Location"] == study.get_absolute_url()
    assert study.patient_id == on_record.pk
    event = AuditEvent.objects.get(action=AuditEvent.Action.IDENTITY_CONFIRMED)
    assert event.detail["via"] == "browser"
    assert event.detail["submitted"]["name"] == "<img src=x onerror=alert(1)>"


def test_the_confirm_box_is_not_shown_without_a_mismatch(rad_client):
    page = rad_client.get("/studies/upload/").content.decode()
    assert 'name="confirm_identity"' not in page


@pytest.mark.parametrize(
    "field, tag", [("patient_id", "PatientID"), ("accession_number", "AccessionNumber")]
)
def test_a_dicom_id_longer_than_64_characters_is_refused_not_cut(api, field, tag):
    long_id = "X" * 64 + "-2"
    # Stored under the 64 characters a cut would leave: the long ID must not join it.
    post_api(api, imagegen.png_bytes(seed=1), patient_id="X" * 64, accession_number="X" * 64)
    before = stored()
    tags = {"patient_id": long_id} if field == "patient_id" else {"accession": long_id}
    resp = post_api(api, imagegen.dicom_bytes(**tags), name="x.dcm")
    assert resp.status_code == 400, resp.content
    body = resp.json()
    assert (body["code"], body["field"]) == ("too_long", field)
    assert f"The DICOM file's {tag} is 66 characters long; at most 64" in body["error"]
    assert stored() == before


def test_a_typed_id_longer_than_64_characters_is_refused(api):
    resp = post_api(api, imagegen.png_bytes(), patient_id="Y" * 65)
    assert resp.status_code == 400
    assert resp.json()["code"] == "max_length"
    assert Patient.objects.count() == 0


def _bad_birth_dates() -> list[str]:
    tomorrow = timezone.localdate() + dt.timedelta(days=1)
    return [tomorrow.isoformat(), "1899-12-31"]


@pytest.mark.parametrize("birth_date", _bad_birth_dates())
def test_a_birth_date_in_the_future_or_before_1900_is_refused_on_the_api_and_the_form(
    api, rad_client, birth_date
):
    before = stored()
    resp = post_api(api, imagegen.png_bytes(), patient_id="MRN-B", patient_birth_date=birth_date)
    assert resp.status_code == 400
    assert resp.json()["code"] == "bad_birth_date"
    assert "patient_birth_date" in resp.json()["fields"]
    resp = post_form(
        rad_client, imagegen.png_bytes(), patient_id="MRN-B", patient_birth_date=birth_date
    )
    assert resp.status_code == 400
    assert "The birth date" in resp.context["form"].errors["patient_birth_date"][0]
    assert stored() == before


@pytest.mark.parametrize("birth_date", _bad_birth_dates())
def test_a_dicom_birth_date_in_the_future_or_before_1900_is_refused(api, birth_date):
    before = stored()
    resp = post_api(api, imagegen.dicom_bytes(birth_date=birth_date.replace("-", "")), name="x.dcm")
    assert resp.status_code == 400
    body = resp.json()
    assert (body["code"], body["field"]) == ("bad_birth_date", "patient_birth_date")
    assert "The DICOM file's PatientBirthDate" in body["error"]
    assert stored() == before


@pytest.mark.parametrize("birth_date", ["1900-01-01", "today"])
def test_the_birth_date_bounds_themselves_are_accepted(api, birth_date):
    if birth_date == "today":
        birth_date = timezone.localdate().isoformat()
    resp = post_api(api, imagegen.png_bytes(), patient_id="MRN-B", patient_birth_date=birth_date)
    assert resp.status_code == 201, resp.content


def _admin_change(client, patient: Patient, **changes):
    data = {
        "mrn": patient.mrn,
        "name": patient.name,
        "sex": patient.sex,
        "birth_date": patient.birth_date.isoformat() if patient.birth_date else "",
        "studies-TOTAL_FORMS": "0",
        "studies-INITIAL_FORMS": "0",
        **changes,
    }
    return client.post(f"/admin/diagnosis/patient/{patient.pk}/change/", data)


def test_an_identity_edit_in_the_admin_is_audited_with_old_and_new_values(client, admin_user):
    patient = Patient.objects.create(
        mrn="MRN-A", name="Doe^Jane", sex="F", birth_date=dt.date(1970, 1, 2)
    )
    client.force_login(admin_user)
    resp = _admin_change(client, patient, name="Doe^Janet", birth_date="1971-01-02")
    assert resp.status_code == 302, resp.content
    event = AuditEvent.objects.get(action=AuditEvent.Action.PATIENT_EDITED)
    assert event.username == admin_user.username
    assert (event.patient_mrn, event.object_type, event.object_id) == (
        "MRN-A",
        "Patient",
        str(patient.pk),
    )
    assert event.detail["changes"] == {
        "name": {"old": "Doe^Jane", "new": "Doe^Janet"},
        "birth_date": {"old": "1970-01-02", "new": "1971-01-02"},
    }

    resp = _admin_change(client, Patient.objects.get(), mrn="MRN-B")
    assert resp.status_code == 302
    events = AuditEvent.objects.filter(action=AuditEvent.Action.PATIENT_EDITED)
    assert events.latest("pk").detail["changes"] == {"mrn": {"old": "MRN-A", "new": "MRN-B"}}
    assert events.latest("pk").patient_mrn == "MRN-B"


def test_an_admin_save_without_changes_is_not_an_identity_edit(client, admin_user):
    patient = Patient.objects.create(mrn="MRN-A", name="Doe^Jane")
    client.force_login(admin_user)
    assert _admin_change(client, patient).status_code == 302
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.PATIENT_EDITED).exists()


@pytest.mark.parametrize(
    "changes", [{"mrn": "MRN\r\nX-Evil: 1"}, {"name": "Doe\nJane"}, {"birth_date": "1850-01-01"}]
)
def test_the_admin_refuses_what_the_upload_refuses(client, admin_user, changes):
    patient = Patient.objects.create(mrn="MRN-A", name="Doe^Jane")
    client.force_login(admin_user)
    resp = _admin_change(client, patient, **changes)
    assert resp.status_code == 200  # the form again, with its error
    [field] = changes
    assert field in resp.context["adminform"].form.errors
    patient.refresh_from_db()
    assert (patient.mrn, patient.name, patient.birth_date) == ("MRN-A", "Doe^Jane", None)
