"""Patient-grouped splits through the service and ``manage.py register_dataset``: patterns, a
groups CSV, the DICOM PatientID, and the warning when names look grouped but no grouping was
given."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests import imagegen
from tests.training.ml.imagefolders import make_folder, make_patient_folder
from training.ml.train.patient_groups import patients_in_several_splits
from training.models import Dataset
from training.services import DatasetRejected, dataset_register

PATTERN = r"person(?P<patient>\d+)_"


@pytest.fixture(autouse=True)
def _dataset_roots(settings, tmp_path):
    settings.CXR_DATASET_ROOTS = [tmp_path]


@pytest.fixture
def patients(tmp_path):
    return make_patient_folder(tmp_path / "patients")


def _patient_of(dataset: Dataset) -> list[str]:
    """The patient of each sample as the test folder names it (unmatched names: themselves)."""
    out = []
    for rel, _ in dataset.scan["samples"]:
        name = rel.split("/")[-1]
        out.append(name.split("_")[0] if name.startswith("person") else rel)
    return out


def _register(*args: str) -> tuple[Dataset, str]:
    out = StringIO()
    call_command("register_dataset", *args, stdout=out)
    return Dataset.objects.get(name=args[0]), out.getvalue()


def test_a_group_pattern_keeps_each_patient_in_one_split_and_stores_the_counts(db, patients):
    dataset, out = _register("grouped", str(patients), "--group-pattern", PATTERN, "--seed", "3")

    assert dataset.status == Dataset.Status.READY
    assert dataset.group_patterns == [PATTERN]
    assert dataset.grouping == "pattern"
    assert patients_in_several_splits(dataset.split, _patient_of(dataset)) == set()
    rows = {row["split"]: row for row in dataset.split_patient_rows}
    assert sum(r["images"] for r in rows.values()) == dataset.size == 157
    assert sum(r["patients"] for r in rows.values()) == 70  # 60 patients, 10 unmatched names
    assert rows["train"]["images_per_patient_max"] == 4
    assert dataset.group_stats["unmatched"] == 11  # the copy is matched only as a duplicate
    assert dataset.name_hint == ""
    assert "patients (" in out and "Grouped by pattern; 11 image(s) matched no patient." in out


def test_several_patterns_group_two_naming_schemes(db, tmp_path):
    root = make_folder(tmp_path / "two", per_class=4)
    for i, rel in enumerate(["left/img_000.png", "left/img_001.jpg"]):
        (root / rel).rename(root / "left" / f"IM-0007-000{i}.png")
    for i, rel in enumerate(["right/img_000.png", "right/img_001.jpg"]):
        (root / rel).rename(root / "right" / f"person9_virus_{i}.png")

    dataset, _ = _register(
        "two", str(root), "--group-pattern", PATTERN, "--group-pattern", r"(?P<patient>IM-\d+)-"
    )

    rows = {row["split"]: row for row in dataset.split_patient_rows}
    assert sum(r["patients"] for r in rows.values()) == 6  # 2 patients of 2, 4 single images
    assert dataset.group_stats["unmatched"] == 4


def test_a_pattern_without_a_patient_group_is_refused_before_anything_is_stored(db, patients):
    with pytest.raises(CommandError, match="no group named 'patient'"):
        _register("bad", str(patients), "--group-pattern", r"person(\d+)_")
    assert not Dataset.objects.exists()


def test_a_groups_csv_groups_by_its_rows(db, patients, tmp_path):
    csv = tmp_path / "groups.csv"
    csv.write_text(
        "path,patient\nNORMAL/other_0.png,P1\nPNEUMONIA/other_0.png,P1\nNORMAL/other_1.png,P1\n"
    )

    dataset, out = _register("csv", str(patients), "--groups", str(csv))

    assert dataset.grouping == "csv"
    assert len(dataset.group_csv) == 3
    paths = [rel for rel, _ in dataset.scan["samples"]]
    members = [paths.index(p) for p in ("NORMAL/other_0.png", "PNEUMONIA/other_0.png")]
    assert len({n for n, idx in dataset.split.items() for i in members if i in idx}) == 1
    assert "Grouped by csv" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("NORMAL/other_0.png,P1\nNORMAL/nope.png,P2\n", r"line 2: 'NORMAL/nope.png' is not a file"),
        ("NORMAL/other_0.png,P1\nNORMAL/other_0.png,P2\n", r"line 2: .* listed twice"),
        ("path,patient\nNORMAL/other_0.png\n", "line 2: expected 2 columns"),
    ],
)
def test_a_bad_groups_csv_is_refused_naming_the_line(db, patients, tmp_path, text, message):
    csv = tmp_path / "groups.csv"
    csv.write_text(text)
    with pytest.raises(CommandError, match=message):
        _register("csv", str(patients), "--groups", str(csv))
    assert not Dataset.objects.exists()


def test_patterns_and_a_csv_together_are_refused(db, patients):
    with pytest.raises(DatasetRejected, match="not both"):
        dataset_register(
            name="both", root=str(patients), group_patterns=[PATTERN], groups_csv="a,b\n"
        )


def test_dicom_files_are_grouped_by_their_patient_id(db, tmp_path):
    root = tmp_path / "dicom"
    for label, name in enumerate(["left", "right"]):
        (root / name).mkdir(parents=True)
        for i in range(6):
            data = imagegen.dicom_bytes(
                width=24, height=24, patient_id=f"MRN-{i % 3}", seed=label * 10 + i
            )
            (root / name / f"{i}.dcm").write_bytes(data)

    dataset = dataset_register(name="dicom", root=str(root))

    assert dataset.grouping == "dicom PatientID"
    ids = [f"MRN-{int(rel.split('/')[1][0]) % 3}" for rel, _ in dataset.scan["samples"]]
    assert patients_in_several_splits(dataset.split, ids) == set()
    assert sum(r["patients"] for r in dataset.split_patient_rows) == 3


def test_names_that_look_grouped_without_a_grouping_get_a_warning(db, patients, tmp_path):
    dataset, out = _register("ungrouped", str(patients))
    plain = dataset_register(name="plain", root=str(make_folder(tmp_path / "plain")))

    assert dataset.grouping == ""
    assert "look like several images per patient" in dataset.name_hint
    assert dataset.name_hint in out
    # Without patients, each image (or set of identical files) is a group.
    assert sum(r["patients"] for r in dataset.split_patient_rows) == dataset.size - 1
    assert plain.name_hint == ""


def _anonymised_dicom_folder(root, per_class: int = 6):
    """Two classes of DICOM files that all carry the PatientID "ANON", named ``<class>_<n>.dcm``."""
    for label, name in enumerate(["left", "right"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            data = imagegen.dicom_bytes(width=24, height=24, patient_id="ANON", seed=label * 10 + i)
            (root / name / f"{name}_{i}.dcm").write_bytes(data)
    return root


def test_dicom_files_that_all_carry_one_patient_id_are_refused_saying_what_to_do(db, tmp_path):
    root = _anonymised_dicom_folder(tmp_path / "anon")

    with pytest.raises(CommandError) as refused:
        _register("anon", str(root))

    message = str(refused.value)
    assert "too few patients to split" in message
    assert "'left' has 6 images of 1 patient(s), none in val or test" in message
    assert "All 12 DICOM files carry the same PatientID 'ANON'" in message
    assert "--group-pattern" in message and "--groups" in message
    assert "re-export the DICOM files with their real PatientIDs" in message
    assert Dataset.objects.get(name="anon").status == Dataset.Status.FAILED


def test_a_group_pattern_names_the_patients_of_an_anonymised_dicom_export(db, tmp_path):
    root = _anonymised_dicom_folder(tmp_path / "anon")

    dataset, _ = _register("anon", str(root), "--group-pattern", r"(?P<patient>[a-z]+_\d)")

    assert dataset.status == Dataset.Status.READY
    assert dataset.grouping == "pattern"  # the placeholder PatientID no longer groups them
    assert sum(r["patients"] for r in dataset.split_patient_rows) == 12
    assert all(dataset.split[name] for name in ("train", "val", "test"))


def test_a_pattern_that_leaves_too_few_patients_is_refused_at_the_scan(db, patients):
    # Every name matches, and the class folder is the "patient": one per class.
    failed = dataset_register(
        name="coarse", root=str(patients), group_patterns=[r"^(?P<patient>[A-Z]+)/"]
    )

    assert failed.status == Dataset.Status.FAILED
    assert "Grouping by pattern leaves too few patients" in failed.error
    assert "'NORMAL' has 79 images of 1 patient(s), none in val or test" in failed.error
    assert "Check the group pattern" in failed.error and "re-export" not in failed.error
    assert not failed.split
