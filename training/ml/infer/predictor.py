"""Classify X-rays and explain them with Grad-CAM, in one forward and one backward pass per batch;
the same forward gives each image's out-of-distribution score (:mod:`training.ml.ood`)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from ..errors import MLError
from ..models.architectures import head_layer
from ..models.cam import gradcam_target_layer, prepare_for_cam
from ..models.checkpoint import build_for_inference, check_classes, load_weights_file
from ..models.speedups import fold_batchnorm, freeze_below
from ..models.weights import IncompatibleWeights
from ..ood import FeatureCapture, OODReference, OODResult, image_checks, ood_result
from ..preprocessing import Preprocessing, batch_gray_input, normalise

__all__ = ["PredictionResult", "Predictor", "RawOutputs", "checked_cam_classes"]


@dataclass
class PredictionResult:
    probabilities: dict[str, float]  # class -> probability, in the model's class order, sums to 1
    label: str  # the most probable class
    cam: np.ndarray  # float32 HxW in [0, 1] at the model input size, for cam_class
    cam_class: str
    # Unlike the training data? Never None: without a reference only the image checks flag.
    ood: OODResult = field(default_factory=lambda: OODResult(None, None, False, []))


@dataclass
class RawOutputs:
    """What one pass of the model gives for N images, before the image checks are added: plain
    arrays, so that a model server can send it to the process that asked (and :meth:`take` its
    share of a batch)."""

    classes: list[str]
    probabilities: np.ndarray  # N x C float64, rows sum to 1
    cams: np.ndarray  # N x S x S float32 in [0, 1]
    labels: list[str]  # the most probable class of each
    cam_classes: list[str]  # the class each CAM shows
    ood_scores: list[float | None]  # None without an OOD reference
    ood_threshold: float | None

    def take(self, start: int, stop: int) -> RawOutputs:
        return RawOutputs(
            self.classes,
            self.probabilities[start:stop],
            self.cams[start:stop],
            self.labels[start:stop],
            self.cam_classes[start:stop],
            self.ood_scores[start:stop],
            self.ood_threshold,
        )

    def results(self, checks: Sequence[list[str]]) -> list[PredictionResult]:
        """One :class:`PredictionResult` per image; ``checks[i]``: image ``i``'s
        :func:`~training.ml.ood.image_checks`."""
        if len(checks) != len(self.labels):
            raise ValueError(f"{len(checks)} image checks for {len(self.labels)} results.")
        return [
            PredictionResult(
                probabilities={
                    c: float(p) for c, p in zip(self.classes, self.probabilities[i], strict=True)
                },
                label=self.labels[i],
                cam=self.cams[i],
                cam_class=self.cam_classes[i],
                ood=ood_result(self.ood_scores[i], self.ood_threshold, list(checks[i])),
            )
            for i in range(len(self.labels))
        ]


def checked_cam_classes(
    classes: list[str], cam_classes: Sequence[str | None] | None, count: int
) -> list[str | None]:
    """One CAM class per image (None: the image's predicted class), each one of ``classes``;
    ValueError otherwise. No list means the predicted class for all ``count`` images."""
    if cam_classes is None:
        return [None] * count
    cam_classes = list(cam_classes)
    if len(cam_classes) != count:
        raise ValueError(
            f"cam_classes has {len(cam_classes)} entries for {count} images; give one "
            f"per image (None for the predicted class)."
        )
    for name in cam_classes:
        if name is not None and name not in classes:
            raise ValueError(f"Unknown CAM class {name!r}; this model's classes are {classes}.")
    return cam_classes


class _ArgmaxTarget:
    """Grad-CAM target: the logit of the image's own top class (decided inside the same forward)."""

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        if model_output.ndim == 1:
            return model_output[model_output.argmax()]
        return model_output.gather(1, model_output.argmax(dim=1, keepdim=True))[:, 0]


def _cut_graph_here(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
    return output.detach().requires_grad_(True)


class Predictor:
    """A model ready for inference with Grad-CAM; build once per worker process, reuse per image.

    The predictor owns the model it is given: it is put in eval mode, moved to ``device``, its
    parameters are frozen (Grad-CAM needs gradients of activations, never of weights), it runs a
    copy with BatchNorms folded into their convs (see :func:`fold_batchnorm`), and in-place
    activations are turned off from the Grad-CAM layer on (see :func:`prepare_for_cam`), and on a
    CPU the layers below that layer run as one frozen TorchScript graph (``freeze``, see
    :func:`freeze_below`; ``execution`` says which). Nothing tensor-valued is kept between calls,
    so memory stays flat in a long-lived worker.

    With an ``ood_reference`` each result's ``ood`` carries the Mahalanobis score of the image's
    pooled features (the classifier's input, taken from the same forward pass by a hook) against
    the training data; without one only the image checks (:func:`~training.ml.ood.image_checks`,
    on the picture given) can flag it.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        arch: str,
        classes: list[str],
        preprocessing: Preprocessing,
        device: str | torch.device | None = None,
        temperature: float = 1.0,
        freeze: bool = True,
        ood_reference: OODReference | None = None,
    ) -> None:
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a positive number, got {temperature!r}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be a positive number, got {temperature!r}.")
        self.arch = arch
        self.classes = check_classes(classes)
        self.preprocessing = preprocessing
        self.temperature = float(temperature)
        self.ood_reference = ood_reference
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)

        head = head_layer(model, arch)
        if head.out_features != len(self.classes):
            raise IncompatibleWeights(
                f"The model's classifier has {head.out_features} outputs but {len(self.classes)} "
                f"classes were given ({', '.join(self.classes)})."
            )
        if ood_reference is not None and ood_reference.feature_dim != head.in_features:
            raise IncompatibleWeights(
                f"The OOD reference has {ood_reference.feature_dim} features but the "
                f"{arch} model's classifier takes {head.in_features}: it belongs to another "
                "model. Fit the reference again for this model (calibrate)."
            )
        model.eval()
        model.requires_grad_(False)
        # BatchNorms folded into their convs (same outputs, less work), Grad-CAM's layer kept.
        # Folded and checked where the model is (the CPU, from a file), then moved: on a GPU,
        # TF32 convolutions could round the check's two passes apart.
        self.model = fold_batchnorm(
            model, gradcam_target_layer(model, arch), preprocessing.input_size
        ).to(self.device)
        self._target_layer = gradcam_target_layer(self.model, arch)
        # In-place activations off from the target layer on; below it they stay (no graph there).
        prepare_for_cam(self.model, self._target_layer, preprocessing.input_size)
        # On a CPU, the layers below it run as one frozen TorchScript graph (see freeze_below).
        self.execution = "eager"
        if freeze:
            self.model, self.execution = freeze_below(
                self.model, self._target_layer, preprocessing.input_size
            )

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        arch: str,
        classes: list[str],
        preprocessing: Preprocessing,
        device: str | torch.device | None = None,
        temperature: float = 1.0,
        freeze: bool = True,
        ood_reference: OODReference | None = None,
    ) -> Predictor:
        """Load a checkpoint (or a plain state dict) and check its meta against the arguments.

        When the file carries meta (our checkpoints), its architecture, class order and
        preprocessing must equal what the caller (the model version) says: a reordered class list
        would silently put the wrong names on the probabilities.
        """
        state_dict, meta = load_weights_file(path)
        if meta is not None:
            for what, stored, given in (
                ("architecture", meta.arch, arch),
                ("classes", list(meta.classes), list(classes)),
                ("preprocessing", meta.preprocessing, preprocessing),
            ):
                if stored != given:
                    raise IncompatibleWeights(
                        f"{path} was saved with {what} {stored!r} but {given!r} was given. "
                        f"Fix the model version's {what} to match its weights file."
                    )
        model = build_for_inference(arch, classes, state_dict)
        del state_dict
        return cls(
            model,
            arch=arch,
            classes=classes,
            preprocessing=preprocessing,
            device=device,
            temperature=temperature,
            freeze=freeze,
            ood_reference=ood_reference,
        )

    def predict(
        self,
        images: Sequence[Image.Image],
        *,
        cam_classes: Sequence[str | None] | None = None,
    ) -> list[PredictionResult]:
        """Probabilities, label and a Grad-CAM map for each image, in one batched pass.

        ``cam_classes[i]`` picks the class whose evidence image ``i``'s CAM shows; ``None`` (or no
        list) means the image's predicted class. To get every class's map for one image, pass the
        image once per class: ``predict([img] * k, cam_classes=classes)``.
        """
        images = list(images)
        if not images:
            return []
        checks = [image_checks(image) for image in images]
        raw = self.predict_gray(batch_gray_input(images, self.preprocessing), cam_classes)
        return raw.results(checks)

    def predict_gray(
        self, gray: torch.Tensor, cam_classes: Sequence[str | None] | None = None
    ) -> RawOutputs:
        """The forward and backward pass of :meth:`predict` on images already read and resized
        (``gray``: Nx1xSxS float32 in [0, 1], :func:`~training.ml.preprocessing.batch_gray_input`),
        normalised on this predictor's device. A model server runs this on what several worker
        processes decoded (:mod:`training.ml.infer.server`)."""
        size = self.preprocessing.input_size
        if gray.ndim != 4 or tuple(gray.shape[1:]) != (1, size, size):
            raise ValueError(
                f"Expected grayscale input of shape Nx1x{size}x{size}, got {tuple(gray.shape)}."
            )
        count = gray.shape[0]
        cam_classes = checked_cam_classes(self.classes, cam_classes, count)
        targets: list[ClassifierOutputTarget | _ArgmaxTarget] = [
            _ArgmaxTarget() if name is None else ClassifierOutputTarget(self.classes.index(name))
            for name in cam_classes
        ]

        batch = normalise(gray.to(self.device, torch.float32), self.preprocessing)
        cams: np.ndarray | None = None
        logits: torch.Tensor | None = None
        # Parameters are frozen and the input needs no gradient: Grad-CAM only needs the gradient
        # at the target layer. This hook (registered before pytorch-grad-cam's, so theirs see its
        # result) makes the target layer's output a fresh leaf that requires grad, so autograd
        # records and back-propagates only the layers after it, not the whole network down to
        # the input (about 2.5x less work per image; the CAM is the same).
        leaf = self._target_layer.register_forward_hook(_cut_graph_here)
        # The classifier's input in the same forward pass: the features the OOD score needs.
        capture = FeatureCapture(self.model, self.arch) if self.ood_reference is not None else None
        try:
            # `with` releases the hooks even on error (they leak otherwise; pytorch-grad-cam
            # #195). enable_grad: the caller may be inside torch.no_grad().
            with (
                torch.enable_grad(),
                GradCAM(model=self.model, target_layers=[self._target_layer]) as cam,
                capture or nullcontext(),
            ):
                cams = cam(input_tensor=batch, targets=targets)
                # The logits of the same forward pass; no second forward.
                logits = cam.outputs.detach().to("cpu", torch.float64)
                cam.outputs = None  # drop the retained graph now, not at garbage collection
        finally:
            leaf.remove()
        del batch
        if cams is None or logits is None:
            # GradCAM.__exit__ swallows IndexError (it prints it): do not pretend it worked.
            raise MLError(
                "Grad-CAM failed inside pytorch-grad-cam (an IndexError it swallowed; see the "
                "worker's stdout). Check that the model's outputs match its classes."
            )

        scores: list[float | None] = [None] * count
        if capture is not None and self.ood_reference is not None:
            scores = [float(x) for x in self.ood_reference.scores(capture.features().numpy())]
        top = logits.argmax(dim=1).tolist()
        return RawOutputs(
            classes=list(self.classes),
            probabilities=torch.softmax(logits / self.temperature, dim=1).numpy(),
            cams=np.clip(np.nan_to_num(cams, nan=0.0), 0.0, 1.0).astype(np.float32),
            labels=[self.classes[i] for i in top],
            cam_classes=[
                self.classes[top[i]] if name is None else name for i, name in enumerate(cam_classes)
            ],
            ood_scores=scores,
            ood_threshold=(
                self.ood_reference.threshold if self.ood_reference is not None else None
            ),
        )
