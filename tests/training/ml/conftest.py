from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn

from tests.training.ml.samples import CLASSES
from training.ml.models.architectures import build_model


@pytest.fixture(scope="module")
def fresh_model() -> Callable[[str], nn.Module]:
    """A copy of a randomly initialised 3-class model per architecture, built once per test module
    (VGG16 takes seconds)."""
    cache: dict[str, nn.Module] = {}

    def make(arch: str) -> nn.Module:
        if arch not in cache:
            torch.manual_seed(0)
            cache[arch] = build_model(arch, len(CLASSES))
        return copy.deepcopy(cache[arch])

    return make
