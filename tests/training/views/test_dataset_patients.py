"""The dataset page's patients per split and its warning, and the register form's patient
grouping fields (patterns, a CSV upload), errors shown on the form."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.training.ml.imagefolders import make_folder, make_patient_folder
from training.dispatch import SCAN_DATASET
from training.models import Dataset
from training.services import dataset_register

PATTERN = r"person(?P<patient>\d+)_"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _dataset_roots(settings, tmp_path):
    settings.CXR_DATASET_ROOTS = [tmp_path]


def _rows(html: str) -> dict[str, list[str]]:
    """The patient table's rows: split name -> the numbers in its cells."""
    table = html.split('data-testid="patient-table"', 1)[1].split("</table>", 1)[0]
    return {
        name: re.findall(r'<td class="num">([^<]*)</td>', cells)
        for name, cells in re.findall(r'<th scope="row">(\w+)</th>(.*?)</tr>', table)
    }


def test_the_page_shows_images_and_patients_per_split_of_a_grouped_dataset(admin_client, tmp_path):
    dataset = dataset_register(
        name="grouped", root=str(make_patient_folder(tmp_path / "p")), group_patterns=[PATTERN]
    )

    html = admin_client.get(f"/training/datasets/{dataset.pk}/").content.decode()

    rows = _rows(html)
    stats = dataset.group_stats["splits"]
    for label, name in (("Train", "train"), ("Validation", "val"), ("Test", "test")):
        s = stats[name]
        assert rows[label] == [
            str(s["images"]),
            str(s["patients"]),
            f"{s['images_per_patient_mean']:.2f}",
            str(s["images_per_patient_max"]),
        ]
    assert sum(int(r[0]) for r in rows.values()) == 157
    assert sum(int(r[1]) for r in rows.values()) == 70
    assert "grouped by pattern (<code>person(?P&lt;patient&gt;\\d+)_</code>)" in html
    assert "11 images matched no patient" in html
    assert 'data-testid="patient-warning"' not in html


def test_the_page_warns_when_names_look_grouped_but_no_grouping_was_given(admin_client, tmp_path):
    ungrouped = dataset_register(name="u", root=str(make_patient_folder(tmp_path / "p")))
    plain = dataset_register(name="plain", root=str(make_folder(tmp_path / "plain")))

    html = admin_client.get(f"/training/datasets/{ungrouped.pk}/").content.decode()
    status = admin_client.get(f"/training/datasets/{ungrouped.pk}/status/").content.decode()
    plain_html = admin_client.get(f"/training/datasets/{plain.pk}/").content.decode()

    assert 'data-testid="patient-warning"' in html and "look like several images per" in html
    assert 'data-testid="patient-warning"' in status
    assert "No patient grouping was given" in html and ">Groups</th>" in html
    assert 'data-testid="patient-warning"' not in plain_html


def _form(tmp_path, **extra):
    return {
        "name": "web",
        "root": str(tmp_path / "p"),
        "seed": "0",
        "val_fraction": "0.15",
        "test_fraction": "0.15",
        **extra,
    }


def test_the_form_registers_patterns_one_per_line_and_queues_the_scan(
    admin_client, tmp_path, sent_tasks, django_capture_on_commit_callbacks
):
    make_patient_folder(tmp_path / "p")
    with django_capture_on_commit_callbacks(execute=True):
        resp = admin_client.post(
            "/training/datasets/",
            _form(tmp_path, group_patterns=f"{PATTERN}\r\n\r\n(?P<patient>IM-\\d+)-\r\n"),
        )

    dataset = Dataset.objects.get()
    assert resp.status_code == 302
    assert dataset.group_patterns == [PATTERN, r"(?P<patient>IM-\d+)-"]
    assert [t.name for t in sent_tasks] == [SCAN_DATASET]


def test_the_form_takes_a_groups_csv_upload(admin_client, tmp_path, sent_tasks):
    make_patient_folder(tmp_path / "p")
    csv = SimpleUploadedFile("g.csv", b"path,patient\nNORMAL/other_0.png,P1\n", "text/csv")

    resp = admin_client.post("/training/datasets/", _form(tmp_path, groups_csv=csv))

    assert resp.status_code == 302
    assert Dataset.objects.get().group_csv == [[2, "NORMAL/other_0.png", "P1"]]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"group_patterns": r"person(\d+)_"}, "has no group named &#x27;patient&#x27;"),
        ({"groups_csv": b"NORMAL/other_0.png,P1\nNORMAL/other_0.png,P2\n"}, "line 2:"),
        ({"groups_csv": b"NORMAL/missing.png,P1\n"}, "line 1: &#x27;NORMAL/missing.png&#x27; is"),
        ({"groups_csv": b"\xff\xfe\x00"}, "must be UTF-8 text"),
        (
            {"group_patterns": PATTERN, "groups_csv": b"NORMAL/other_0.png,P1\n"},
            "patterns or a groups CSV, not both",
        ),
    ],
)
def test_the_form_shows_what_is_wrong_with_the_grouping_and_registers_nothing(
    admin_client, tmp_path, extra, message
):
    make_patient_folder(tmp_path / "p")
    if "groups_csv" in extra:
        extra["groups_csv"] = SimpleUploadedFile("g.csv", extra["groups_csv"], "text/csv")

    resp = admin_client.post("/training/datasets/", _form(tmp_path, **extra))

    assert resp.status_code == 400
    assert message in resp.content.decode()
    assert not Dataset.objects.exists()


def _grouping_cells(html: str) -> dict[str, str]:
    """The datasets list's "Patients grouped by" cell of each dataset, by name, tags stripped."""
    cells = {}
    for row in html.split("<tbody>", 1)[1].split("</tbody>", 1)[0].split("<tr>")[1:]:
        name = re.search(r'<a href="/training/datasets/\d+/">([^<]+)</a>', row).group(1)
        cell = row.split('data-testid="dataset-grouping">', 1)[1].split("</td>", 1)[0]
        cells[name] = cell
    return cells


def test_the_datasets_list_shows_each_datasets_grouping_and_the_warning(admin_client, tmp_path):
    from tests import imagegen

    dicom = tmp_path / "dicom"
    for label, name in enumerate(["left", "right"]):
        (dicom / name).mkdir(parents=True)
        for i in range(6):
            data = imagegen.dicom_bytes(width=24, height=24, patient_id=f"MRN-{label}{i % 3}")
            (dicom / name / f"{i}.dcm").write_bytes(data)
    dataset_register(
        name="by-pattern", root=str(make_patient_folder(tmp_path / "a")), group_patterns=[PATTERN]
    )
    csv = "path,patient\nNORMAL/other_0.png,P1\nNORMAL/other_1.png,P1\n"
    dataset_register(name="by-csv", root=str(make_patient_folder(tmp_path / "b")), groups_csv=csv)
    dataset_register(name="by-dicom", root=str(dicom))
    dataset_register(name="names-warn", root=str(make_patient_folder(tmp_path / "c")))
    dataset_register(name="plain", root=str(make_folder(tmp_path / "d")))

    html = admin_client.get("/training/datasets/").content.decode()

    cells = _grouping_cells(html)
    assert cells["by-pattern"] == '<span title="person(?P&lt;patient&gt;\\d+)_">pattern</span>'
    assert cells["by-csv"] == "<span>csv</span>"
    assert cells["by-dicom"] == "<span>dicom PatientID</span>"
    assert cells["names-warn"].startswith('none<span class="attention"')
    assert 'data-testid="dataset-patient-warning"' in cells["names-warn"]
    assert "look like several images per patient" in cells["names-warn"]
    assert cells["plain"] == "none"
