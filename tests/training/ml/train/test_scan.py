from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests import imagegen
from tests.training.ml.imagefolders import make_folder
from training.ml.errors import MLError
from training.ml.train.dataset import CXRDataset
from training.ml.train.scan import DatasetError, FolderScan, scan_image_folder


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


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


# --- loading -----------------------------------------------------------------------------------
