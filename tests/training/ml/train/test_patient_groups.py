from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from tests import imagegen
from tests.training.ml.imagefolders import encode, make_patient_folder, square_image
from training.ml.train.patient_groups import (
    GroupingError,
    compile_patient_patterns,
    name_prefix,
    parse_groups_csv,
    patient_ids_by_patterns,
    patient_ids_from_csv,
    patients_in_several_splits,
    several_images_per_patient_hint,
    split_group_stats,
    union_group_ids,
)
from training.ml.train.scan import scan_image_folder
from training.ml.train.splits import duplicate_group_ids, duplicates_by_hash, stratified_split

KERMANY = Path(__file__).resolve().parents[4].parent / "shared" / "data" / "kermany-pediatric"
KERMANY_PATTERNS = [r"person(?P<patient>\d+)_", r"(?P<patient>IM-\d+)-"]


def _kermany_samples() -> list[tuple[str, int]]:
    if not KERMANY.is_dir():
        pytest.skip(f"{KERMANY} is not here")
    classes = sorted(os.listdir(KERMANY))
    return [
        (f"{name}/{file}", label)
        for label, name in enumerate(classes)
        for file in sorted(os.listdir(KERMANY / name))
    ]


def test_a_pattern_without_a_patient_group_is_refused_with_an_example() -> None:
    with pytest.raises(GroupingError, match=r"no group named 'patient'.*person\(\?P<patient>"):
        compile_patient_patterns([r"person(\d+)_"])
    with pytest.raises(GroupingError, match="not a valid regex"):
        compile_patient_patterns([r"person(?P<patient>\d+"])


def test_patterns_search_the_relative_path_and_the_first_match_names_the_patient() -> None:
    paths = [
        "PNEUMONIA/person1_bacteria_1.jpeg",
        "PNEUMONIA/person1_virus_7.jpeg",
        "NORMAL/IM-0115-0001.jpeg",
        "NORMAL/IM-0115-0002.jpeg",
        "NORMAL/unrelated.png",
        "patient7/view-a.png",
    ]
    patterns = [*KERMANY_PATTERNS, r"^patient(?P<patient>\d+)/"]

    ids = patient_ids_by_patterns(paths, patterns)

    assert ids == ["1", "1", "IM-0115", "IM-0115", None, "7"]


def test_a_groups_csv_takes_an_optional_header_and_names_the_line_of_a_bad_row() -> None:
    rows = parse_groups_csv("path,patient\nNORMAL/a.png,p1\n\nNORMAL/b.png, p1 \n")
    assert rows == [(2, "NORMAL/a.png", "p1"), (4, "NORMAL/b.png", "p1")]
    assert parse_groups_csv("NORMAL/a.png,p1\n") == [(1, "NORMAL/a.png", "p1")]

    with pytest.raises(GroupingError, match=r"line 3: 'NORMAL/a.png' is listed twice .*line 1"):
        parse_groups_csv("NORMAL/a.png,p1\nNORMAL/b.png,p2\nNORMAL/a.png,p3\n")
    with pytest.raises(GroupingError, match="line 2: expected 2 columns"):
        parse_groups_csv("NORMAL/a.png,p1\nNORMAL/b.png\n")
    with pytest.raises(GroupingError, match="line 1: '/etc/passwd' must be relative"):
        parse_groups_csv("/etc/passwd,p1\n")
    with pytest.raises(GroupingError, match="line 1: 'NORMAL/a.png' has no patient"):
        parse_groups_csv("NORMAL/a.png,\n")


def test_a_csv_row_for_a_path_that_is_not_in_the_dataset_is_refused_by_line() -> None:
    paths = ["NORMAL/a.png", "NORMAL/b.png", "PNEUMONIA/c.png"]
    rows = parse_groups_csv("NORMAL/a.png,p1\nPNEUMONIA/c.png,p1\n")
    assert patient_ids_from_csv(paths, rows) == ["p1", None, "p1"]

    typo = parse_groups_csv("NORMAL/a.png,p1\nNORMAL/bb.png,p2\n")
    with pytest.raises(GroupingError, match=r"line 2: 'NORMAL/bb.png' is not an image"):
        patient_ids_from_csv(paths, typo)
    # A file the scan could not read is known: listing it is not a typo.
    assert patient_ids_from_csv(paths, typo, known={"NORMAL/bb.png"})[0] == "p1"


def test_groups_join_samples_that_share_any_key_transitively() -> None:
    patients = ["p1", None, "p2", None, "p1"]
    duplicates = ["s0", "s1", "s1", "s3", "s4"]  # 1 and 2 are the same file

    ids = union_group_ids(5, patients, duplicates)

    assert ids[0] == ids[4]
    assert ids[1] == ids[2]
    assert len({ids[0], ids[1], ids[3]}) == 3


