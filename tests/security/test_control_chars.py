"""Patient ID, accession number and patient name refuse control characters, alike on the API, the
browser form and the DICOM tags (issue #20, item 1, input side): nothing is stored."""

from __future__ import annotations

import pytest

from cxrweb.audit.models import AuditEvent
from diagnosis.models import Patient
from tests import imagegen
from tests.security.upload_helpers import api_client, post_api, post_form, stored

HOSTILE = [
    "PAT\x00X",
    "PAT\x07X",
    "PAT\tX",
    "PAT\nX",
    "PAT\rX",
    "PAT\x1bX",
    "PAT\x7fX",
    "ACC\r\nX-Evil: 1",
    "PAT\n",
]
# Invisible or line-breaking Unicode: refused in IDs as well.
HOSTILE_UNICODE = [
    "PAT\x85X",
    "PAT\u2028X",
    "PAT\u2029X",
    "PAT\u202eX",
    "PAT\u2066X",
    "PAT\u200bX",
    "PAT\ufeffX",
]
ID_FIELDS = ["patient_id", "accession_number"]
DICOM_TAGS = [("patient_id", "PatientID"), ("accession_number", "AccessionNumber")]


def _dicom_with(field: str, value: str) -> bytes:
    return imagegen.dicom_bytes(**{"patient_id" if field == "patient_id" else "accession": value})


def _fields(field: str, value: str) -> dict:
    return {"patient_id": "MRN-SAFE", field: value}


@pytest.mark.parametrize("value", HOSTILE + HOSTILE_UNICODE)
@pytest.mark.parametrize("field", ID_FIELDS)
def test_the_api_refuses_a_control_character_in_an_id_with_a_json_400_naming_the_field(
    api_token, field, value
):
    before = stored()
    resp = post_api(api_client(api_token), imagegen.png_bytes(), **_fields(field, value))
    assert resp.status_code == 400, resp.content
    body = resp.json()
    assert body["code"] == "control_character"
    assert field in body["fields"]
    assert body["error"].startswith(f"{field}: ")
    assert "control or invisible character" in body["error"]
    assert stored() == before


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("field", ID_FIELDS)
def test_the_browser_form_refuses_a_control_character_in_an_id_on_that_field(
    rad_client, field, value
):
    before = stored()
    resp = post_form(rad_client, imagegen.png_bytes(), **_fields(field, value))
    assert resp.status_code == 400
    errors = resp.context["form"].errors.as_data()
    assert [e.code for e in errors[field]] == ["control_character"]
    assert "control or invisible character" in resp.content.decode()
    assert stored() == before


@pytest.mark.parametrize("value", HOSTILE + ["PAT\u202eX"])
@pytest.mark.parametrize("field, tag", DICOM_TAGS)
def test_a_dicom_tag_with_a_control_character_is_refused_through_the_api(
    api_token, field, tag, value
):
    before = stored()
    resp = post_api(api_client(api_token), _dicom_with(field, value), name="x.dcm")
    assert resp.status_code == 400, resp.content
    body = resp.json()
    assert body == {"error": body["error"], "code": "control_character", "field": field}
    assert f"The DICOM file's {tag} contains a control or invisible character" in body["error"]
    assert stored() == before
    event = AuditEvent.objects.get(action=AuditEvent.Action.UPLOAD_REJECTED)
    assert event.detail["field"] == field


@pytest.mark.parametrize("value", ["PAT\x00X", "ACC\r\nX-Evil: 1"])
@pytest.mark.parametrize("field, tag", DICOM_TAGS)
def test_a_dicom_tag_with_a_control_character_is_refused_on_the_browser_form_field(
    rad_client, field, tag, value
):
    before = stored()
    resp = post_form(rad_client, _dicom_with(field, value), name="x.dcm")
    assert resp.status_code == 400
    [message] = resp.context["form"].errors[field]
    assert message.startswith(f"The DICOM file's {tag} contains a control or invisible character")
    assert stored() == before


@pytest.mark.parametrize(
    "value", ["Doe\nJane", "Doe\r\nX-Evil: 1", "Doe\x00", "Doe\u202eenaJ", "Doe\u2028Jane"]
)
def test_a_patient_name_with_a_control_character_is_refused_on_the_api_and_the_form(
    api_token, rad_client, value
):
    before = stored()
    resp = post_api(
        api_client(api_token), imagegen.png_bytes(), patient_id="MRN-N", patient_name=value
    )
    assert resp.status_code == 400
    assert resp.json()["code"] == "control_character"
    assert "patient_name" in resp.json()["fields"]
    resp = post_form(rad_client, imagegen.png_bytes(), patient_id="MRN-N", patient_name=value)
    assert resp.status_code == 400
    assert "patient_name" in resp.context["form"].errors
    assert stored() == before


