from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.training.ml.samples import PREP, xray_8bit, xray_16bit
from training.ml.preprocessing import Preprocessing, batch_model_input, to_model_input


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16"])
def test_any_image_mode_becomes_a_normalised_3_channel_square(mode: str) -> None:
    gray = xray_8bit(90, 60)
    image = (
        gray.convert(mode)
        if mode != "I;16"
        else Image.fromarray(np.asarray(gray).astype(np.uint16) * 16)
    )
    tensor = to_model_input(image, PREP)
    assert tensor.shape == (3, 64, 64) and tensor.dtype == torch.float32
    pixels = tensor * torch.tensor(PREP.std)[:, None, None] + torch.tensor(PREP.mean)[:, None, None]
    assert torch.allclose(pixels[0], pixels[1], atol=1e-5) and torch.allclose(
        pixels[0], pixels[2], atol=1e-5
    )
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_a_uniform_image_is_normalised_with_mean_and_std() -> None:
    tensor = to_model_input(Image.new("L", (30, 50), 255), PREP)
    expected = [(1 - m) / s for m, s in zip(PREP.mean, PREP.std, strict=True)]
    assert torch.allclose(tensor[:, 10, 10], torch.tensor(expected), atol=1e-5)


def test_a_16_bit_image_is_scaled_to_its_range_not_clipped_at_255() -> None:
    pixels = (np.tile(np.linspace(0, 4095, 128), (32, 1))).astype(np.uint16)
    tensor = to_model_input(Image.fromarray(pixels), PREP)
    gray = tensor[0] * PREP.std[0] + PREP.mean[0]
    assert gray[:, 0].max() < 0.05 and gray[:, -1].min() > 0.95
    assert (gray > 0.99).float().mean() < 0.1  # Pillow's convert("L") would saturate ~94% of it


def test_the_whole_image_is_squashed_not_centre_cropped() -> None:
    pixels = np.zeros((100, 300), dtype=np.uint8)
    pixels[:, :15] = 255  # a bright strip along the left edge, where a centre crop would cut
    gray = to_model_input(Image.fromarray(pixels), PREP)[0]
    assert gray[:, 0].min() > gray[:, 32].max() + 1.0


def test_batch_model_input_stacks_images_of_different_sizes() -> None:
    batch = batch_model_input([xray_8bit(), xray_16bit()], PREP)
    assert batch.shape == (2, 3, 64, 64)


def test_preprocessing_round_trips_through_a_plain_dict_and_refuses_typos() -> None:
    prep = Preprocessing(input_size=96, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    with pytest.raises(ValueError, match="size"):
        Preprocessing.from_dict({"size": 96})
    with pytest.raises(ValueError, match="input_size"):
        Preprocessing(input_size=8)
