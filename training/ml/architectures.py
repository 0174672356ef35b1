"""CNN backbones for chest X-ray classification: build, load weights, swap the head, Grad-CAM layers.

Every model is a torchvision classification model whose ImageNet head has been replaced by a fresh
``nn.Linear(in_features, num_classes)``. The state-dict layout is therefore torchvision's own, which
keeps checkpoints loadable with nothing but torchvision and the architecture name.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import get_model, get_model_weights
from torchvision.models.densenet import DenseNet
from torchvision.models.resnet import ResNet

from .errors import MLError
from .preprocessing import Preprocessing

logger = logging.getLogger(__name__)

__all__ = [
    "ARCHITECTURES",
    "BackboneLoadReport",
    "IncompatibleWeights",
    "InvalidWeightsFile",
    "MLError",
    "MissingPretrainedWeights",
    "UnknownArchitecture",
    "build_model",
    "default_preprocessing",
    "fold_batchnorm",
    "freeze_below",
    "gradcam_target_layer",
    "head_parameters",
    "load_backbone_weights",
    "prepare_for_cam",
    "replace_head",
]


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class UnknownArchitecture(MLError, ValueError):
    """The architecture name is not one this app supports."""

    def __init__(self, arch: str) -> None:
        self.arch = arch
        super().__init__(
            f"Unknown architecture {arch!r}. Supported architectures: {', '.join(ARCHITECTURES)}."
        )


class MissingPretrainedWeights(MLError, FileNotFoundError):
    """Pretrained weights are needed but are neither on disk nor downloadable.

    ``path`` is where the file is expected. (Not OSError's ``filename``: setting that would turn
    ``str(error)`` into "[Errno None] None: '<path>'" and hide the message.)
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)


class IncompatibleWeights(MLError, ValueError):
    """A state dict does not fit the model it is loaded into."""


class InvalidWeightsFile(MLError, ValueError):
    """A file is not a PyTorch state dict (or checkpoint) this app can read safely."""


# --------------------------------------------------------------------------------------------------
# Architecture table
# --------------------------------------------------------------------------------------------------


def _last_relu_of_features(model: nn.Module) -> nn.Module:
    relus = [m for m in model.features.modules() if isinstance(m, nn.ReLU)]  # type: ignore[union-attr]
    return relus[-1]


def _resnet_cam(model: nn.Module) -> nn.Module:
    return model.layer4[-1]  # type: ignore[index]


def _features_last_cam(model: nn.Module) -> nn.Module:
    return model.features[-1]  # type: ignore[index]


def _densenet_cam(model: nn.Module) -> nn.Module:
    return model.features.norm5  # type: ignore[union-attr]


@dataclass(frozen=True)
class _ArchSpec:
    head: str  # dotted path of the classifier nn.Linear that replace_head swaps
    cam_layer: Callable[[nn.Module], nn.Module]


_RESNET = _ArchSpec(head="fc", cam_layer=_resnet_cam)
# VGG: the last ReLU of `features` (index 29 for vgg16) is the last conv activation before pooling.
_VGG = _ArchSpec(head="classifier.6", cam_layer=_last_relu_of_features)
# DenseNet: norm5 is the last module of `features`; the ReLU after it lives in DenseNet.forward,
# see prepare_for_cam for why that matters.
_DENSENET = _ArchSpec(head="classifier", cam_layer=_densenet_cam)
_EFFICIENTNET = _ArchSpec(head="classifier.1", cam_layer=_features_last_cam)
_MOBILENET_V3 = _ArchSpec(head="classifier.3", cam_layer=_features_last_cam)

_SPECS: dict[str, _ArchSpec] = {
    "resnet18": _RESNET,
    "resnet34": _RESNET,
    "resnet50": _RESNET,
    "resnet101": _RESNET,
    "resnet152": _RESNET,
    "vgg16": _VGG,
    "vgg16_bn": _VGG,
    "vgg19": _VGG,
    "vgg19_bn": _VGG,
    "densenet121": _DENSENET,
    "densenet169": _DENSENET,
    "densenet201": _DENSENET,
    "efficientnet_b0": _EFFICIENTNET,
    "efficientnet_b1": _EFFICIENTNET,
    "efficientnet_b2": _EFFICIENTNET,
    "efficientnet_b3": _EFFICIENTNET,
    "mobilenet_v2": _EFFICIENTNET,
    "mobilenet_v3_small": _MOBILENET_V3,
    "mobilenet_v3_large": _MOBILENET_V3,
}

