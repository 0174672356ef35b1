from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from tests.training.ml.samples import CLASSES, cpu_predictor, xray_8bit, xray_16bit
from training.ml.models.cam import gradcam_target_layer


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_batchnorm_is_folded_into_convs_except_the_cam_layer(
    fresh_model: Callable[[str], nn.Module],
) -> None:
    model = fresh_model("mobilenet_v2")
    before = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    predictor = cpu_predictor(model, "mobilenet_v2")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in predictor.model.modules()) == 0 < before
    assert isinstance(predictor.model.features[-1], nn.Sequential)  # the CAM layer, still there
    assert not any(p.requires_grad for p in predictor.model.parameters())

    densenet = cpu_predictor(fresh_model("densenet121"), "densenet121")
    assert isinstance(densenet.model.features.norm5, nn.BatchNorm2d)  # the CAM layer itself


def test_a_conv_and_batchnorm_that_are_not_chained_are_left_alone() -> None:
    """Registered side by side but applied to different tensors: folding would change outputs."""
    from training.ml.models.speedups import fold_batchnorm

    class SideBySide(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) + self.bn(x)

    model = SideBySide()
    model.bn.running_mean.fill_(0.5)
    model.bn.running_var.fill_(2.0)
    model.eval()
    assert fold_batchnorm(model, input_size=16) is model
    assert isinstance(model.bn, nn.BatchNorm2d)


@pytest.fixture
def frozen_is_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    """freeze_below keeps the graph only when it times faster; make it so, whatever the host."""
    from training.ml.models import speedups

    calls = iter(range(1000))
    monkeypatch.setattr(speedups, "_timed_call", lambda model, x: 1.0 / (1 + next(calls)))


def test_a_frozen_graph_that_times_the_same_as_eager_is_kept(
    fresh_model: Callable[[str], nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tie (or a graph within the timing's noise of eager) keeps the graph: on a busy host the
    two timings come out close even where the graph is a fifth faster."""
    from training.ml.models import speedups

    monkeypatch.setattr(speedups, "_timed_call", lambda model, x: 1.0)
    predictor = cpu_predictor(fresh_model("resnet18"))
    assert predictor.execution.startswith("frozen graph for"), predictor.execution
    assert "(1000 -> 1000 ms per image)" in predictor.execution


def test_the_frozen_graph_and_the_eager_model_are_timed_in_turns(
    fresh_model: Callable[[str], nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow moment of the host must slow both alike: each round times eager, then the graph,
    and the fastest call of each is compared."""
    from training.ml.models import speedups

    timed = []

    def timed_call(model: nn.Module, x: torch.Tensor) -> float:
        frozen = any(isinstance(m, speedups._FrozenGraph) for m in model.modules())
        timed.append("frozen" if frozen else "eager")
        return 0.5 if frozen else 1.0

    monkeypatch.setattr(speedups, "_timed_call", timed_call)
    predictor = cpu_predictor(fresh_model("resnet18"))
    assert timed == ["eager", "frozen"] * 5
    assert predictor.execution.endswith("(1000 -> 500 ms per image)")
    assert any(isinstance(m, speedups._FrozenGraph) for m in predictor.model.modules())


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "densenet121", "vgg16"])
def test_layers_below_the_cam_layer_run_as_a_frozen_graph_with_the_same_results(
    arch: str, fresh_model: Callable[[str], nn.Module], frozen_is_faster: None
) -> None:
    """The Sequential holding the Grad-CAM layer (features, ResNet's layer4 with its stem and
    stages before it) loses its layers below that layer to one frozen TorchScript graph; the
    probabilities and CAMs are the eager model's, at any batch size."""
    from training.ml.models.speedups import _FrozenGraph

    model = fresh_model(arch)
    eager = cpu_predictor(copy.deepcopy(model), arch, freeze=False)
    frozen = cpu_predictor(model, arch)
    assert frozen.execution.startswith("frozen graph for"), frozen.execution
    assert eager.execution == "eager"
    assert sum(isinstance(m, _FrozenGraph) for m in frozen.model.modules()) == 1
    assert gradcam_target_layer(frozen.model, arch) is frozen._target_layer
    images = [xray_8bit(), xray_16bit(), xray_8bit(60, 90)]
    for batch in (images[:1], images):
        for a, b in zip(
            eager.predict(batch, cam_classes=[CLASSES[1]] * len(batch)),
            frozen.predict(batch, cam_classes=[CLASSES[1]] * len(batch)),
            strict=True,
        ):
            assert a.label == b.label
            assert [a.probabilities[c] for c in CLASSES] == pytest.approx(
                [b.probabilities[c] for c in CLASSES], abs=1e-5
            )
            assert np.allclose(a.cam, b.cam, atol=1e-3)
    layer = frozen._target_layer
    for _ in range(3):
        frozen.predict(images)
    assert not layer._forward_hooks and not layer._backward_hooks
    assert all(p.grad is None for p in frozen.model.parameters())


def test_a_frozen_graph_that_is_slower_or_fails_leaves_the_model_eager(
    fresh_model: Callable[[str], nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.ml.models import speedups

    # Timed in turns, eager first: the graph a tenth slower in every round.
    calls = iter(range(1000))
    monkeypatch.setattr(
        speedups, "_timed_call", lambda model, x: 1.0 if next(calls) % 2 == 0 else 1.1
    )
    model = fresh_model("resnet18")
    blocks = len(model.layer4)
    predictor = cpu_predictor(model)
    assert predictor.execution.startswith("eager (frozen graph slower: 1000 -> 1100 ms")
    assert not any(isinstance(m, speedups._FrozenGraph) for m in predictor.model.modules())
    assert type(predictor.model.conv1) is nn.Conv2d and len(predictor.model.layer4) == blocks

    def broken_trace(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no TorchScript here")

    monkeypatch.setattr(torch.jit, "trace", broken_trace)
    predictor = cpu_predictor(fresh_model("mobilenet_v2"), "mobilenet_v2")
    assert predictor.execution == "eager (RuntimeError)"
    assert len(predictor.model.features) == 19
    assert predictor.predict([xray_8bit()])[0].cam.std() > 0.01
