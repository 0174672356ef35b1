"""De-identified exports of read studies into a training dataset (issue #25 item 4)."""

from __future__ import annotations

import csv
import json
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from django.core.management import CommandError, call_command

from cxrweb.audit.models import AuditEvent
from diagnosis import services
from diagnosis.export_models import DatasetExport
from diagnosis.services.exports import ExportRejected, dataset_export_create, dataset_export_run
from tests import imagegen
from training.models import Dataset

pytestmark = pytest.mark.django_db

MRN_PREFIX = "MRN-SECRET-"


@pytest.fixture
def export_root(settings, tmp_path) -> Path:
    settings.CXR_DATASET_ROOTS = [tmp_path / "datasets"]
    settings.CXR_EXPORT_ROOT = tmp_path / "datasets" / "exports"
    settings.CXR_PSEUDONYM_KEY = "test-pseudonym-key"
    (tmp_path / "datasets").mkdir()
    return settings.CXR_EXPORT_ROOT


def _dicom(mrn: str, accession: str, seed: int, **kw) -> bytes:
    return imagegen.dicom_bytes(
        patient_id=mrn,
        patient_name="Secretname^Jane",
        birth_date="19610203",
        accession=accession,
        seed=seed,
        **kw,
    )


def _read_study(user, *, mrn: str, accession: str, seed: int, label: str, dicom: bool = True):
    data = _dicom(mrn, accession, seed) if dicom else imagegen.png_bytes(seed=seed)
    result = services.study_upload(
        uploaded_by=user,
        data=data,
        patient_id=mrn if not dicom else "",
        accession_number=accession if not dicom else "",
    )
    study = result.study
    services.reading_sign(study=study, radiologist=user, final_label=label)
    return study


def _cohort(user, n_per_class: int = 8) -> list[int]:
    """Patients with one read study each, half NORMAL, half PNEUMONIA; every third a PNG."""
    ids = []
    for i in range(2 * n_per_class):
        label = "NORMAL" if i % 2 == 0 else "PNEUMONIA"
        study = _read_study(
            user,
            mrn=f"{MRN_PREFIX}{i:03d}",
            accession=f"ACC-SECRET-{i:03d}",
            seed=i,
            label=label,
            dicom=i % 3 != 0,
        )
        ids.append(study.pk)
    return ids


def test_an_export_is_de_identified_grouped_by_patient_and_registered(radiologist, export_root):
    ids = _cohort(radiologist)
    export = dataset_export_create(name="site-a", study_ids=ids, actor=radiologist, enqueue=False)
    export = dataset_export_run(export_id=export.pk)

    assert export.status == DatasetExport.Status.DONE, export.error
    assert export.images == len(ids) and export.patients == len(ids)
    assert export.class_counts == {"NORMAL": 8, "PNEUMONIA": 8}
    folder = export_root / "site-a"
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".dcm", ".png"))
    assert len(files) == len(ids)
    for path in files:
        raw = path.read_bytes()
        assert MRN_PREFIX.encode() not in raw and b"Secretname" not in raw
        assert b"ACC-SECRET" not in raw and b"19610203" not in raw
        if path.suffix == ".dcm":
            ds = pydicom.dcmread(path)
            assert ds.PatientIdentityRemoved == "YES"
            assert ds.PatientID == path.name.split("_")[0] == str(ds.PatientName)
            assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    for side in ("groups.csv", "manifest.json"):
        text = (folder / side).read_text()
        assert MRN_PREFIX not in text and "ACC-SECRET" not in text

    dataset = Dataset.objects.get(name="site-a")
    assert export.dataset == dataset and dataset.status == Dataset.Status.READY
    assert dataset.grouping == "csv"
    # No patient key in two splits.
    rows = {r["path"]: r["patient"] for r in csv.DictReader((folder / "groups.csv").open())}
    samples = dataset.scan["samples"]
    owner = {}
    for split, indices in dataset.split.items():
        for i in indices:
            patient = rows[samples[i][0]]
            assert owner.setdefault(patient, split) == split
    event = AuditEvent.objects.get(action=AuditEvent.Action.DATASET_EXPORT)
    assert event.username == radiologist.username and event.detail["studies"] == sorted(ids)


def test_the_same_patient_gets_the_same_key_in_two_exports(radiologist, export_root):
    first = _read_study(radiologist, mrn="MRN-SECRET-K", accession="A-1", seed=1, label="NORMAL")
    second = _read_study(radiologist, mrn="MRN-SECRET-K", accession="A-2", seed=2, label="NORMAL")
    keys = []
    for name, study in (("one", first), ("two", second)):
        export = dataset_export_create(
            name=name, study_ids=[study.pk], actor=radiologist, enqueue=False
        )
        dataset_export_run(export_id=export.pk)
        (path,) = (export_root / name).rglob("*.dcm")
        keys.append(pydicom.dcmread(path).PatientID)
    assert keys[0] == keys[1] and keys[0].startswith("P")


