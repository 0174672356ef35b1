"""Train and eval transforms: PIL "L" image -> normalised 3xHxW tensor, one image at a time.

``fit`` applies the same policy to whole batches on the training device instead
(:mod:`training.ml.train.gpu_augment`); these per-image steps serve :class:`~training.ml.train.dataset.CXRDataset`
users and define what the batched version must match.

The eval transform gives exactly :func:`training.ml.preprocessing.to_model_input`'s tensor, so a
model is evaluated on what the inference worker will feed it. The train transform takes the steps
(grayscale in [0, 1], squash-resize to ``input_size``, copy to 3 channels, normalise) with the
augmentations in between, on the small resized image (cheap even for a 3000 px DICOM); with
``augment="none"`` it gives the eval tensor bit for bit.

Augmentations for chest X-rays are deliberately mild: a few degrees of rotation, a little shift and
zoom, brightness/contrast jitter, and a gamma jitter (``gray ** g`` with ``g`` log-uniform in
``[1 / (1 + gamma), 1 + gamma]``): exposure and the scanner's look-up curve differ between
hospitals in that non-linear way, which a brightness factor does not imitate. No horizontal flip by default (the heart is on the patient's
left; a flipped film looks like situs inversus or a mislabelled side marker), no crops that cut
off the costophrenic angles, no colour/hue changes (the images are grayscale).

Why not torchvision's ``RandomAffine``/``ColorJitter`` on tensors: with ``num_workers=0`` (the
default, and the only choice inside a Celery prefork child, which may not fork) the per-image
work runs in the training process, where every small torch op goes through the intra-op thread
pool the model uses. On 2 busy cores that made one 224 px image cost ~13 ms instead of ~1 ms, half
the time of a head-only training step. These steps use Pillow and numpy (single-threaded) and
draw their random numbers from torch's generator, so ``torch.manual_seed`` and the DataLoader's
per-worker seeding make them reproducible (numpy's global generator would repeat the same
augmentations in every worker).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from ..preprocessing import Preprocessing, to_grayscale_array, to_model_input

__all__ = [
    "AUGMENTATIONS",
    "BrightnessContrast",
    "Compose",
    "Gamma",
    "GrayscaleResize",
    "Normalize3",
    "RandomAffine",
    "RandomHorizontalFlip",
    "ToModelInput",
    "eval_transform",
    "train_transform",
]

AUGMENTATIONS = ("cxr", "none")

# The "cxr" policy. Rotation and shift stay small: larger ones move anatomy out of the frame.
ROTATION_DEGREES = 7.0
TRANSLATE = (0.05, 0.05)  # fraction of width, height
SCALE = (0.95, 1.05)
BRIGHTNESS = 0.2  # factor in [1 - 0.2, 1 + 0.2]
CONTRAST = 0.2
#: Default gamma jitter (TrainConfig.gamma): exponents in [1 / 1.25, 1.25]; 0 turns it off.
GAMMA = 0.25


def gamma_range(gamma: float) -> tuple[float, float]:
    """The log-uniform range of the gamma exponent for a jitter of ``gamma`` (0: no jitter)."""
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}.")
    return (-math.log1p(gamma), math.log1p(gamma))


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high))


class Compose:
    """Apply ``transforms`` in order (kept in ``.transforms`` for inspection)."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, value: object) -> object:
        for transform in self.transforms:
            value = transform(value)
        return value

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"{type(self).__name__}([{inner}\n])"


class ToModelInput:
    """PIL image -> model input, exactly :func:`to_model_input` (the eval transform)."""

    def __init__(self, prep: Preprocessing) -> None:
        self.prep = prep

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return to_model_input(image, self.prep)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(input_size={self.prep.input_size})"


