from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests import imagegen
from training.ml.preprocessing import Preprocessing, to_model_input
from training.ml.train.transforms import (
    BrightnessContrast,
    RandomAffine,
    RandomHorizontalFlip,
    eval_transform,
    train_transform,
)

PREP = Preprocessing(input_size=48, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize(
    "image",
    [
        imagegen.make_xray(90, 60, seed=1),  # L, not square: squashed, not cropped
        imagegen.make_xray(48, 48, seed=2),  # already at input size: no resize
        imagegen.make_xray(64, 80, mode="I;16", seed=3),  # 16-bit: min-max scaled
        imagegen.make_xray(40, 30, mode="RGB", seed=4),
    ],
    ids=["L", "input-size", "16-bit", "RGB"],
)
def test_the_eval_transform_is_exactly_to_model_input(image: Image.Image) -> None:
    expected = to_model_input(image, PREP)

    assert torch.equal(eval_transform(PREP)(image), expected)
    # The train transform without augmentation takes the same steps to the same tensor.
    assert torch.equal(train_transform(PREP, augment="none")(image), expected)


def test_the_train_transform_augments_to_a_normalised_3_channel_tensor() -> None:
    image = imagegen.make_xray(120, 100, seed=5)
    transform = train_transform(PREP)
    baseline = to_model_input(image, PREP)

    outputs = [transform(image) for _ in range(4)]

    for out in outputs:
        assert out.shape == (3, 48, 48) and out.dtype == torch.float32
        assert torch.isfinite(out).all()
        gray = out * torch.tensor(PREP.std)[:, None, None] + torch.tensor(PREP.mean)[:, None, None]
        assert torch.allclose(gray[0], gray[1], atol=1e-5)  # still grayscale: no hue change
        assert gray.min() >= -1e-5 and gray.max() <= 1 + 1e-5  # clamped to [0, 1]
    assert not torch.equal(outputs[0], baseline)
    assert not torch.equal(outputs[0], outputs[1])  # random each call


def test_there_is_no_horizontal_flip_unless_asked_for() -> None:
    default = train_transform(PREP)
    flipped = train_transform(PREP, hflip=True)

    assert not any(isinstance(t, RandomHorizontalFlip) for t in default.transforms)
    assert any(isinstance(t, RandomHorizontalFlip) for t in flipped.transforms)
    affine = next(t for t in default.transforms if isinstance(t, RandomAffine))
    assert affine.degrees == 7.0 and affine.scale == (0.95, 1.05)
    assert any(isinstance(t, BrightnessContrast) for t in default.transforms)
    assert len(train_transform(PREP, augment="none").transforms) == 2  # resize, normalise


def test_augmentation_draws_from_torchs_generator_so_a_seed_repeats_it() -> None:
    image = imagegen.make_xray(64, 64, seed=6)
    transform = train_transform(PREP, hflip=True)

    torch.manual_seed(7)
    first = [transform(image) for _ in range(3)]
    torch.manual_seed(7)
    again = [transform(image) for _ in range(3)]

    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_the_affine_step_rotates_shifts_and_zooms_around_the_centre() -> None:
    gray = np.zeros((41, 41), dtype=np.float32)
    gray[18:23, 30:35] = 1.0  # a bright spot right of the centre

    for _ in range(20):
        out = RandomAffine()(gray)
        ys, xs = np.nonzero(out > 0.5)
        # 7 degrees, 5 % shift and 5 % zoom move the spot by a few pixels at most.
        assert abs(ys.mean() - 20) < 6 and abs(xs.mean() - 32) < 5
    identity = RandomAffine(degrees=0.0, translate=(0.0, 0.0), scale=(1.0, 1.0))
    assert np.array_equal(identity(gray), gray)


def test_the_augmentation_keeps_the_heart_side() -> None:
    # A bright blob on the right half stays there (contrast jitter lifts the background a bit).
    pixels = np.zeros((64, 64), dtype=np.uint8)
    pixels[20:44, 40:60] = 230
    image = Image.fromarray(pixels)
    transform = train_transform(PREP)

    for _ in range(20):
        gray = transform(image)[0] * PREP.std[0] + PREP.mean[0]
        assert gray[:, 24:].sum() > 4 * gray[:, :24].sum() + 1


def test_an_unknown_augmentation_is_refused() -> None:
    with pytest.raises(ValueError, match="cxr"):
        train_transform(PREP, augment="heavy")


def test_images_are_read_at_four_times_the_input_and_never_below_the_overlay() -> None:
    from training.ml.preprocessing import reading_long_side

    assert reading_long_side(Preprocessing(input_size=224)) == 1024
    assert reading_long_side(Preprocessing(input_size=512)) == 2048


@pytest.mark.parametrize(
    ("size", "long_side", "scale"),
    [
        ((2500, 2048), 1024, 2),
        ((4100, 3000), 1024, 4),
        ((2047, 900), 1024, 1),
        ((900, 2100), 256, 8),
        ((2500, 2048), 1, 8),
        ((300, 200), 1024, 1),
    ],
)
def test_a_jpeg_is_reduced_by_the_decoder_as_far_as_the_long_side_allows(
    size: tuple[int, int], long_side: int, scale: int
) -> None:
    from io import BytesIO

    from training.ml.preprocessing import jpeg_draft

    data = imagegen.jpeg_bytes(imagegen.make_xray(*size), quality=70)
    with Image.open(BytesIO(data)) as image:
        assert jpeg_draft(image, long_side) == scale
        image.load()
        assert max(image.size) >= min(long_side, max(size))
        assert image.size == tuple(-(-s // scale) for s in size)


def test_only_jpegs_are_reduced_by_their_decoder_others_by_a_whole_factor() -> None:
    from io import BytesIO

    from training.ml.preprocessing import jpeg_draft, reduce_for_reading

    with Image.open(BytesIO(imagegen.png_bytes(imagegen.make_xray(2100, 300)))) as image:
        assert jpeg_draft(image, 256) == 1
        image.load()
        assert image.size == (2100, 300)
        assert reduce_for_reading(image, 256).size == (263, 38)  # by 8
        assert reduce_for_reading(image, 700).size == (700, 100)  # by 3
        assert reduce_for_reading(image, 1051) is image
    block = Image.fromarray(np.array([[0, 40], [100, 60]], dtype=np.uint8))
    assert np.asarray(reduce_for_reading(block, 1)).tolist() == [[50]]  # the block's mean