def test_a_dicom_patient_name_with_a_line_break_is_refused(api_token):
    before = stored()
    resp = post_api(
        api_client(api_token), imagegen.dicom_bytes(patient_name="Doe^Ja\nne"), name="x.dcm"
    )
    assert resp.status_code == 400
    assert resp.json()["field"] == "patient_name"
    assert "The DICOM file's PatientName" in resp.json()["error"]
    assert stored() == before


def test_ids_and_names_in_other_scripts_and_padded_with_spaces_are_accepted(api_token):
    # ZWNJ (U+200C) is part of how Persian writes names: a name keeps it, an ID would not.
    resp = post_api(
        api_client(api_token),
        imagegen.png_bytes(),
        patient_id="  MRN-Zoë-1  ",
        accession_number="ACC-Ω-1",
        patient_name="Zoë Müller-\u0645\u200c\u06cc",
    )
    assert resp.status_code == 201, resp.content
    patient = Patient.objects.get()
    assert patient.mrn == "MRN-Zoë-1"
    assert patient.name == "Zoë Müller-\u0645\u200c\u06cc"


# Invisible format characters and bidi marks that a name refuses as well (every Unicode category
# Cc, Cf, Cs, Co, Cn, Zl, Zp but ZWNJ and ZWJ): zero-width space, soft hyphen, word joiner,
# Mongolian vowel separator, Arabic letter mark, LRM, RLM, a language tag, the isolates and
# overrides, a private-use and an unassigned code point.
INVISIBLE_IN_NAMES = [
    "\u200b",
    "\u00ad",
    "\u2060",
    "\u180e",
    "\u061c",
    "\u200e",
    "\u200f",
    "\U000e0001",
    "\u202e",
    "\u2066",
    "\u2069",
    "\ufeff",
    "\ue000",
    "\U000e0080",
]


@pytest.mark.parametrize("ch", INVISIBLE_IN_NAMES, ids=lambda ch: f"U+{ord(ch):04X}")
def test_the_api_refuses_an_invisible_or_bidi_character_in_a_patient_name(api_token, ch):
    before = stored()
    resp = post_api(
        api_client(api_token), imagegen.png_bytes(), patient_id="MRN-N", patient_name=f"A{ch}B"
    )
    assert resp.status_code == 400, resp.content
    assert resp.json()["code"] == "control_character"
    assert "patient_name" in resp.json()["fields"]
    assert f"U+{ord(ch):04X}" in resp.json()["error"]
    assert stored() == before


@pytest.mark.parametrize("ch", INVISIBLE_IN_NAMES, ids=lambda ch: f"U+{ord(ch):04X}")
def test_the_browser_form_refuses_an_invisible_or_bidi_character_in_a_patient_name(rad_client, ch):
    before = stored()
    resp = post_form(rad_client, imagegen.png_bytes(), patient_id="MRN-N", patient_name=f"A{ch}B")
    assert resp.status_code == 400
    errors = resp.context["form"].errors.as_data()
    assert [e.code for e in errors["patient_name"]] == ["control_character"]
    assert stored() == before


@pytest.mark.parametrize(
    "name", ["DOE^A\x00B", "DOE\x00X^ANN", *(f"DOE^A{ch}B" for ch in INVISIBLE_IN_NAMES)], ids=repr
)
def test_a_dicom_patient_name_with_a_nul_or_invisible_character_is_refused_not_dropped(
    api_token, name
):
    before = stored()
    resp = post_api(api_client(api_token), imagegen.dicom_bytes(patient_name=name), name="x.dcm")
    assert resp.status_code == 400, resp.content
    body = resp.json()
    assert (body["code"], body["field"]) == ("control_character", "patient_name")
    assert "The DICOM file's PatientName contains a control or invisible character" in body["error"]
    assert stored() == before


def test_a_dicom_patient_name_with_a_nul_is_refused_on_the_browser_form_field(rad_client):
    before = stored()
    resp = post_form(rad_client, imagegen.dicom_bytes(patient_name="DOE^A\x00B"), name="x.dcm")
    assert resp.status_code == 400
    [message] = resp.context["form"].errors["patient_name"]
    assert message.startswith("The DICOM file's PatientName contains a control or invisible")
    assert stored() == before


@pytest.mark.parametrize(
    "name", ["\u0915\u094d\u200d\u0937", "\u0645\u200c\u06cc", "\u0d28\u0d4d\u200d"]
)
def test_a_name_keeps_zwj_and_zwnj_which_indic_and_persian_scripts_need(api_token, name):
    resp = post_api(
        api_client(api_token), imagegen.png_bytes(), patient_id="MRN-J", patient_name=name
    )
    assert resp.status_code == 201, resp.content
    assert Patient.objects.get().name == name


def test_a_dicom_patient_name_padded_with_spaces_or_nuls_is_accepted_trimmed(api_token):
    resp = post_api(
        api_client(api_token), imagegen.dicom_bytes(patient_name="DOE^JANE \x00"), name="x.dcm"
    )
    assert resp.status_code == 201, resp.content
    assert Patient.objects.get().name == "DOE JANE"
