"""Train and eval transforms: PIL "L" image -> normalised 3xHxW tensor.

The eval transform *is* :func:`training.ml.preprocessing.to_model_input`, so a model is evaluated
on exactly the tensors the inference worker will feed it. The train transform does the same steps
(grayscale in [0, 1], squash-resize to ``input_size``, copy to 3 channels, normalise) with the
augmentations in between, on the small resized tensor (cheap even for a 3000 px DICOM).

Augmentations for chest X-rays are deliberately mild: a few degrees of rotation, a little shift and
zoom, brightness/contrast jitter. No horizontal flip by default (the heart is on the patient's
left; a flipped film looks like situs inversus or a mislabelled side marker), no crops that cut
off the costophrenic angles, no colour/hue changes (the images are grayscale).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torch.nn import functional as F
from torchvision.transforms import v2

from .preprocessing import Preprocessing, to_grayscale_array, to_model_input

__all__ = [
    "AUGMENTATIONS",
    "GrayscaleResize",
    "Normalize3",
    "ToModelInput",
    "eval_transform",
    "train_transform",
]

AUGMENTATIONS = ("cxr", "none")

# The "cxr" policy. Rotation and shift stay small: larger ones move anatomy out of the frame.
ROTATION_DEGREES = 7.0
TRANSLATE = (0.05, 0.05)
SCALE = (0.95, 1.05)
BRIGHTNESS = 0.2
CONTRAST = 0.2


class ToModelInput:
    """PIL image -> model input, exactly :func:`to_model_input` (the eval transform)."""

    def __init__(self, prep: Preprocessing) -> None:
        self.prep = prep

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return to_model_input(image, self.prep)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(input_size={self.prep.input_size})"


class GrayscaleResize:
    """PIL image -> 1xSxS float tensor in [0, 1], resized the way :func:`to_model_input` does."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        gray = torch.from_numpy(to_grayscale_array(image))[None, None]
        size = self.size
        if gray.shape[-2:] != (size, size):
            gray = F.interpolate(
                gray, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        return gray.clamp_(0.0, 1.0)[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class Normalize3:
    """1xHxW tensor in [0, 1] -> 3xHxW tensor normalised with the model's mean/std."""

    def __init__(self, prep: Preprocessing) -> None:
        self.mean = torch.tensor(prep.mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(prep.std, dtype=torch.float32)[:, None, None]

    def __call__(self, gray: torch.Tensor) -> torch.Tensor:
        gray = gray.clamp(0.0, 1.0)  # augmentations may overshoot [0, 1]
        return ((gray.expand(3, *gray.shape[-2:]) - self.mean) / self.std).contiguous()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean.flatten().tolist()})"


def eval_transform(prep: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """The evaluation/inference transform: identical to :func:`to_model_input`."""
    return ToModelInput(prep)


def train_transform(
    prep: Preprocessing, *, augment: str = "cxr", hflip: bool = False
) -> v2.Compose:
    """The training transform; ``augment="none"`` gives the eval tensors through the same steps.

    ``hflip=True`` adds a random horizontal flip (opt-in: it teaches the model that a heart on the
    right is normal). The steps are in ``.transforms`` for inspection.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"Unknown augmentation {augment!r}; choose one of {AUGMENTATIONS}.")
    steps: list[Callable[..., torch.Tensor]] = [GrayscaleResize(prep.input_size)]
    if augment == "cxr":
        steps += [
            v2.RandomAffine(
                degrees=ROTATION_DEGREES,
                translate=TRANSLATE,
                scale=SCALE,
                interpolation=v2.InterpolationMode.BILINEAR,
                fill=0.0,  # black, like the air around the patient
            ),
            v2.ColorJitter(brightness=BRIGHTNESS, contrast=CONTRAST),
        ]
    if hflip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    steps.append(Normalize3(prep))
    return v2.Compose(steps)