def test_burned_in_annotation_other_and_unread_studies_are_left_out_amendments_count(
    radiologist, second_radiologist, export_root
):
    ds = pydicom.dcmread(BytesIO(_dicom("MRN-SECRET-B", "ACC-B", 3)))
    ds.BurnedInAnnotation = "YES"
    buf = BytesIO()
    ds.save_as(buf)
    burned = services.study_upload(uploaded_by=radiologist, data=buf.getvalue()).study
    services.reading_sign(study=burned, radiologist=radiologist, final_label="NORMAL")
    other = services.study_upload(uploaded_by=radiologist, data=_dicom("MRN-O", "O", 4)).study
    services.reading_sign(
        study=other, radiologist=radiologist, final_label="other", notes="pneumothorax"
    )
    amended = _read_study(radiologist, mrn="MRN-SECRET-A", accession="AM", seed=6, label="NORMAL")
    services.reading_sign(
        study=amended,
        radiologist=second_radiologist,
        final_label="PNEUMONIA",
        amends=amended.readings.get(),
    )
    unread = services.study_upload(uploaded_by=radiologist, data=_dicom("MRN-U", "U", 5)).study

    export = dataset_export_create(
        name="left-out",
        study_ids=[burned.pk, other.pk, amended.pk, unread.pk],
        actor=radiologist,
        enqueue=False,
    )
    export = dataset_export_run(export_id=export.pk)

    reasons = sorted(item["reason"] for item in export.excluded)
    assert any("Burned In Annotation is YES" in r for r in reasons)
    assert "no signed reading" in reasons and any("'other'" in r for r in reasons)
    assert export.images == 1 and export.class_counts == {"PNEUMONIA": 1}
    assert export.status == DatasetExport.Status.FAILED  # one study cannot fill three splits
    manifest = json.loads((export_root / "left-out" / "manifest.json").read_text())
    assert len(manifest["excluded"]) == 3


def test_too_few_patients_keeps_the_files_and_says_how_to_register_later(radiologist, export_root):
    study = _read_study(radiologist, mrn="MRN-SECRET-1", accession="ONE", seed=1, label="NORMAL")
    export = dataset_export_create(
        name="tiny", study_ids=[study.pk], actor=radiologist, enqueue=False
    )
    export = dataset_export_run(export_id=export.pk)
    assert export.status == DatasetExport.Status.FAILED and export.images == 1
    assert "needs at least 2 class sub-folders" in export.error
    assert "register_dataset" in export.error and (export_root / "tiny" / "groups.csv").exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [("../escape", "Name the export"), ("", "Name the export"), ("dup", "already exists")],
)
def test_bad_names_are_refused(radiologist, export_root, name, message):
    study = _read_study(radiologist, mrn="MRN-SECRET-N", accession="N", seed=1, label="NORMAL")
    dataset_export_create(name="dup", study_ids=[study.pk], actor=radiologist, enqueue=False)
    with pytest.raises(ExportRejected, match=message):
        dataset_export_create(name=name, study_ids=[study.pk], actor=radiologist, enqueue=False)


def test_an_export_root_outside_the_dataset_roots_is_refused(radiologist, export_root, settings):
    settings.CXR_EXPORT_ROOT = "/tmp/not-a-dataset-root"
    study = _read_study(radiologist, mrn="MRN-SECRET-R", accession="R", seed=1, label="NORMAL")
    with pytest.raises(ExportRejected, match="not under any of CXR_DATASET_ROOTS"):
        dataset_export_create(name="x", study_ids=[study.pk], actor=radiologist, enqueue=False)
    assert not DatasetExport.objects.exists()


def test_the_command_exports_every_read_study(radiologist, export_root, capsys):
    _cohort(radiologist, n_per_class=6)
    call_command("export_dataset", "cmd-export", "--all-read", "--by", radiologist.username)
    out = capsys.readouterr().out
    assert "Exported 12 images of 12 studies" in out and "registered as dataset" in out
    with pytest.raises(CommandError, match="No active user"):
        call_command("export_dataset", "other", "--all-read", "--by", "nobody")


def test_the_page_queues_an_export_for_the_training_worker(
    client, admin_user, radiologist, export_root, sent_tasks, django_capture_on_commit_callbacks
):
    ids = _cohort(radiologist, n_per_class=2)
    client.force_login(admin_user)
    page = client.get("/exports/")
    assert page.status_code == 200
    assert page.content.count(b'name="study"') == len(ids)
    viewed = AuditEvent.objects.filter(action=AuditEvent.Action.VIEW_STUDY).latest("pk")
    assert (
        sorted(viewed.detail["studies"]) == sorted(ids) and viewed.username == admin_user.username
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/exports/", {"name": "from-page", "study": ids[:3]})
    assert response.status_code == 302
    export = DatasetExport.objects.get(name="from-page")
    assert export.study_ids == sorted(ids[:3]) and export.created_by == admin_user
    assert [t.name for t in sent_tasks] == ["diagnosis.tasks.run_dataset_export"]
    refused = client.post("/exports/", {"name": "../x", "study": ids[:1]})
    assert refused.status_code == 200 and b"Name the export" in refused.content


def test_radiologists_cannot_export(client, radiologist, export_root):
    client.force_login(radiologist)
    assert client.get("/exports/").status_code == 403
    assert client.post("/exports/", {"name": "x", "study": [1]}).status_code == 403
    assert not DatasetExport.objects.exists()
