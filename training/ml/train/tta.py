"""Test-time augmentation: a model's logits averaged over a few mild views of each image.

The views are the identity and small affine changes of the kind the "cxr" training policy
draws (a 3 degree rotation either way, a 5 % zoom in), applied to the normalised batch with
black (air) filling the border as in training. Averaging logits (not probabilities) keeps the
output a logit, so the temperature and thresholds of the version apply unchanged. It costs one
forward pass per view (4x).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..preprocessing import Preprocessing

__all__ = ["TTA_VIEWS", "TTAModel"]

#: (rotation in degrees, zoom) of each view; the first is the image itself.
TTA_VIEWS: tuple[tuple[float, float], ...] = ((0.0, 1.0), (3.0, 1.0), (-3.0, 1.0), (0.0, 1.05))


def _theta(angle: float, zoom: float) -> torch.Tensor:
    """The 2x3 ``affine_grid`` matrix of a rotation by ``angle`` and a zoom around the centre
    (the mapping of :func:`training.ml.train.gpu_augment.affine_theta` without a shift)."""
    a = math.radians(angle)
    cos, sin = math.cos(a) / zoom, math.sin(a) / zoom
    return torch.tensor([[cos, sin, 0.0], [-sin, cos, 0.0]], dtype=torch.float32)


class TTAModel(nn.Module):
    """``model`` evaluated on every view of ``views`` of its input, logits averaged.

    Input and output as ``model``'s (``N x 3 x S x S`` normalised with ``prep``; ``N x K``).
    """

    black: torch.Tensor  # a buffer: the normalised value of a black pixel, per channel

    def __init__(
        self,
        model: nn.Module,
        prep: Preprocessing,
        views: Sequence[tuple[float, float]] = TTA_VIEWS,
    ) -> None:
        super().__init__()
        if not views:
            raise ValueError("TTA needs at least one view.")
        self.model = model
        self.views = [(float(angle), float(zoom)) for angle, zoom in views]
        black = [-m / s for m, s in zip(prep.mean, prep.std, strict=True)]
        self.register_buffer("black", torch.tensor(black, dtype=torch.float32)[None, :, None, None])

    def view(self, inputs: torch.Tensor, angle: float, zoom: float) -> torch.Tensor:
        """One view of a normalised batch; the uncovered border is black, as in training."""
        if angle == 0.0 and zoom == 1.0:
            return inputs
        n = inputs.shape[0]
        theta = _theta(angle, zoom).to(inputs.device)[None].expand(n, 2, 3)
        grid = F.affine_grid(theta, list(inputs.shape), align_corners=False)
        black = self.black.to(inputs.dtype)
        moved = F.grid_sample(
            inputs - black, grid.to(inputs.dtype), mode="bilinear", align_corners=False
        )
        return moved + black

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        total = None
        for angle, zoom in self.views:
            logits = self.model(self.view(inputs, angle, zoom)).float()
            total = logits if total is None else total + logits
        assert total is not None
        return total / len(self.views)
