"""Inference speed-ups for the worker: BatchNorm folded into the convolutions, and the layers below
the Grad-CAM layer run as one frozen TorchScript graph (kept only when it is not slower)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn
from torchvision.models.resnet import ResNet

from .architectures import model_device

logger = logging.getLogger(__name__)

__all__ = ["SLOWER", "fold_batchnorm", "freeze_below"]


def fold_batchnorm(
    model: nn.Module, keep: nn.Module | None = None, input_size: int = 224
) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d into that conv, for inference.

    In eval mode a BatchNorm is an affine map per channel, so the conv's weights can absorb it
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``) and the BatchNorm becomes ``nn.Identity``: the
    same outputs up to float rounding, one pass over each activation less (about a tenth of a
    MobileNetV2 forward on a CPU). The module tree keeps its names and indices, so Grad-CAM's
    target layer is found as before; ``keep`` (that layer) is never replaced itself.

    Pairs are taken in registration order within a parent (torchvision's Sequentials and ResNet
    blocks run them in that order). A model whose outputs moved after folding (a custom model
    that registers a conv and a BatchNorm side by side without chaining them) is returned as it
    was. Returns the model to use; its parameters are frozen.
    """
    from copy import deepcopy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode.")
    folded = deepcopy(model)
    keep_name = next((n for n, m in model.named_modules() if m is keep), None)
    count = 0
    for parent_name, parent in folded.named_modules():
        names = list(parent._modules)
        for first, second in zip(names, names[1:], strict=False):
            conv, bn = parent._modules[first], parent._modules[second]
            full = f"{parent_name}.{second}" if parent_name else second
            if (
                type(conv) is nn.Conv2d
                and type(bn) is nn.BatchNorm2d
                and bn.track_running_stats
                and full != keep_name
                and conv.out_channels == bn.num_features
            ):
                parent._modules[first] = fuse_conv_bn_eval(conv, bn)
                parent._modules[second] = nn.Identity()
                count += 1
    if not count:
        return model
    folded.requires_grad_(False)
    x = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = x.to(model_device(model))
        before, after = model(x), folded(x)
    scale = before.abs().max().item() + 1e-6
    if not torch.allclose(before, after, rtol=0, atol=1e-3 * scale):
        logger.warning("BatchNorm folding changed this model's outputs: left unfolded.")
        return model
    return folded


class _FrozenGraph(nn.Module):
    """Runs a frozen TorchScript graph. The graph is held outside the module tree: it has no
    parameters, modes or hooks to offer, and ``.eval()`` or ``.parameters()`` (which
    pytorch-grad-cam calls on every use) must not walk into it."""

    graph: torch.jit.ScriptModule

    def __init__(self, graph: torch.jit.ScriptModule, what: str) -> None:
        super().__init__()
        object.__setattr__(self, "graph", graph)
        self.what = what

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)

    def extra_repr(self) -> str:
        return self.what


def _below_plan(
    model: nn.Module, target_layer: nn.Module
) -> tuple[nn.Module, str, nn.Sequential, list[tuple[str, nn.Module]], list[str]] | None:
    """Where the layers that run before ``target_layer`` can be replaced by one module: the
    Sequential holding the layer directly (its children before the layer), and for a
    torchvision ResNet also the stem and the stages before ``layer4``, which its forward runs as
    a plain chain. Returns (parent, attribute, container, layers before, parent attributes to
    make Identity), or None for a layout this does not know."""
    for parent in model.modules():
        for attr, container in parent.named_children():
            if not isinstance(container, nn.Sequential):
                continue
            names = list(container._modules)
            index = next(
                (i for i, n in enumerate(names) if container._modules[n] is target_layer), None
            )
            if index is None:
                continue
            before = [(n, container._modules[n]) for n in names[:index]]
            chain: list[str] = []
            if type(model) is ResNet and parent is model and attr == "layer4":
                chain = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"]
                before = [(n, getattr(model, n)) for n in chain] + before
            return (parent, attr, container, before, chain) if before else None
    return None


# freeze_below keeps the frozen graph unless it times this much slower than the eager model.
SLOWER = 1.05


