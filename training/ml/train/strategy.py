"""Training strategies: which backbone blocks train ("head", "partial", "full"), frozen BatchNorm
layers kept in eval mode, and the optimizer over the parameters that train."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..models.architectures import head_name, head_parameters
from .config import STRATEGIES, ConfigError

__all__ = ["StrategyReport", "apply_strategy", "backbone_blocks", "make_optimizer", "train_mode"]


def backbone_blocks(model: nn.Module, arch: str) -> list[tuple[str, list[str]]]:
    """The backbone as an ordered list of ``(block name, [module paths])``, input to output.

    What ``"partial"`` unfreezes, from the end:

    - ResNet: stem (conv1, bn1), layer1 ... layer4;
    - DenseNet: stem (conv0, norm0), then denseblock i with the transition after it (the last
      with norm5);
    - VGG: the five conv groups (each ends with a max-pool), then the two pretrained
      fully-connected layers of the classifier as one block;
    - EfficientNet, MobileNet: each ``features[i]``; MobileNetV3's pretrained ``classifier.0`` is
      a last block of its own.

    Together with the head, the blocks hold every parameter of the model.
    """
    if arch.startswith("resnet"):
        return [("stem", ["conv1", "bn1"])] + [(f"layer{i}", [f"layer{i}"]) for i in range(1, 5)]
    if arch.startswith("densenet"):
        blocks = [("stem", ["features.conv0", "features.norm0"])]
        for i in range(1, 5):
            after = f"features.transition{i}" if i < 4 else "features.norm5"
            blocks.append((f"denseblock{i}", [f"features.denseblock{i}", after]))
        return blocks
    if arch.startswith("vgg"):
        blocks, group = [], []
        for index, module in enumerate(model.features):  # type: ignore[arg-type]
            group.append(f"features.{index}")
            if isinstance(module, nn.MaxPool2d):
                blocks.append((f"conv{len(blocks) + 1}", group))
                group = []
        if group:
            blocks.append((f"conv{len(blocks) + 1}", group))
    else:  # efficientnet_*, mobilenet_*
        blocks = [(f"features.{i}", [f"features.{i}"]) for i in range(len(model.features))]  # type: ignore[arg-type]
    # Pretrained Linear layers between the features and the head (VGG fc6/fc7, MobileNetV3's).
    head = head_name(arch)
    extra = [
        name
        for name, module in model.named_modules()
        if name.startswith("classifier") and isinstance(module, nn.Linear) and name != head
    ]
    if extra:
        blocks.append(("classifier", extra))
    return blocks


@dataclass
class StrategyReport:
    """What :func:`apply_strategy` made trainable."""

    strategy: str
    trainable_blocks: list[str]
    trainable_params: int
    total_params: int
    param_groups: list[dict[str, Any]] = field(repr=False, default_factory=list)

    def summary(self) -> str:
        share = self.trainable_params / self.total_params if self.total_params else 0.0
        blocks = ", ".join(self.trainable_blocks) if self.trainable_blocks else "none"
        return (
            f"{self.strategy}: {self.trainable_params:,} of {self.total_params:,} parameters "
            f"trainable ({share:.1%}); backbone blocks trained: {blocks}"
        )


def apply_strategy(
    model: nn.Module, arch: str, strategy: str, unfreeze_blocks: int = 2
) -> StrategyReport:
    """Freeze ``model`` for a strategy, in place, and report what trains.

    ``"head"``: only the new classifier; ``"partial"``: the last ``unfreeze_blocks`` backbone
    blocks (see :func:`backbone_blocks`) and the head; ``"full"``: everything. Frozen parameters
    get ``requires_grad=False``; call :func:`train_mode` (``train_one_epoch`` does) instead of
    ``model.train()`` so frozen BatchNorm layers keep their ImageNet running statistics.
    ``param_groups`` holds ``{"name": "head"|"backbone", "params": [...]}`` for the optimizer.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"Unknown strategy {strategy!r}; choose one of {STRATEGIES}.")
    head = head_parameters(model, arch)
    blocks = backbone_blocks(model, arch)
    if strategy == "full":
        model.requires_grad_(True)
        trained = [name for name, _ in blocks]
    else:
        model.requires_grad_(False)
        trained = []
        if strategy == "partial" and unfreeze_blocks > 0:
            for name, paths in blocks[-unfreeze_blocks:]:
                for path in paths:
                    model.get_submodule(path).requires_grad_(True)
                trained.append(name)
    for parameter in head:
        parameter.requires_grad_(True)

    head_ids = {id(p) for p in head}
    backbone = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups: list[dict[str, Any]] = [{"name": "head", "params": head}]
    if backbone:
        groups.append({"name": "backbone", "params": backbone})
    return StrategyReport(
        strategy=strategy,
        trainable_blocks=trained,
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total_params=sum(p.numel() for p in model.parameters()),
        param_groups=groups,
    )


def train_mode(model: nn.Module) -> nn.Module:
    """``model.train()``, except BatchNorm layers whose parameters are frozen stay in eval mode.

    In train mode a BatchNorm layer normalises with batch statistics and overwrites its running
    mean/var even when its weights are frozen: a "frozen" backbone would silently drift from its
    ImageNet statistics (and behave differently at eval time).
    """
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            own = list(module.parameters(recurse=False))
            if own and not any(p.requires_grad for p in own):
                module.eval()
    return model


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over the parameters that train; biases and normalisation scales without decay."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for parameter in model.parameters():
        if parameter.requires_grad:
            # Biases and normalisation scales are not weights to shrink.
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # On a GPU one fused kernel updates every parameter (instead of a few per tensor list).
    fused = all(p.is_cuda for p in decay + no_decay)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=fused or None)
