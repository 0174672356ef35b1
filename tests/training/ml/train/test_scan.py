from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import imagegen
from tests.training.ml.imagefolders import CLASSES, make_folder, square_image
from training.ml.architectures import MLError
from training.ml.data import (
    CXRDataset,
    DatasetError,
    FolderScan,
    check_split,
    class_weights,
    duplicate_group_ids,
    duplicates_by_hash,
    group_ids_by_pattern,
    make_loader,
    scan_image_folder,
    stratified_split,
    weighted_sampler,
)
from training.ml.preprocessing import Preprocessing, to_model_input
from training.ml.transforms import eval_transform


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    """Two classes of good images plus a DICOM, a truncated PNG, notes and hidden files."""
    root = make_folder(tmp_path / "ds", per_class=4)
    (root / "right" / "scan.dcm").write_bytes(imagegen.dicom_bytes(width=24, height=24))
    (root / "left" / "broken.png").write_bytes(imagegen.truncated_png())
    (root / "left" / "notes.txt").write_text("reading notes, not an image")
    (root / "left" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "left" / "no_extension").write_bytes(imagegen.png_bytes(width=20, height=20))
    (root / ".cache").mkdir()
    (root / "README.md").write_text("dataset readme")
    (root / "right" / "nested").mkdir()
    (root / "right" / "nested" / "deep.png").write_bytes(imagegen.png_bytes(width=20, height=20))
    return root


# --- scanning ----------------------------------------------------------------------------------


def test_scan_finds_classes_images_by_content_and_lists_what_it_left_out(
    messy_folder: Path,
) -> None:
    scan = scan_image_folder(messy_folder)

    assert scan.classes == ["left", "right"]
    paths = [path for path, _ in scan.samples]
    assert "right/scan.dcm" in paths  # DICOM found by its content
    assert "left/no_extension" in paths  # a PNG without an extension is still a PNG
    assert "right/nested/deep.png" in paths  # sub-folders of a class belong to it
    assert dict(scan.samples)["right/scan.dcm"] == 1
    assert scan.class_counts == {"left": 5, "right": 6}
    assert scan.formats == {"PNG": 6, "JPEG": 4, "DICOM": 1}

    assert [path for path, _ in scan.unreadable] == ["left/broken.png"]
    assert "damaged or incomplete" in scan.unreadable[0][1]
    assert "broken.png" not in " ".join(paths)
    assert {"left/notes.txt", "left/.DS_Store", ".cache", "README.md"} <= set(scan.skipped)
    assert len(scan.sha256) == len(scan.samples) and all(len(h) == 64 for h in scan.sha256)


def test_scan_samples_are_in_a_stable_class_then_path_order(messy_folder: Path) -> None:
    first = scan_image_folder(messy_folder)
    second = scan_image_folder(messy_folder)

    assert first.samples == second.samples
    assert first.samples == sorted(first.samples, key=lambda s: (s[1], s[0]))


def test_a_fast_scan_only_sniffs_so_a_damaged_file_fails_later_with_its_name(
    messy_folder: Path,
) -> None:
    scan = scan_image_folder(messy_folder, verify=False)

    assert scan.unreadable == [] and scan.sha256 == [] and not scan.verified
    index = [path for path, _ in scan.samples].index("left/broken.png")
    dataset = CXRDataset(messy_folder, scan.samples, [index])
    with pytest.raises(DatasetError, match="broken.png"):
        dataset[0]


def test_a_scan_survives_a_json_round_trip(messy_folder: Path) -> None:
    scan = scan_image_folder(messy_folder)

    again = FolderScan.from_dict(json.loads(json.dumps(scan.to_dict())))

    assert again == scan


def test_scanning_a_missing_folder_says_so(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        scan_image_folder(tmp_path / "nowhere")


def test_scanning_a_folder_with_one_class_asks_for_two(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "a.png").write_bytes(imagegen.png_bytes(width=16, height=16))

    with pytest.raises(DatasetError, match="at least 2 class sub-folders.*'only'"):
        scan_image_folder(tmp_path)


def test_a_class_folder_without_readable_images_is_named(tmp_path: Path) -> None:
    make_folder(tmp_path, per_class=2)
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "empty_class" / "bad.jpg").write_bytes(imagegen.truncated_jpeg())
    (tmp_path / "empty_class" / "notes.txt").write_text("x")

    with pytest.raises(DatasetError, match=r"'empty_class' \(1 unreadable\)") as info:
        scan_image_folder(tmp_path)
    assert isinstance(info.value, MLError)


# --- splitting ---------------------------------------------------------------------------------


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