def freeze_below(
    model: nn.Module, target_layer: nn.Module, input_size: int = 224
) -> tuple[nn.Module, str]:
    """Run the layers below Grad-CAM's layer as one frozen TorchScript graph, on a CPU.

    The :class:`~training.ml.infer.predictor.Predictor` records no autograd graph below that layer
    (Grad-CAM needs gradients from the layer up only), so those layers are pure inference: traced
    and frozen with ``torch.jit.optimize_for_inference``, oneDNN runs them with pre-packed
    weights and fused activations: on a CPU those layers run about twice as fast as eager, a whole
    MobileNetV2 prediction ~1.5x (one thread), a ResNet one ~1.2x. The Grad-CAM layer and everything after it stay eager, with their hooks. The
    outputs are checked against the eager model on a random batch, and both are timed on one
    image, in turns (see :func:`_fastest_interleaved`): the graph is kept unless it is
    measurably slower (EfficientNet's squeeze-excitation blocks gain nothing: ~7 % slower).
    The rule leans towards the graph because the two mistakes are not alike: an eager ResNet
    or MobileNet is 20-100 % slower for the life of the worker process, a frozen EfficientNet a
    few percent; under the earlier rule (a tenth faster, or eager), a busy host left 3 ResNet
    loads in 8 eager. Any failure (an unknown layout, a tracing error, a difference, a torch
    without TorchScript) leaves the model eager.
    Changes ``model`` in place; returns it and what was done, for the log. Other devices: eager.
    """
    import warnings
    from collections import OrderedDict

    if model_device(model).type != "cpu":
        return model, "eager (not a CPU)"
    plan = _below_plan(model, target_layer)
    if plan is None:
        return model, "eager (no chain of layers below the Grad-CAM layer)"
    parent, attr, container, before, chain = plan
    saved = {name: getattr(parent, name) for name in [attr, *chain]}

    def eager(outcome: str) -> tuple[nn.Module, str]:
        for name, module in saved.items():
            setattr(parent, name, module)
        return model, f"eager ({outcome})"

    x = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(1))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # TorchScript is deprecated in favour of torch.compile, which compiles for minutes in
            # every worker process and again per batch size; this is what is pinned and tested.
            warnings.simplefilter("ignore")
            prefix = nn.Sequential(OrderedDict(before)).eval()
            graph = torch.jit.optimize_for_inference(
                torch.jit.freeze(torch.jit.trace(prefix, x[:1]).eval())
            )
            expected = model(x)
            below = {id(m) for _, m in before}
            kept = [(n, m) for n, m in container._modules.items() if id(m) not in below]
            frozen = _FrozenGraph(graph, f"{len(before)} layers below the Grad-CAM layer")
            layouts = {
                "eager": saved,
                "frozen": {
                    attr: nn.Sequential(OrderedDict([("frozen", frozen), *kept])),
                    **{name: nn.Identity() for name in chain},
                },
            }

            def use(layout: str) -> None:
                for name, module in layouts[layout].items():
                    setattr(parent, name, module)

            use("frozen")
            got = model(x)
            best = _fastest_interleaved(model, x[:1], use, list(layouts))
            eager_s, frozen_s = best["eager"], best["frozen"]
            use("frozen")
    except Exception as exc:  # noqa: BLE001 - any failure: the eager model is right, only slower
        logger.warning("layers below the Grad-CAM layer left eager: %r", exc)
        return eager(type(exc).__name__)
    scale = expected.abs().max().item() + 1e-6
    if not torch.allclose(expected, got, rtol=0, atol=1e-3 * scale):
        logger.warning("the frozen graph changed this model's outputs: left eager")
        return eager("outputs differed")
    timing = f"{eager_s * 1000:.0f} -> {frozen_s * 1000:.0f} ms per image"
    if frozen_s > SLOWER * eager_s:  # e.g. EfficientNet: its squeeze-excitation gains nothing
        return eager(f"frozen graph slower: {timing}")
    return model, f"frozen graph for {len(before)} layers below the Grad-CAM layer ({timing})"


def _fastest_interleaved(
    model: nn.Module,
    x: torch.Tensor,
    use: Callable[[str], None],
    layouts: list[str],
    rounds: int = 5,
) -> dict[str, float]:
    """The fastest call of each layout of ``model``, in seconds, timed in turns: a round runs
    every layout once, so that a slow moment of the host (another process loading its model,
    a neighbour on a shared machine) slows all of them alike. Timed one after the other, a
    burst of load during one layout's calls decided the outcome: on a busy 2-core host, 3 in 8
    ResNet loads kept the slower, eager model for the life of the worker process. Each layout
    is called once untimed first (warm-up)."""
    best = dict.fromkeys(layouts, float("inf"))
    for layout in layouts:
        use(layout)
        model(x)
    for _ in range(rounds):
        for layout in layouts:
            use(layout)
            best[layout] = min(best[layout], _timed_call(model, x))
    return best


def _timed_call(model: nn.Module, x: torch.Tensor) -> float:
    """One call of ``model`` on ``x``, in seconds."""
    import time

    started = time.perf_counter()
    model(x)
    return time.perf_counter() - started
