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
    "OVERLAY_LONG_SIDE",
    "Preprocessing",
    "batch_gray_input",
    "batch_model_input",
    "jpeg_draft",
    "reading_long_side",
    "reduce_for_reading",
    "normalise",
    "to_display_image",
    "to_gray_input",
    "to_grayscale_array",
    "to_model_input",
]

# The long side of the overlays radiologists review (training.ml.infer.render.render_overlay).
OVERLAY_LONG_SIDE = 1024

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


def reading_long_side(prep: Preprocessing) -> int:
    """The fewest pixels an X-ray keeps on its long side when it is read for a model.

    Enough for the overlay (``OVERLAY_LONG_SIDE``) and four times the model's input, so that the
    antialiased resize in :func:`to_model_input` still does the last, larger step. Training and
    the workers read images through the same two steps (:func:`jpeg_draft` while decoding, then
    :func:`reduce_for_reading`), so a model sees the same pixels in both.
    """
    return max(OVERLAY_LONG_SIDE, 4 * prep.input_size)


def jpeg_draft(image: Image.Image, long_side: int) -> int:
    """Before ``image`` (a JPEG, not yet loaded) is decoded: let the decoder reduce it by 2, 4 or 8
    (DCT scaling, most of the decoding skipped) as far as its long side stays ``long_side`` or
    more. Returns the reduction (1: decoded in full). The mode is kept. Other formats: 1.

    A 2,500-pixel radiograph read for a 224-pixel model is decoded at half size in ~5 ms instead
    of ~8, and shrinks to the model's input in ~2 ms instead of ~17: the whole-size float copy
    and its antialiased resize were the costliest step of a prediction. Every step is still
    decoded (Huffman), so a damaged or truncated file still fails to load.
    """
    if image.format != "JPEG" or long_side < 1:
        return 1
    width, height = image.size
    scale = next((s for s in (8, 4, 2) if max(width, height) // s >= long_side), 1)
    if scale > 1:
        # Pillow picks the largest of 8, 4, 2, 1 not above min(width // w, height // h).
        image.draft(image.mode, (width // scale, height // scale))
    return scale


def reduce_for_reading(image: Image.Image, long_side: int) -> Image.Image:
    """A decoded image shrunk by the largest whole factor that keeps ``long_side`` pixels or more
    on its long side, each output pixel the mean of a factor x factor block (Pillow's
    ``reduce``); unchanged when no factor of 2 or more fits (a JPEG :func:`jpeg_draft` reduced
    is already there). For what the decoder could not reduce: PNGs, DICOM, colour JPEGs.
    """
    factor = max(image.size) // max(1, long_side)
    return image.reduce(factor) if factor > 1 else image


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


def to_gray_input(image: Image.Image, prep: Preprocessing) -> torch.Tensor:
    """A 1xSxS float32 tensor in [0, 1]: the grayscale picture resized to the model's input.

    The whole image is resized to ``input_size`` x ``input_size`` without keeping the aspect ratio
    and without cropping: a centre crop would cut off the lung edges and costophrenic angles.
    This is the costly, per-image half of :func:`to_model_input` (a worker's CPU processes do it
    and hand the result to a model server, :mod:`training.ml.infer.server`); :func:`normalise`
    is the other half.
    """
    import torch
    from torch.nn import functional as F

    gray = torch.from_numpy(to_grayscale_array(image))[None, None]
    size = prep.input_size
    if gray.shape[-2:] != (size, size):
        gray = F.interpolate(
            gray, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    return gray.clamp_(0.0, 1.0)[0]


def normalise(gray: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """Nx1xSxS (or 1xSxS) grayscale in [0, 1] -> Nx3xSxS (3xSxS) model input, on ``gray``'s
    device: copied to 3 channels, less the mean, over the std (float32, in that order)."""
    import torch

    shape = (3, 1, 1) if gray.ndim == 3 else (1, 3, 1, 1)
    mean = torch.tensor(prep.mean, dtype=torch.float32, device=gray.device).view(shape)
    std = torch.tensor(prep.std, dtype=torch.float32, device=gray.device).view(shape)
    expanded = gray.expand(*gray.shape[:-3], 3, *gray.shape[-2:])
    return ((expanded - mean) / std).contiguous()


def to_model_input(image: Image.Image, prep: Preprocessing) -> torch.Tensor:
    """A 3xHxW float32 tensor: grayscale copied to 3 channels, squashed, normalised
    (:func:`to_gray_input`, then :func:`normalise`)."""
    return normalise(to_gray_input(image, prep), prep)


def batch_gray_input(images: Sequence[Image.Image], prep: Preprocessing) -> torch.Tensor:
    """Nx1xSxS float32 tensor in [0, 1] for a list of images (:func:`to_gray_input`)."""
    import torch

    if not images:
        raise ValueError("batch_gray_input needs at least one image.")
    return torch.stack([to_gray_input(image, prep) for image in images])


def batch_model_input(images: Sequence[Image.Image], prep: Preprocessing) -> torch.Tensor:
    """N x 3 x H x W float32 tensor for a list of images."""
    if not images:
        raise ValueError("batch_model_input needs at least one image.")
    return normalise(batch_gray_input(images, prep), prep)
