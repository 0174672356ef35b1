"""Turning an X-ray image into model input, the same way for training and inference.

Importing this module does not import torch: :class:`Preprocessing` is also used to validate and
store settings in processes that never run a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

__all__ = [
    "Preprocessing",
    "batch_model_input",
    "to_display_image",
    "to_grayscale_array",
    "to_model_input",
]

# Modes whose pixels are not 8-bit: Pillow's convert("L") clips them at 255 instead of scaling.
_WIDE_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})


@dataclass(frozen=True)
class Preprocessing:
    """How images are fed to a model; stored with the model (checkpoint meta and ModelVersion)."""

    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        size = self.input_size
        if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 4096:
            raise ValueError(f"input_size must be an integer from 16 to 4096, got {size!r}.")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 3:
                raise ValueError(f"{name} must be 3 numbers (one per RGB channel), got {value!r}.")
            numbers = tuple(float(v) for v in value)
            if not all(math.isfinite(v) for v in numbers):
                raise ValueError(f"{name} must be finite numbers, got {value!r}.")
            object.__setattr__(self, name, numbers)
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std!r}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists, not tuples)."""
        return {"input_size": self.input_size, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`. Unknown keys are an error: a typo must not mean 224."""
        if not isinstance(d, Mapping):
            raise ValueError(f"Preprocessing must be a dict, got {type(d).__name__}.")
        unknown = set(d) - {"input_size", "mean", "std"}
        if unknown:
            raise ValueError(
                f"Unknown preprocessing keys {sorted(unknown)}; expected input_size, mean, std."
            )
        return cls(**dict(d))


def to_grayscale_array(image: Image.Image) -> np.ndarray:
    """The image as a float32 HxW array in [0, 1], whatever its mode.

    8-bit images are divided by 255 (like torchvision's ToTensor). 16-bit and 32-bit images
    (I;16, I, F: DICOM-derived PNG/TIFF) are min-max scaled, because their useful range is rarely
    the full 0-65535 and Pillow's own conversion would clip them at 255. Transparent pixels are
    composited on black (the background of an X-ray).
    """
    if image.mode in _WIDE_MODES:
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
            return np.zeros(values.shape, dtype=np.float32)
        return (values - low) / (high - low)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "L":
        try:
            image = image.convert("L")
        except ValueError:  # modes Pillow cannot convert to L directly (e.g. LAB, HSV)
            image = image.convert("RGB").convert("L")
    return np.asarray(image, dtype=np.float32) / 255.0


def to_display_image(image: Image.Image) -> Image.Image:
    """An 8-bit grayscale (mode L) copy for display, scaled like :func:`to_grayscale_array`."""
    if image.mode == "L":
        return image.copy()
    gray = to_grayscale_array(image)
    return Image.fromarray(np.rint(gray * 255.0).astype(np.uint8))


def to_model_input(image: Image.Image, prep: Preprocessing) -> torch.Tensor:
    """A 3xHxW float32 tensor: grayscale copied to 3 channels, squashed, normalised.

    The whole image is resized to ``input_size`` x ``input_size`` without keeping the aspect ratio
    and without cropping: a centre crop would cut off the lung edges and costophrenic angles.
    """
    import torch
    from torch.nn import functional as F

    gray = torch.from_numpy(to_grayscale_array(image))[None, None]
    size = prep.input_size
    if gray.shape[-2:] != (size, size):
        gray = F.interpolate(
            gray, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    gray = gray.clamp_(0.0, 1.0)[0]  # 1xHxW
    mean = torch.tensor(prep.mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(prep.std, dtype=torch.float32)[:, None, None]
    return ((gray.expand(3, size, size) - mean) / std).contiguous()


def batch_model_input(images: Sequence[Image.Image], prep: Preprocessing) -> torch.Tensor:
    """N x 3 x H x W float32 tensor for a list of images."""
    import torch

    if not images:
        raise ValueError("batch_model_input needs at least one image.")
    return torch.stack([to_model_input(image, prep) for image in images])
