"""The learning-rate schedule (warm-up, then a cosine per step) and test-time augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from training.ml.preprocessing import Preprocessing
from training.ml.train.config import MIN_LR_FRACTION
from training.ml.train.epochs import warmup_cosine
from training.ml.train.tta import TTA_VIEWS, TTAModel

PREP = Preprocessing(input_size=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


def test_the_rate_rises_linearly_over_the_warm_up_then_falls_as_a_cosine() -> None:
    factors = [warmup_cosine(s, warmup_steps=10, total_steps=110) for s in range(130)]

    warm = np.array(factors[:10])
    np.testing.assert_allclose(np.diff(warm), 1 / 11)  # linear
    assert factors[0] == pytest.approx(1 / 11) and factors[10] == pytest.approx(1.0)
    decay = np.array(factors[10:111])
    assert (np.diff(decay) < 0).all()  # every step lower
    assert factors[60] == pytest.approx(MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) / 2)  # half-way
    assert factors[110] == pytest.approx(MIN_LR_FRACTION)
    assert factors[129] == pytest.approx(MIN_LR_FRACTION)  # and stays there


def test_without_warm_up_the_first_step_runs_at_the_full_rate() -> None:
    assert warmup_cosine(0, warmup_steps=0, total_steps=5) == pytest.approx(1.0)
    assert warmup_cosine(5, warmup_steps=0, total_steps=5) == pytest.approx(MIN_LR_FRACTION)


class _Mean(nn.Module):
    """Logits that depend on the image only through its mean: invariant to small rotations of a
    uniform image, so TTA must return the plain logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([m, -m], dim=1)


def test_tta_averages_the_logits_of_its_views_and_keeps_the_shape() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    inputs = torch.randn(5, 3, 32, 32)
    tta = TTAModel(model, PREP)

    with torch.inference_mode():
        out = tta(inputs)
        views = [model(tta.view(inputs, angle, zoom)) for angle, zoom in TTA_VIEWS]

    assert out.shape == (5, 4)
    torch.testing.assert_close(out, torch.stack(views).mean(dim=0))
    assert not torch.allclose(views[1], views[0])  # the views differ from the image
    torch.testing.assert_close(tta.view(inputs, 0.0, 1.0), inputs)


def test_tta_fills_the_border_with_black_as_training_does() -> None:
    # A normalised all-black image stays all black after any view (black fills the border).
    black = torch.tensor([-m / s for m, s in zip(PREP.mean, PREP.std, strict=True)])[
        None, :, None, None
    ]
    inputs = black.expand(2, 3, 32, 32).contiguous()
    tta = TTAModel(_Mean(), PREP)

    for angle, zoom in TTA_VIEWS:
        torch.testing.assert_close(tta.view(inputs, angle, zoom), inputs)
    torch.testing.assert_close(tta(inputs), _Mean()(inputs))


def test_tta_with_one_identity_view_is_the_model_itself() -> None:
    model = _Mean()
    inputs = torch.randn(3, 3, 32, 32)

    torch.testing.assert_close(TTAModel(model, PREP, views=[(0.0, 1.0)])(inputs), model(inputs))
    with pytest.raises(ValueError, match="at least one view"):
        TTAModel(model, PREP, views=[])
