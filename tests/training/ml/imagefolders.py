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