class GrayscaleResize:
    """PIL image -> float32 SxS array in [0, 1], resized exactly as :func:`to_model_input` does."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, image: Image.Image) -> np.ndarray:
        gray = to_grayscale_array(image)
        size = self.size
        if gray.shape != (size, size):
            # The one torch op of the pipeline: it must match inference's resize bit for bit.
            resized = F.interpolate(
                torch.from_numpy(gray)[None, None],
                size=(size, size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
            gray = resized[0, 0].numpy()
        return np.clip(gray, 0.0, 1.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class RandomAffine:
    """Rotate by up to ``degrees``, shift by up to ``translate`` and zoom within ``scale``.

    Around the image centre, bilinear, with black (air) filling the uncovered border.
    """

    def __init__(
        self,
        degrees: float = ROTATION_DEGREES,
        translate: tuple[float, float] = TRANSLATE,
        scale: tuple[float, float] = SCALE,
    ) -> None:
        self.degrees = float(degrees)
        self.translate = (float(translate[0]), float(translate[1]))
        self.scale = (float(scale[0]), float(scale[1]))

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        height, width = gray.shape
        angle = math.radians(_uniform(-self.degrees, self.degrees))
        zoom = _uniform(*self.scale)
        tx = _uniform(-self.translate[0], self.translate[0]) * width
        ty = _uniform(-self.translate[1], self.translate[1]) * height
        # Pillow maps each output pixel back to the input: in = C + (R(-a) / zoom)(out - C - t).
        cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
        cx, cy = width / 2.0, height / 2.0
        a, b, d, e = cos, sin, -sin, cos
        c = cx - a * (cx + tx) - b * (cy + ty)
        f = cy - d * (cx + tx) - e * (cy + ty)
        image = Image.fromarray(np.ascontiguousarray(gray, dtype=np.float32))  # mode F
        out = image.transform(
            (width, height),
            Image.Transform.AFFINE,
            (a, b, c, d, e, f),
            resample=Image.Resampling.BILINEAR,
            fillcolor=0.0,
        )
        return np.asarray(out, dtype=np.float32)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(degrees={self.degrees}, translate={self.translate}, "
            f"scale={self.scale})"
        )


class BrightnessContrast:
    """Multiply brightness by a factor in ``1 +- brightness``, then scale contrast around the
    image mean by a factor in ``1 +- contrast``; values stay in [0, 1]."""

    def __init__(self, brightness: float = BRIGHTNESS, contrast: float = CONTRAST) -> None:
        self.brightness = float(brightness)
        self.contrast = float(contrast)

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        factor = _uniform(1.0 - self.brightness, 1.0 + self.brightness)
        out = np.clip(gray * np.float32(factor), 0.0, 1.0)
        factor = _uniform(1.0 - self.contrast, 1.0 + self.contrast)
        mean = np.float32(out.mean())
        return np.clip(mean + np.float32(factor) * (out - mean), 0.0, 1.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(brightness={self.brightness}, contrast={self.contrast})"


class Gamma:
    """``gray ** g`` with ``log g`` uniform in ``+- log(1 + gamma)``; values stay in [0, 1]."""

    def __init__(self, gamma: float = GAMMA) -> None:
        self.gamma = float(gamma)
        self.log_range = gamma_range(self.gamma)

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        exponent = np.float32(math.exp(_uniform(*self.log_range)))
        return np.power(np.clip(gray, 0.0, 1.0), exponent).astype(np.float32)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(gamma={self.gamma})"


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``. Opt-in only for chest X-rays (see module doc)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        return gray[:, ::-1] if _uniform(0.0, 1.0) < self.p else gray

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class Normalize3:
    """HxW array in [0, 1] -> 3xHxW float32 tensor normalised with the model's mean/std.

    Float32 arithmetic in the same order as :func:`to_model_input`, so the results are identical.
    """

    def __init__(self, prep: Preprocessing) -> None:
        self.mean = np.asarray(prep.mean, dtype=np.float32)[:, None, None]
        self.std = np.asarray(prep.std, dtype=np.float32)[:, None, None]

    def __call__(self, gray: np.ndarray) -> torch.Tensor:
        gray = np.clip(np.asarray(gray, dtype=np.float32), 0.0, 1.0)
        return torch.from_numpy(np.ascontiguousarray((gray[None] - self.mean) / self.std))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean.ravel().tolist()})"


def eval_transform(prep: Preprocessing) -> Compose:
    """The evaluation transform: the same tensor as :func:`to_model_input`, bit for bit.

    Built from the train transform's numpy steps rather than by calling ``to_model_input``, for
    the thread-pool reason in the module docstring; the tests hold the two to equality.
    """
    return Compose([GrayscaleResize(prep.input_size), Normalize3(prep)])


def train_transform(
    prep: Preprocessing, *, augment: str = "cxr", hflip: bool = False, gamma: float = GAMMA
) -> Compose:
    """The training transform; ``augment="none"`` gives the eval tensors through the same steps.

    ``gamma`` is the gamma jitter of the "cxr" policy (:class:`Gamma`; 0 leaves it out).

    ``hflip=True`` adds a random horizontal flip (opt-in: it teaches the model that a heart on the
    right is normal). The steps are in ``.transforms`` for inspection.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"Unknown augmentation {augment!r}; choose one of {AUGMENTATIONS}.")
    steps: list[Callable] = [GrayscaleResize(prep.input_size)]
    if augment == "cxr":
        steps += [RandomAffine(), BrightnessContrast()]
        if gamma:
            steps.append(Gamma(gamma))
    if hflip:
        steps.append(RandomHorizontalFlip(p=0.5))
    steps.append(Normalize3(prep))
    return Compose(steps)