def test_a_grouped_split_of_a_folder_keeps_every_patient_in_one_split(tmp_path: Path) -> None:
    scan = scan_image_folder(make_patient_folder(tmp_path))
    paths = [rel for rel, _ in scan.samples]
    duplicates = duplicate_group_ids(
        len(paths), duplicates_by_hash(scan.root, scan.samples, hashes=scan.sha256)
    )
    groups = union_group_ids(
        len(paths), patient_ids_by_patterns(paths, [r"person(?P<patient>\d+)_"]), duplicates
    )

    copy, original = paths.index("NORMAL/other_copy.png"), paths.index("NORMAL/person000_0.png")
    for seed in range(5):
        split = stratified_split(scan.labels, seed=seed, group_ids=groups)
        assert patients_in_several_splits(split, groups) == set()
        assert [n for n, idx in split.items() if copy in idx] == [
            n for n, idx in split.items() if original in idx
        ]
    stats = split_group_stats(split, groups)
    assert sum(s["images"] for s in stats.values()) == len(paths)
    # 60 patients, 10 unmatched images (their own groups), the copy joins a patient.
    assert sum(s["patients"] for s in stats.values()) == 70
    assert max(s["images_per_patient_max"] for s in stats.values()) == 4
    # Ungrouped, the same split would put patients on both sides.
    image_split = stratified_split(scan.labels, seed=0)
    assert patients_in_several_splits(image_split, groups) != set()


def test_the_real_kermany_names_grouped_by_pattern_put_no_patient_in_two_splits() -> None:
    samples = _kermany_samples()
    paths = [rel for rel, _ in samples]
    labels = [label for _, label in samples]
    patients = patient_ids_by_patterns(paths, KERMANY_PATTERNS)
    assert None not in patients
    per_patient = Counter(p for p, (_, label) in zip(patients, samples, strict=True) if label == 1)
    assert sum(n for n in per_patient.values() if n > 1) == 849  # the count
    groups = union_group_ids(len(paths), patients)

    split = stratified_split(
        labels, val_fraction=0.15, test_fraction=0.15, seed=0, group_ids=groups
    )

    assert patients_in_several_splits(split, groups) == set()
    # Stratification as good as groups allow: each split within 2 points of the overall share.
    overall = sum(labels) / len(labels)
    for name, indices in split.items():
        share = sum(labels[i] for i in indices) / len(indices)
        assert abs(share - overall) < 0.02, (name, share, overall)
        assert abs(len(indices) / len(labels) - {"train": 0.7}.get(name, 0.15)) < 0.02


def test_the_real_kermany_names_look_like_several_images_per_patient() -> None:
    paths = [rel for rel, _ in _kermany_samples()]

    hint = several_images_per_patient_hint(paths)

    assert hint is not None
    assert hint.shared_images > 800
    assert "person23… (13 images)" in hint.message()


def test_unrelated_file_names_give_no_warning() -> None:
    paths = [f"NORMAL/img_{i:04d}.png" for i in range(200)]
    paths += [f"PNEUMONIA/scan-{i:05d}.jpeg" for i in range(200)]
    paths += [f"PNEUMONIA/{i * 7919 % 100003:x}-{i}.dcm" for i in range(50)]
    paths += [f"NORMAL/2024-03-{day:02d}_chest.png" for day in range(1, 3)]

    assert several_images_per_patient_hint(paths) is None


@pytest.mark.parametrize(
    ("path", "prefix"),
    [
        ("PNEUMONIA/person12_virus_3.jpeg", "person12"),
        ("NORMAL/IM-0115-0001.jpeg", "IM-0115"),
        ("NORMAL/NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427"),
        ("NORMAL/IM-0429-0001-0002.jpeg", "IM-0429-0001"),
        ("NORMAL/img_0001.png", None),
        ("NORMAL/00000001_000.png", "00000001"),
    ],
)
def test_name_prefix_stops_at_the_last_numbered_part(path: str, prefix: str | None) -> None:
    assert name_prefix(path) == prefix


def test_the_scan_records_each_dicom_file_s_patient_id(tmp_path: Path) -> None:
    for name in ("left", "right"):
        (tmp_path / name).mkdir()
    (tmp_path / "left" / "a.dcm").write_bytes(imagegen.dicom_bytes(patient_id="MRN-7", seed=1))
    (tmp_path / "right" / "b.dcm").write_bytes(imagegen.dicom_bytes(patient_id="MRN-7", seed=2))
    (tmp_path / "right" / "c.png").write_bytes(encode(square_image(1), "PNG"))

    scan = scan_image_folder(tmp_path)

    assert dict(zip([rel for rel, _ in scan.samples], scan.patient_ids, strict=True)) == {
        "left/a.dcm": "MRN-7",
        "right/b.dcm": "MRN-7",
        "right/c.png": "",
    }
