"""The fit tests' shared dataset: a small two-class folder, split once per module."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.ml.imagefolders import make_folder
from training.ml.train.scan import FolderScan, scan_image_folder
from training.ml.train.splits import stratified_split


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FolderScan, dict]:
    root = make_folder(tmp_path_factory.mktemp("cxr") / "ds", per_class=12)
    scan = scan_image_folder(root)
    split = stratified_split(scan.labels, val_fraction=0.25, test_fraction=0.25, seed=0)
    return root, scan, split
