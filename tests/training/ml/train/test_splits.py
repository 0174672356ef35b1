from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.training.ml.imagefolders import make_folder
from training.ml.train.patient_groups import GroupingError
from training.ml.train.scan import DatasetError, FolderScan, scan_image_folder
from training.ml.train.splits import (
    ScanGroups,
    check_enough_groups,
    check_split,
    duplicate_group_ids,
    duplicates_by_hash,
    stratified_split,
)


def _labels(counts: list[int]) -> list[int]:
    return [label for label, n in enumerate(counts) for _ in range(n)]


def test_a_split_is_disjoint_complete_and_deterministic_per_seed() -> None:
    labels = _labels([40, 25, 7])

    split = stratified_split(labels, seed=3)

    assert split == stratified_split(labels, seed=3)
    assert split != stratified_split(labels, seed=4)
    everything = split["train"] + split["val"] + split["test"]
    assert sorted(everything) == list(range(len(labels)))
    assert len(set(everything)) == len(everything)
    assert json.loads(json.dumps(split)) == split
    assert all(type(i) is int for i in everything)


def test_a_split_keeps_each_classes_proportions() -> None:
    labels = _labels([100, 40, 20])

    split = stratified_split(labels, val_fraction=0.15, test_fraction=0.15, seed=0)

    for part, fraction in (("val", 0.15), ("test", 0.15), ("train", 0.70)):
        per_class = Counter(labels[i] for i in split[part])
        for label, total in enumerate([100, 40, 20]):
            assert abs(per_class[label] - fraction * total) <= 1, (part, label)


def test_every_class_with_three_images_is_in_every_split() -> None:
    labels = _labels([50, 3, 4])

    split = stratified_split(labels, seed=1)

    for part in ("train", "val", "test"):
        assert {labels[i] for i in split[part]} == {0, 1, 2}, part


def test_tiny_classes_go_to_train_first_then_test() -> None:
    labels = _labels([20, 2, 1])

    split = stratified_split(labels, seed=0)

    assert Counter(labels[i] for i in split["train"])[1] == 1
    assert Counter(labels[i] for i in split["test"])[1] == 1
    assert labels.index(2) in split["train"]


def test_adding_images_to_one_class_does_not_reshuffle_another() -> None:
    before = stratified_split(_labels([30, 20]), seed=5)
    after = stratified_split(_labels([30, 20]) + [0] * 10, seed=5)

    def class_one(split: dict[str, list[int]]) -> dict[str, list[int]]:
        return {part: [i for i in idx if 30 <= i < 50] for part, idx in split.items()}

    assert class_one(before) == class_one(after)


def test_groups_never_straddle_splits() -> None:
    rng = np.random.default_rng(0)
    labels = _labels([60, 60])
    patients = [f"p{rng.integers(0, 30)}-{label}" for label in labels]

    split = stratified_split(labels, seed=2, group_ids=patients)

    where = {}
    for part, indices in split.items():
        for i in indices:
            assert where.setdefault(patients[i], part) == part, patients[i]
    assert all(split.values())
    assert sorted(sum(split.values(), [])) == list(range(len(labels)))


def test_a_zero_fraction_leaves_that_split_empty_even_with_uneven_groups() -> None:
    labels = _labels([30, 30])
    groups = [f"big-{label}" if i % 30 < 12 else f"x{i}" for i, label in enumerate(labels)]

    split = stratified_split(labels, val_fraction=0.0, test_fraction=0.2, group_ids=groups)

    assert split["val"] == []
    assert len(split["test"]) > 0 and len(split["train"]) > len(split["test"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "leave images for training"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"group_ids": ["a"]}, "group_ids has 1 entries"),
    ],
)
def test_impossible_split_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stratified_split([0, 1, 0, 1], **kwargs)


def test_duplicate_files_are_found_and_kept_in_one_split(tmp_path: Path) -> None:
    root = make_folder(tmp_path, per_class=10)
    original = (root / "left" / "img_000.png").read_bytes()
    for i in range(3):
        (root / "left" / f"copy_{i}.png").write_bytes(original)
    scan = scan_image_folder(root)
    paths = [path for path, _ in scan.samples]

    groups = duplicates_by_hash(root, scan.samples)

    assert groups == duplicates_by_hash(root, scan.samples, hashes=scan.sha256)
    assert [sorted(paths[i] for i in g) for g in groups] == [
        ["left/copy_0.png", "left/copy_1.png", "left/copy_2.png", "left/img_000.png"]
    ]
    ids = duplicate_group_ids(len(scan.samples), groups)
    for seed in range(5):
        split = stratified_split(scan.labels, seed=seed, group_ids=ids)
        parts = {part for part, idx in split.items() for i in idx if i in groups[0]}
        assert len(parts) == 1


def test_check_split_refuses_overlap_out_of_range_and_an_empty_val() -> None:
    with pytest.raises(DatasetError, match="both the train and the test"):
        check_split({"train": [0, 1], "val": [2], "test": [1]}, 4)
    with pytest.raises(DatasetError, match="refers to sample 9"):
        check_split({"train": [0, 9], "val": [2], "test": []}, 4)
    with pytest.raises(DatasetError, match="val split is empty"):
        check_split({"train": [0, 1], "val": [], "test": [2]}, 4)
    assert check_split({"train": [0, 1], "val": [2]}, 3) == {
        "train": [0, 1],
        "val": [2],
        "test": [],
    }


def _scan(labels: list[int], patient_ids: list[str]) -> FolderScan:
    names = ["a", "b"]
    return FolderScan(
        root="/nowhere",
        classes=names,
        samples=[(f"{names[label]}/{i}.dcm", label) for i, label in enumerate(labels)],
        class_counts=dict(Counter(names[label] for label in labels)),
        patient_ids=patient_ids,
    )


def test_a_grouping_that_leaves_a_class_out_of_a_split_is_refused() -> None:
    labels = _labels([6, 6])
    scan = _scan(labels, ["ANON"] * 12)
    groups = ScanGroups(["g0"] * 6 + [f"g{i}" for i in range(6, 12)], ["dicom PatientID"], 0)
    split = stratified_split(labels, group_ids=groups.group_ids)

    with pytest.raises(
        GroupingError, match=r"'a' has 6 images of 1 patient\(s\), none in val or test"
    ):
        check_enough_groups(scan, groups, split, val_fraction=0.15, test_fraction=0.15)
    # Without a patient grouping (duplicates alone) nothing is checked.
    check_enough_groups(
        scan, ScanGroups(groups.group_ids, [], 0), split, val_fraction=0.15, test_fraction=0.15
    )


def test_a_class_with_fewer_images_than_splits_is_not_blamed_on_the_grouping() -> None:
    labels = _labels([2, 6])
    scan = _scan(labels, [""] * 8)
    groups = ScanGroups([f"g{i}" for i in range(8)], ["pattern"], 0)
    split = stratified_split(labels, group_ids=groups.group_ids)

    check_enough_groups(scan, groups, split, val_fraction=0.15, test_fraction=0.15)
