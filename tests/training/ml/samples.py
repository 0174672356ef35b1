"""Small pictures, loaders and predictors shared by the ML core's tests (CPU-sized)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from training.ml.infer.predictor import Predictor
from training.ml.preprocessing import Preprocessing

CLASSES = ["normal", "pneumonia", "covid"]
PREP = Preprocessing(input_size=64)  # small inputs keep VGG16 and DenseNet fast on CPU
SIZE = 32  # input size: small enough for CPU, large enough for 5 stride-2 stages


def cpu_predictor(model: nn.Module, arch: str = "resnet18", **kwargs: object) -> Predictor:
    return Predictor(model, arch=arch, classes=CLASSES, preprocessing=PREP, device="cpu", **kwargs)


def _predictor(model: nn.Module, arch: str = "resnet18", **kwargs: object) -> Predictor:
    return Predictor(model, arch=arch, classes=CLASSES, preprocessing=PREP, device="cpu", **kwargs)


def xray_8bit(width: int = 100, height: int = 80) -> Image.Image:
    """Mode L: a dark field with two bright 'lungs' and some noise, so CAMs have structure."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:height, 0:width]
    lungs = np.exp(
        -(((xx - width * 0.3) / (width * 0.12)) ** 2 + ((yy - height * 0.5) / (height * 0.3)) ** 2)
    )
    lungs += np.exp(
        -(((xx - width * 0.7) / (width * 0.12)) ** 2 + ((yy - height * 0.5) / (height * 0.3)) ** 2)
    )
    pixels = 30 + 180 * lungs + rng.normal(0, 10, lungs.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def xray_16bit(width: int = 90, height: int = 120) -> Image.Image:
    """Mode I;16 with a 12-bit range, as DICOM-derived PNGs are."""
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 4096, (height, width)).astype(np.uint16)
    pixels[:, : width // 3] //= 8
    image = Image.fromarray(pixels)
    assert image.mode == "I;16"
    return image


# --- preprocessing -----------------------------------------------------------------------------


# --- prediction --------------------------------------------------------------------------------


def tensor_loader(n: int = 24, batch_size: int = 8) -> DataLoader:
    """Two classes of ``SIZE`` squares: class 1 has a bright top-left corner."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(n, 3, SIZE, SIZE, generator=generator)
    labels = torch.arange(n) % 2
    inputs[labels == 1, :, :8, :8] += 3.0
    return DataLoader(TensorDataset(inputs, labels), batch_size=batch_size, shuffle=False)