def test_group_ids_by_pattern_groups_a_patients_images() -> None:
    samples = [
        ("PNEUMONIA/person1_bacteria_1.jpeg", 1),
        ("PNEUMONIA/person1_virus_7.jpeg", 1),
        ("PNEUMONIA/person22_bacteria_3.jpeg", 1),
        ("NORMAL/IM-0001.jpeg", 0),
    ]

    ids = group_ids_by_pattern(samples, r"^(person\d+)_")

    assert ids[0] == ids[1] == "person1"
    assert ids[2] == "person22"
    assert ids[3] not in ids[:3]


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


# --- loading -----------------------------------------------------------------------------------


def test_the_dataset_gives_model_tensors_and_labels_for_the_chosen_indices(
    messy_folder: Path,
) -> None:
    scan = scan_image_folder(messy_folder)
    prep = Preprocessing(input_size=32)
    dicom = [path for path, _ in scan.samples].index("right/scan.dcm")
    dataset = CXRDataset(messy_folder, scan.samples, [0, dicom], eval_transform(prep))

    tensor, label = dataset[1]

    assert len(dataset) == 2 and dataset.labels == [0, 1]
    assert label == 1 and tensor.shape == (3, 32, 32) and tensor.dtype == torch.float32
    image = dataset.image(1)
    assert image.mode == "L"
    assert torch.equal(tensor, to_model_input(image, prep))


def test_the_lru_cache_keeps_at_most_cache_size_decoded_images(tmp_path: Path) -> None:
    root = make_folder(tmp_path, per_class=3)
    scan = scan_image_folder(root)
    dataset = CXRDataset(root, scan.samples, cache_size=2)

    first = dataset.image(0)
    assert dataset.image(0) is first  # served from the cache
    dataset.image(1)
    dataset.image(2)

    assert len(dataset._cache) == 2
    assert dataset.image(0) is not first  # evicted, decoded again
    assert CXRDataset(root, scan.samples).image(0) is not CXRDataset(root, scan.samples).image(0)


def test_out_of_range_indices_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="out of range"):
        CXRDataset(tmp_path, [("a.png", 0)], [0, 3])


def test_the_loader_batches_and_shuffles_reproducibly(tmp_path: Path) -> None:
    root = make_folder(tmp_path, per_class=5)
    scan = scan_image_folder(root)
    dataset = CXRDataset(root, scan.samples, transform=eval_transform(Preprocessing(input_size=16)))

    def order(seed: int) -> list[int]:
        loader = make_loader(dataset, batch_size=4, shuffle=True, seed=seed)
        return [int(y) for _, labels in loader for y in labels]

    loader = make_loader(dataset, batch_size=4)
    inputs, labels = next(iter(loader))
    assert inputs.shape == (4, 3, 16, 16) and labels.tolist() == [0, 0, 0, 0]
    assert loader.pin_memory is torch.cuda.is_available()
    assert order(1) == order(1)
    assert sorted(order(1)) == sorted(scan.labels)
    with pytest.raises(ValueError, match="shuffle=True or a sampler"):
        make_loader(dataset, batch_size=2, shuffle=True, sampler=weighted_sampler(scan.labels))


def test_class_weights_are_inverse_frequency_with_mean_one_per_image() -> None:
    labels = [0, 0, 0, 1]

    weights = class_weights(labels, 3)

    assert torch.allclose(weights, torch.tensor([4 / 6, 4 / 2, 1.0]))
    per_image = weights[torch.tensor(labels)]
    assert per_image.mean().item() == pytest.approx(1.0)


def test_the_weighted_sampler_draws_classes_equally_often() -> None:
    labels = [0] * 90 + [1] * 10
    generator = torch.Generator().manual_seed(0)

    drawn = list(weighted_sampler(labels, num_samples=4000, generator=generator))

    share = sum(labels[i] for i in drawn) / len(drawn)
    assert 0.45 < share < 0.55
    assert len(list(weighted_sampler(labels))) == 100


def test_square_images_differ_by_class() -> None:
    left = np.asarray(square_image(0), dtype=float)
    right = np.asarray(square_image(1), dtype=float)
    assert left[:8, :8].mean() > right[:8, :8].mean() + 100
    assert CLASSES == ["left", "right"]


def test_the_training_modules_import_without_django() -> None:
    # data.py uses diagnosis.imaging: it must stay Django-free for the ML core to stay so.
    root = Path(__file__).resolve().parents[3]
    code = (
        "import sys\n"
        "import training.ml.train\n"  # and with it data, transforms, metrics, calibration
        "assert not [m for m in sys.modules if m.split('.')[0] == 'django'], 'django imported'\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(root)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
