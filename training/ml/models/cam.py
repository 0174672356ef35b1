"""Grad-CAM support: the layer Grad-CAM hooks for each architecture, and making a model safe for
its hooks (no in-place activation at or after that layer)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.densenet import DenseNet

from .architectures import arch_spec, model_device

__all__ = ["gradcam_target_layer", "prepare_for_cam"]


def gradcam_target_layer(model: nn.Module, arch: str) -> nn.Module:
    """The layer whose activations and gradients Grad-CAM uses for ``arch``."""
    return arch_spec(arch).cam_layer(model)


class _CamSafeDenseNet(DenseNet):
    """torchvision's DenseNet with an out-of-place final ReLU.

    ``DenseNet.forward`` applies ``F.relu(features, inplace=True)`` to the output of ``features``
    (norm5). pytorch-grad-cam hooks that tensor, and an in-place op on it breaks the backward hook
    ("Output 0 of BackwardHookFunctionBackward is a view and is being modified inplace",
    pytorch-grad-cam #147); with forward-hook gradients it silently overwrites the saved
    activation on CPU. Same parameters, same outputs; only the ReLU allocates a new tensor.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        out = nn.functional.relu(features, inplace=False)
        out = nn.functional.adaptive_avg_pool2d(out, (1, 1))
        out = torch.flatten(out, 1)
        return self.classifier(out)


def prepare_for_cam(
    model: nn.Module, target_layer: nn.Module | None = None, input_size: int = 224
) -> nn.Module:
    """Make ``model`` safe for Grad-CAM hooks, in place: no in-place activation at or after the
    layer Grad-CAM hooks. Turns ``inplace=True`` off (ReLU, ReLU6, SiLU, Hardswish, Dropout...)
    and gives DenseNet a forward whose final ReLU is out of place. Outputs and the state dict are
    unchanged.

    Without ``target_layer``, in-place is turned off on every module. With it, one dry forward
    pass (eval mode, no gradients, a ``input_size`` square of zeros) finds the modules that run
    only before the layer has its output, and those keep their in-place activations: the
    :class:`~training.ml.infer.predictor.Predictor` records no autograd graph below that layer, so
    in-place is safe there, and it saves about a tenth of the forward pass (fewer allocations).
    Every other module (run after the layer, run at both ends, or not run at all) is out of place.
    """
    keep: set[nn.Module] = set()
    if target_layer is not None:
        keep = _modules_only_before(model, target_layer, input_size)
    for module in model.modules():
        if getattr(module, "inplace", False) is True and module not in keep:
            module.inplace = False  # type: ignore[assignment]
    if type(model) is DenseNet:
        model.__class__ = _CamSafeDenseNet
    return model


def _modules_only_before(model: nn.Module, target_layer: nn.Module, input_size: int) -> set:
    """The modules that finish before ``target_layer`` has its output and never run after it."""
    before: set[nn.Module] = set()
    after: set[nn.Module] = set()
    target_done = False

    def record(module: nn.Module, _inputs: object, _output: object) -> None:
        nonlocal target_done
        if module is target_layer:
            target_done = True
        elif target_done:
            after.add(module)
        else:
            before.add(module)

    hooks = [m.register_forward_hook(record) for m in model.modules()]
    was_training = model.training
    try:
        model.eval()  # train mode would move BatchNorm's running statistics
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size, device=model_device(model)))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    if not target_done:
        return set()  # the layer never ran: keep nothing in place
    # The target layer's own modules finished before it did: they are in `before`.
    return before - after
