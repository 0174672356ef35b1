from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from tests import imagegen
from tests.training.ml.imagefolders import make_folder
from tests.training.ml.samples import CLASSES
from training.ml.models.architectures import build_model


@pytest.fixture(scope="module")
def fresh_model() -> Callable[[str], nn.Module]:
    """A copy of a randomly initialised 3-class model per architecture, built once per test module
    (VGG16 takes seconds)."""
    cache: dict[str, nn.Module] = {}

    def make(arch: str) -> nn.Module:
        if arch not in cache:
            torch.manual_seed(0)
            cache[arch] = build_model(arch, len(CLASSES))
        return copy.deepcopy(cache[arch])

    return make


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
