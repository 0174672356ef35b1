from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from tests import imagegen
from training.ml.preprocessing import Preprocessing, to_model_input
from training.ml.train import transforms
from training.ml.train.gpu_augment import AugmentParams, BatchAugment

SIZE = 48
PREP = Preprocessing(input_size=SIZE, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


def _pixels(n: int = 3) -> torch.Tensor:
    images = [imagegen.make_xray(SIZE, SIZE, seed=seed) for seed in range(n)]
    return torch.stack([torch.from_numpy(np.array(image, dtype=np.uint8)) for image in images])


def _params(n: int, **values: float) -> AugmentParams:
    defaults = {"angle": 0.0, "zoom": 1.0, "tx": 0.0, "ty": 0.0, "brightness": 1.0, "contrast": 1.0}
    defaults.update(values)
    columns = {name: torch.full((n,), value) for name, value in defaults.items()}
    return AugmentParams(**columns, flip=torch.zeros(n, dtype=torch.bool))


def _fixed_draws(monkeypatch: pytest.MonkeyPatch, values: list[float]) -> None:
    """The per-image transforms draw their parameters with ``_uniform``: give them ours."""
    queue: Iterator[float] = iter(values)
    monkeypatch.setattr(transforms, "_uniform", lambda low, high: next(queue))


def test_without_augmentation_a_batch_is_exactly_what_inference_feeds_the_model() -> None:
    pixels = _pixels()

    batch = BatchAugment(PREP, augment="none")(pixels)

    expected = torch.stack([to_model_input(Image.fromarray(p.numpy()), PREP) for p in pixels])
    assert batch.shape == (3, 3, SIZE, SIZE)
    assert torch.equal(batch, expected)


@pytest.mark.parametrize(
    ("angle", "zoom", "tx", "ty"),
    [(6.5, 1.0, 0.0, 0.0), (-4.0, 0.96, 0.04, -0.03), (0.0, 1.05, -0.05, 0.05)],
)
def test_the_batched_affine_maps_pixels_as_the_per_image_pillow_step_does(
    monkeypatch: pytest.MonkeyPatch, angle: float, zoom: float, tx: float, ty: float
) -> None:
    gray = torch.cat([_pixels(1).float().div(255.0), torch.ones(1, SIZE, SIZE)])
    _fixed_draws(monkeypatch, [angle, zoom, tx, ty] * 2)

    expected = [transforms.RandomAffine()(g.numpy()) for g in gray]
    params = _params(2, angle=angle, zoom=zoom, tx=tx, ty=ty)
    out = BatchAugment(PREP, augment="cxr").apply(gray[:, None], params)[:, 0].numpy()

    # Pillow and grid_sample blend the black border differently: compare where both mapped an
    # all-white image to white, i.e. where every source pixel lies inside the image.
    inside = (out[1] == 1.0) & (expected[1] == 1.0)
    assert inside.mean() > 0.6
    assert np.abs(out[0] - expected[0])[inside].max() < 1e-4
    assert np.abs(out[0] - gray[0].numpy()).max() > 0.1  # it did move


def test_brightness_and_contrast_match_the_per_image_step(monkeypatch: pytest.MonkeyPatch) -> None:
    gray = _pixels(1).float().div(255.0)
    _fixed_draws(monkeypatch, [1.15, 0.85])

    expected = transforms.BrightnessContrast()(gray[0].numpy())
    augment = BatchAugment(PREP, augment="cxr")
    out = augment.apply(gray[:, None], _params(1, brightness=1.15, contrast=0.85))

    np.testing.assert_allclose(out[0, 0].numpy(), expected, atol=1e-6)


def test_the_flip_mirrors_exactly_the_images_drawn_for_it() -> None:
    gray = _pixels(4).float().div(255.0)[:, None]
    params = _params(4)
    params.flip = torch.tensor([True, False, True, False])

    out = BatchAugment(PREP, augment="none", hflip=True).apply(gray, params)

    assert torch.equal(out[0], gray[0].flip(-1)) and torch.equal(out[2], gray[2].flip(-1))
    assert torch.equal(out[1], gray[1]) and torch.equal(out[3], gray[3])


def test_the_drawn_parameters_stay_in_the_cxr_policy_and_repeat_for_a_seed() -> None:
    def draw(seed: int) -> AugmentParams:
        return BatchAugment(PREP, generator=torch.Generator().manual_seed(seed)).draw(4096)

    params = draw(7)

    assert params.angle.abs().max() <= transforms.ROTATION_DEGREES
    assert params.angle.min() < -6 and params.angle.max() > 6
    assert transforms.SCALE[0] <= params.zoom.min() and params.zoom.max() <= transforms.SCALE[1]
    assert params.tx.abs().max() <= transforms.TRANSLATE[0]
    assert (params.brightness - 1).abs().max() <= transforms.BRIGHTNESS
    assert 0.4 < params.flip.float().mean() < 0.6
    again = draw(7)
    assert torch.equal(params.angle, again.angle) and torch.equal(params.flip, again.flip)
    assert not torch.equal(params.angle, draw(8).angle)


def test_an_augmented_batch_is_normalised_and_keeps_the_heart_side_by_default() -> None:
    pixels = _pixels(8)
    augment = BatchAugment(PREP, generator=torch.Generator().manual_seed(0))

    batch = augment(pixels)

    assert batch.shape == (8, 3, SIZE, SIZE) and batch.dtype == torch.float32
    low = (0.0 - torch.tensor(PREP.mean)) / torch.tensor(PREP.std)
    high = (1.0 - torch.tensor(PREP.mean)) / torch.tensor(PREP.std)
    per_channel = batch.transpose(0, 1).reshape(3, -1)
    assert (per_channel.min(dim=1).values >= low - 1e-5).all()
    assert (per_channel.max(dim=1).values <= high + 1e-5).all()
    assert not augment.hflip
    assert not torch.equal(batch, BatchAugment(PREP, augment="none")(pixels))


def test_an_unknown_augmentation_is_refused() -> None:
    with pytest.raises(ValueError, match="Unknown augmentation"):
        BatchAugment(PREP, augment="mixup")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_batch_stays_there_in_channels_last() -> None:
    pixels = _pixels(4).cuda()

    batch = BatchAugment(PREP, generator=torch.Generator().manual_seed(0))(pixels)

    assert batch.device.type == "cuda"
    assert batch.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("exponent", [0.8, 1.0, 1.25])
def test_the_gamma_jitter_matches_the_per_image_step(
    monkeypatch: pytest.MonkeyPatch, exponent: float
) -> None:
    gray = _pixels(2).float().div(255.0)
    # Brightness and contrast at 1 (no change), then the log of the gamma exponent.
    _fixed_draws(monkeypatch, [1.0, 1.0, float(np.log(exponent))] * 2)
    per_image = transforms.train_transform(PREP, augment="cxr", gamma=0.25).transforms
    steps = [
        s for s in per_image if isinstance(s, (transforms.BrightnessContrast, transforms.Gamma))
    ]
    expected = []
    for g in gray.numpy():
        for step in steps:
            g = step(g)
        expected.append(g)

    params = _params(2)
    params.gamma = torch.full((2,), exponent)
    out = BatchAugment(PREP, augment="cxr", gamma=0.25).apply(gray[:, None], params)[:, 0]

    # numpy and torch round float32 differently in the last bits; a power < 1 magnifies that
    # near black (1e-7 -> 3e-6).
    np.testing.assert_allclose(out.numpy(), np.stack(expected), rtol=1e-5, atol=5e-5)
    if exponent != 1.0:
        assert np.abs(out.numpy() - gray.numpy()).max() > 0.01  # it did change the image


def test_the_gamma_draws_stay_in_range_and_zero_turns_them_off() -> None:
    generator = torch.Generator().manual_seed(3)
    params = BatchAugment(PREP, gamma=0.25, generator=generator).draw(4096)

    assert params.gamma is not None
    assert 1 / 1.25 - 1e-6 <= params.gamma.min() and params.gamma.max() <= 1.25 + 1e-6
    assert params.gamma.min() < 0.85 and params.gamma.max() > 1.18
    assert abs(float(params.gamma.log().mean())) < 0.02  # as often darker as brighter
    assert BatchAugment(PREP, gamma=0.0).draw(8).gamma is None
    steps = transforms.train_transform(PREP, gamma=0.0).transforms
    assert not any(isinstance(s, transforms.Gamma) for s in steps)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        BatchAugment(PREP, gamma=-0.1)