ARCHITECTURES: tuple[str, ...] = tuple(_SPECS)


def _spec(arch: str) -> _ArchSpec:
    try:
        return _SPECS[arch]
    except (KeyError, TypeError):
        raise UnknownArchitecture(arch) from None


def head_name(arch: str) -> str:
    """Dotted module path of the classifier layer for ``arch`` (e.g. ``"fc"``, ``"classifier.1"``)."""
    return _spec(arch).head


def _split_parent(model: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    parent_path, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    return parent, child


def _head(model: nn.Module, arch: str) -> nn.Linear:
    head = model.get_submodule(_spec(arch).head)
    if not isinstance(head, nn.Linear):
        raise IncompatibleWeights(
            f"Expected an nn.Linear classifier at {_spec(arch).head!r} of a {arch} model, found "
            f"{type(head).__name__}. Was the model built with build_model({arch!r}, ...)?"
        )
    return head


# --------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------


def build_model(
    arch: str,
    num_classes: int,
    *,
    weights: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """Build ``arch`` with a fresh ``num_classes``-way head.

    ``weights``:
      - ``None``: random initialisation (tests, or loading a checkpoint afterwards);
      - ``"imagenet"``: torchvision's ImageNet weights from ``$TORCH_HOME/hub/checkpoints``,
        downloaded there if missing; raises :class:`MissingPretrainedWeights` when the file is
        missing and cannot be downloaded;
      - a path: a local backbone state dict, loaded non-strictly. The load report is logged and
        kept on the model as ``model.backbone_load_report`` (a :class:`BackboneLoadReport`).
    """
    _spec(arch)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")

    report: BackboneLoadReport | None = None
    if weights is None:
        model = get_model(arch, weights=None)
    elif isinstance(weights, str) and weights.lower() == "imagenet":
        model = _build_imagenet(arch)
    else:
        model = get_model(arch, weights=None)
        report = load_backbone_weights(model, weights)
        logger.info("%s backbone: %s", arch, report.summary())

    replace_head(model, arch, num_classes)
    if report is not None:
        # Not a Module or Tensor, so it stays out of state_dict().
        model.backbone_load_report = report
    return model


def _imagenet_file(arch: str) -> tuple[object, str, str, Path]:
    enum = get_model_weights(arch).DEFAULT  # type: ignore[attr-defined]
    url = enum.url
    filename = os.path.basename(urlparse(url).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    return enum, url, filename, cached


def _build_imagenet(arch: str) -> nn.Module:
    enum, url, filename, cached = _imagenet_file(arch)
    if cached.is_file():
        try:
            return get_model(arch, weights=enum)
        except Exception as exc:  # a corrupt or truncated cache file: torch.load raises many types
            raise InvalidWeightsFile(
                f"The cached ImageNet weights {cached} for {arch} could not be loaded ({exc}). "
                f"Delete the file and let torchvision download it again, or copy a good copy of "
                f"{url} to that path."
            ) from exc
    try:
        # torchvision downloads into torch.hub.get_dir()/checkpoints and loads from there.
        return get_model(arch, weights=enum)
    except (URLError, OSError, RuntimeError) as exc:
        torch_home = os.environ.get("TORCH_HOME", "<unset: ~/.cache/torch>")
        raise MissingPretrainedWeights(
            f"ImageNet weights for {arch} are not available: torchvision needs the file "
            f"{filename} at {cached} and could not download it from {url} ({exc}). "
            f"On a machine with internet, download {url} and copy it to {cached} "
            f"(that is $TORCH_HOME/hub/checkpoints/{filename}; TORCH_HOME is {torch_home}), "
            f"or pass a local backbone weights file instead of 'imagenet'.",
            path=cached,
        ) from exc


def replace_head(model: nn.Module, arch: str, num_classes: int) -> nn.Module:
    """Swap the classifier layer for a fresh ``nn.Linear(in_features, num_classes)``, in place."""
    old = _head(model, arch)
    new = nn.Linear(
        old.in_features,
        num_classes,
        bias=old.bias is not None,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    parent, child = _split_parent(model, _spec(arch).head)
    setattr(parent, child, new)
    return model


def head_parameters(model: nn.Module, arch: str) -> list[nn.Parameter]:
    """Parameters of the classifier head (what the "head only" training strategy trains)."""
    return list(_head(model, arch).parameters())


def default_preprocessing(arch: str) -> Preprocessing:
    """ImageNet mean/std and the input size torchvision evaluates ``arch`` at (224 for most)."""
    _spec(arch)
    transforms = get_model_weights(arch).DEFAULT.transforms()  # type: ignore[attr-defined]
    crop = transforms.crop_size
    size = int(crop[0] if isinstance(crop, (list, tuple)) else crop)
    return Preprocessing(
        input_size=size,
        mean=tuple(float(x) for x in transforms.mean),  # type: ignore[arg-type]
        std=tuple(float(x) for x in transforms.std),  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------------------------------
# Reading weights files
# --------------------------------------------------------------------------------------------------

# torchvision's old DenseNet checkpoints (the ones it still downloads) name layers 'norm.1' etc.
_LEGACY_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def read_torch_file(path: str | os.PathLike[str]) -> object:
    """``torch.load(path, weights_only=True, map_location="cpu")`` with errors a human can act on.

    The caller checks that the file exists first, so a missing file gets its own message.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    # torch.load raises KeyError, EOFError, UnpicklingError, RuntimeError... for a foreign file.
    except Exception as exc:
        if "Weights only load failed" in str(exc) and zipfile.is_zipfile(path):
            raise InvalidWeightsFile(
                f"{path} holds pickled Python objects, not only tensors (for example a whole model "
                f"saved with torch.save(model)). For safety it is read with weights_only=True. "
                f"Re-save it as a state dict: torch.save(model.state_dict(), path)."
            ) from exc
        raise InvalidWeightsFile(
            f"{path} is not a PyTorch weights file ({type(exc).__name__}: {str(exc)[:200]}). "
            f"Expected a file written by torch.save() holding a state dict or a checkpoint."
        ) from exc


def extract_state_dict(obj: object, source: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Find the state dict in a loaded object and normalise its keys.

    Accepts a plain state dict, or a dict that wraps one under ``"state_dict"`` or ``"model"``
    (our checkpoints and most training scripts). Strips DataParallel's ``module.`` prefix and
    renames torchvision's legacy DenseNet keys.
    """
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise InvalidWeightsFile(
            f"{source} does not hold a state dict (found a {type(obj).__name__}). Save weights with "
            f"torch.save(model.state_dict(), path)."
        )
    if not obj:
        raise InvalidWeightsFile(f"{source} holds an empty dict: there are no weights in it.")
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise InvalidWeightsFile(
                f"{source} is not a state dict: entry {key!r} is a {type(value).__name__}, not a "
                f"tensor. Save weights with torch.save(model.state_dict(), path)."
            )
        key = key.removeprefix("module.")
        match = _LEGACY_DENSENET_KEY.match(key)
        if match:
            key = match.group(1) + match.group(2)
        state[key] = value
    return state


@dataclass
class BackboneLoadReport:
    """What happened when a local backbone file was loaded into a model."""

    path: str
    loaded_keys: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    # Classifier tensors in the file whose shape does not fit the ImageNet head (dropped).
    dropped_keys: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded_keys)} tensors from {self.path}"]
        parts.append(
            f"missing {len(self.missing_keys)} (left at random init)"
            + (f": {_preview(self.missing_keys)}" if self.missing_keys else "")
        )
        parts.append(
            f"unexpected {len(self.unexpected_keys)} (ignored)"
            + (f": {_preview(self.unexpected_keys)}" if self.unexpected_keys else "")
        )
        if self.dropped_keys:
            parts.append(
                f"dropped {len(self.dropped_keys)} classifier tensors of another shape: "
                f"{_preview(self.dropped_keys)}"
            )
        return "; ".join(parts)


def _preview(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _last_linear_name(model: nn.Module) -> str | None:
    name = None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            name = module_name
    return name


def load_backbone_weights(model: nn.Module, path: str | os.PathLike[str]) -> BackboneLoadReport:
    """Load a local backbone state dict into ``model`` with ``strict=False`` and report the keys.

    Classifier tensors whose shape does not fit (a checkpoint fine-tuned for other classes) are
    dropped first; any other shape mismatch, or a file that shares no key with the model, raises
    :class:`IncompatibleWeights`.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPretrainedWeights(
            f"Backbone weights file {path} does not exist. Copy the weights file there, or pass "
            f"weights='imagenet' on a machine with internet (torchvision then downloads them).",
            path=path,
        )
    state = extract_state_dict(read_torch_file(path), path)
    own = model.state_dict()
    head = _last_linear_name(model)
    head_prefix = f"{head}." if head else None

    to_load: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    mismatched: list[str] = []
    for key, tensor in state.items():
        if key in own and own[key].shape != tensor.shape:
            if head_prefix and key.startswith(head_prefix):
                dropped.append(key)
            else:
                mismatched.append(
                    f"{key}: file {tuple(tensor.shape)} vs model {tuple(own[key].shape)}"
                )
            continue
        to_load[key] = tensor
    if mismatched:
        raise IncompatibleWeights(
            f"{path} does not fit a {type(model).__name__} backbone: {len(mismatched)} tensors have "
            f"other shapes ({_preview(mismatched, 4)}). Is it a backbone for another architecture "
            f"or model size?"
        )
    if not any(key in own for key in to_load):
        raise IncompatibleWeights(
            f"None of the {len(state)} tensors in {path} match a {type(model).__name__} model "
            f"(file keys look like {_preview(list(state), 3)}; the model's like "
            f"{_preview(list(own), 3)}). Is it a backbone for another architecture?"
        )
    result = model.load_state_dict(to_load, strict=False)
    return BackboneLoadReport(
        path=str(path),
        loaded_keys=[key for key in to_load if key in own],
        missing_keys=list(result.missing_keys),
        unexpected_keys=list(result.unexpected_keys),
        dropped_keys=dropped,
    )


# --------------------------------------------------------------------------------------------------
# Grad-CAM support
# --------------------------------------------------------------------------------------------------


def gradcam_target_layer(model: nn.Module, arch: str) -> nn.Module:
    """The layer whose activations and gradients Grad-CAM uses for ``arch``."""
    return _spec(arch).cam_layer(model)


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
    :class:`~training.ml.inference.Predictor` records no autograd graph below that layer, so
    in-place is safe there, and it saves about a tenth of the forward pass (fewer allocations).
    Every other module (run after the layer, run at both ends, or not run at all) is out of place.
    """
    keep: set[nn.Module] = set()
    if target_layer is not None:
        keep = _modules_only_before(model, target_layer, input_size)
    for module in model.modules():
        if getattr(module, "inplace", False) is True and module not in keep:
            module.inplace = False
    if type(model) is DenseNet:
        model.__class__ = _CamSafeDenseNet
    return model


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
        x = x.to(_model_device(model))
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
            index = next((i for i, n in enumerate(names) if container._modules[n] is target_layer),
                         None)
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

    The :class:`~training.ml.inference.Predictor` records no autograd graph below that layer
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

    if _model_device(model).type != "cpu":
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
                "frozen": {attr: nn.Sequential(OrderedDict([("frozen", frozen), *kept])),
                           **{name: nn.Identity() for name in chain}},
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
    model: nn.Module, x: torch.Tensor, use: Callable[[str], None], layouts: list[str],
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


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


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
            model(torch.zeros(1, 3, input_size, input_size, device=_model_device(model)))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    if not target_done:
        return set()  # the layer never ran: keep nothing in place
    # The target layer's own modules finished before it did: they are in `before`.
    return before - after
