"""Tiny ImageFolder trees for the training tests: an easy, separable two-class task.

Class "left" has a bright square top-left, class "right" one bottom-right, on noise. Deterministic
for a seed; no torch import, so it is cheap.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["left", "right"]


def square_image(label: int, *, size: int = 24, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.normal(60.0, 20.0, (size, size))
    third = size // 3
    if label == 0:
        pixels[1 : 1 + third, 1 : 1 + third] += 150.0
    else:
        pixels[size - 1 - third : size - 1, size - 1 - third : size - 1] += 150.0
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str) -> bytes:
    buf = BytesIO()
    image.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def make_folder(root: Path, per_class: int = 12, *, size: int = 24, seed: int = 0) -> Path:
    """``root/left`` and ``root/right`` with ``per_class`` images each, PNG and JPEG alternating.

    File names keep the class order stable: ``left/img_000.png`` ...
    """
    for label, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            fmt = "PNG" if i % 2 == 0 else "JPEG"
            image = square_image(label, size=size, seed=seed * 10_000 + label * 1000 + i)
            suffix = "png" if fmt == "PNG" else "jpg"
            (folder / f"img_{i:03d}.{suffix}").write_bytes(encode(image, fmt))
    return root


def make_patient_folder(root: Path) -> Path:
    """NORMAL and PNEUMONIA, 30 patients each with 1 to 4 images (``person<label><nn>_<view>.png``),
    5 unmatched names per class (``other_<n>.png``) and a copy of ``NORMAL/person000_0.png``."""
    for label, name in enumerate(["NORMAL", "PNEUMONIA"]):
        folder = root / name
        folder.mkdir(parents=True)
        for patient in range(30):
            for view in range(1 + patient % 4):
                seed = label * 10_000 + patient * 10 + view
                data = encode(square_image(label, seed=seed), "PNG")
                (folder / f"person{label}{patient:02d}_{view}.png").write_bytes(data)
        for extra in range(5):
            data = encode(square_image(label, seed=90_000 + label * 10 + extra), "PNG")
            (folder / f"other_{extra}.png").write_bytes(data)
    # The same file under an unmatched name joins person000's group.
    (root / "NORMAL" / "other_copy.png").write_bytes(
        (root / "NORMAL" / "person000_0.png").read_bytes()
    )
    return root
