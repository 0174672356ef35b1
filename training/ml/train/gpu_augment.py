"""Batched augmentation and normalisation on the training device (CPU or GPU).

The same "cxr" policy as :mod:`training.ml.train.transforms` (a few degrees of rotation, a little shift
and zoom around the centre with black filling the border, brightness then contrast jitter, an
gamma jitter, an opt-in horizontal flip), applied to a whole batch of cached uint8 images at once with torch ops
(``affine_grid``/``grid_sample``), so a GPU is not starved by per-image work on the CPU.

The random parameters are drawn on the CPU from a generator of their own, a fixed number per
batch, so a seed gives the same augmentations on any device and whatever thread decoded the images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..preprocessing import Preprocessing
from .transforms import (
    AUGMENTATIONS,
    BRIGHTNESS,
    CONTRAST,
    GAMMA,
    ROTATION_DEGREES,
    SCALE,
    TRANSLATE,
    gamma_range,
)

__all__ = ["AugmentParams", "BatchAugment", "affine_theta", "normalize_batch"]


@dataclass
class AugmentParams:
    """One value per image: angle (degrees), zoom, shift (fractions of width and height),
    brightness and contrast factors, whether to flip, and the gamma exponent (None: no gamma)."""

    angle: torch.Tensor
    zoom: torch.Tensor
    tx: torch.Tensor
    ty: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    flip: torch.Tensor
    gamma: torch.Tensor | None = None


def affine_theta(params: AugmentParams) -> torch.Tensor:
    """``N x 2 x 3`` matrices for ``F.affine_grid`` (square images, ``align_corners=False``).

    The same mapping as :class:`training.ml.train.transforms.RandomAffine` (output pixel back to input:
    ``in = C + (R(-a) / zoom)(out - C - t)``) in normalised coordinates, where the centre is 0
    and a shift by a fraction ``f`` of the width is ``2 f``.
    """
    angle = params.angle.double() * (math.pi / 180.0)
    cos, sin = torch.cos(angle) / params.zoom.double(), torch.sin(angle) / params.zoom.double()
    tx, ty = 2.0 * params.tx.double(), 2.0 * params.ty.double()
    theta = torch.stack(
        [
            torch.stack([cos, sin, -(cos * tx + sin * ty)], dim=1),
            torch.stack([-sin, cos, -(-sin * tx + cos * ty)], dim=1),
        ],
        dim=1,
    )
    return theta.float()


def normalize_batch(gray: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """``N x 1 x S x S`` floats in [0, 1] -> ``N x 3 x S x S`` normalised with the model's mean/std
    (channels_last on CUDA, the layout cuDNN's bf16 convolutions are fastest in)."""
    mean = torch.tensor(prep.mean, dtype=torch.float32, device=gray.device)[None, :, None, None]
    std = torch.tensor(prep.std, dtype=torch.float32, device=gray.device)[None, :, None, None]
    out = (gray.clamp(0.0, 1.0).expand(-1, 3, -1, -1) - mean) / std
    if gray.device.type == "cuda":
        return out.contiguous(memory_format=torch.channels_last)
    return out.contiguous()


class BatchAugment:
    """uint8 ``N x S x S`` (any device) -> normalised float ``N x 3 x S x S`` on that device.

    ``augment="none"`` and ``hflip=False`` give the evaluation input: the cached pixels / 255,
    normalised. ``generator`` draws the random parameters (CPU); seed it for reproducible runs.
    """

    def __init__(
        self,
        prep: Preprocessing,
        *,
        augment: str = "cxr",
        hflip: bool = False,
        gamma: float = GAMMA,
        generator: torch.Generator | None = None,
    ) -> None:
        if augment not in AUGMENTATIONS:
            raise ValueError(f"Unknown augmentation {augment!r}; choose one of {AUGMENTATIONS}.")
        self.log_gamma = gamma_range(gamma)
        self.gamma = float(gamma)
        self.prep = prep
        self.augment = augment
        self.hflip = bool(hflip)
        self.generator = generator if generator is not None else torch.Generator()

    @property
    def random(self) -> bool:
        return self.augment == "cxr" or self.hflip

    def draw(self, n: int) -> AugmentParams:
        """The parameters of ``n`` images: always 8 draws of ``n`` values, in a fixed order."""
        u = torch.rand(8, n, generator=self.generator, dtype=torch.float64)

        def span(row: int, low: float, high: float) -> torch.Tensor:
            return (low + (high - low) * u[row]).float()

        return AugmentParams(
            angle=span(0, -ROTATION_DEGREES, ROTATION_DEGREES),
            zoom=span(1, *SCALE),
            tx=span(2, -TRANSLATE[0], TRANSLATE[0]),
            ty=span(3, -TRANSLATE[1], TRANSLATE[1]),
            brightness=span(4, 1.0 - BRIGHTNESS, 1.0 + BRIGHTNESS),
            contrast=span(5, 1.0 - CONTRAST, 1.0 + CONTRAST),
            flip=u[6] < 0.5,
            gamma=torch.exp(span(7, *self.log_gamma)) if self.gamma else None,
        )

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        gray = pixels.unsqueeze(1).float().div_(255.0)
        if self.random:
            gray = self.apply(gray, self.draw(gray.shape[0]))
        return normalize_batch(gray, self.prep)

    def apply(self, gray: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """The policy with given parameters on ``N x 1 x S x S`` floats in [0, 1]."""
        device = gray.device
        if self.augment == "cxr":
            theta = affine_theta(params).to(device, non_blocking=True)
            grid = F.affine_grid(theta, list(gray.shape), align_corners=False)
            gray = F.grid_sample(
                gray, grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
            factor = params.brightness.to(device, non_blocking=True)[:, None, None, None]
            gray = (gray * factor).clamp_(0.0, 1.0)
            factor = params.contrast.to(device, non_blocking=True)[:, None, None, None]
            mean = gray.mean(dim=(1, 2, 3), keepdim=True)
            gray = (mean + factor * (gray - mean)).clamp_(0.0, 1.0)
            if params.gamma is not None:
                exponent = params.gamma.to(device, non_blocking=True)[:, None, None, None]
                gray = gray.pow(exponent)
        if self.hflip:
            flip = params.flip.to(device, non_blocking=True)[:, None, None, None]
            gray = torch.where(flip, gray.flip(-1), gray)
        return gray
