"""Is this image unlike the training data? An in-distribution score and cheap image checks.

The score is the Mahalanobis distance of an image's pooled penultimate features (the input of the
classifier layer, after global average pooling) from the training split's features, under a
Ledoit-Wolf shrunk covariance: 1,280-dimensional MobileNetV2 features do not give a usable
sample covariance from ~1,000 images, the shrunk one does. The top ``components`` principal
directions (at most 256) keep their own shrunk variances; the rest of the space is one isotropic
residual with the mean shrunk variance of the dropped directions, so the file stays small
(256 x 4,096 floats for VGG, ~4 MB) and scoring is one matrix product. The threshold is the
``percentile`` of the validation split's scores (99: about 1 in 100 validation images is flagged).

The image checks need no model: a colour photograph, a nearly uniform image, one too small to
read, text or line art (a few grey tones). They run on the decoded picture.

Torch-free at import (numpy and Pillow): the web process may read results and summaries;
:func:`pooled_features` and :class:`FeatureCapture` import torch when called.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .errors import MLError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "COLOUR_PHOTO",
    "FORMAT_VERSION",
    "METHOD",
    "OODError",
    "OODReference",
    "OODResult",
    "FeatureCapture",
    "fit_reference",
    "image_checks",
    "ood_result",
    "pooled_features",
]

METHOD = "mahalanobis-ledoit-wolf"
#: The colour check's reason (the worker runs it on the uploaded original: the model reads a grey
#: display copy).
COLOUR_PHOTO = "a colour photograph, not a radiograph"
FORMAT_VERSION = 1
MAX_COMPONENTS = 256
MIN_SIDE = 32


class OODError(MLError, ValueError):
    """An OOD reference cannot be fitted or read; the message says what to do."""


@dataclass(frozen=True)
class OODResult:
    """The OOD verdict on one image. ``score`` and ``threshold`` are None without a reference;
    ``flagged`` when the score is over the threshold or an image check failed."""

    score: float | None
    threshold: float | None
    flagged: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "threshold": self.threshold,
            "flagged": self.flagged,
            "reasons": list(self.reasons),
        }


def ood_result(score: float | None, threshold: float | None, checks: list[str]) -> OODResult:
    """Combine a score (or None) with the image checks' reasons into one :class:`OODResult`."""
    reasons = list(checks)
    over = score is not None and threshold is not None and score > threshold
    if over:
        reasons.insert(0, f"unlike the training data (score {score:.1f} > {threshold:.1f})")
    return OODResult(score=score, threshold=threshold, flagged=bool(reasons), reasons=reasons)


# --------------------------------------------------------------------------------------------------
# The reference
# --------------------------------------------------------------------------------------------------


class OODReference:
    """The training split's feature distribution and the validation split's threshold.

    ``scores(features)`` is the Mahalanobis distance of each row under the shrunk covariance::

        d^2 = sum_i (p_i^2 / v_i) + |r|^2 / v_rest

    where ``p`` are the coordinates in the kept principal directions (variances ``v``) and ``r``
    the remainder of the centred feature vector (variance ``v_rest`` per dimension).
    """

    method = METHOD

    def __init__(
        self,
        *,
        mean: np.ndarray,
        components: np.ndarray,
        variances: np.ndarray,
        residual_variance: float,
        threshold: float,
        percentile: float,
        n_train: int,
        shrinkage: float = 0.0,
    ) -> None:
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        self.components = np.asarray(components, dtype=np.float32)
        self.variances = np.asarray(variances, dtype=np.float64).reshape(-1)
        self.residual_variance = float(residual_variance)
        self.threshold = float(threshold)
        self.percentile = float(percentile)
        self.n_train = int(n_train)
        self.shrinkage = float(shrinkage)
        d = self.mean.shape[0]
        k = self.variances.shape[0]
        if self.components.shape != (k, d):
            raise OODError(
                f"An OOD reference's components are {self.components.shape}, expected ({k}, {d})."
            )
        if not (np.all(self.variances > 0) and self.residual_variance > 0):
            raise OODError("An OOD reference's variances must be positive; fit it again.")

    @property
    def feature_dim(self) -> int:
        return int(self.mean.shape[0])

    def scores(self, features: np.ndarray) -> np.ndarray:
        """N x D pooled features -> N distances (float64); higher = more unlike the training set."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.feature_dim:
            raise OODError(
                f"Features of shape {tuple(x.shape)} do not fit an OOD reference of "
                f"{self.feature_dim} features: was it fitted on another architecture?"
            )
        centred = (x - self.mean).astype(np.float64)
        proj = centred @ self.components.T.astype(np.float64)
        inside = (proj**2 / self.variances).sum(axis=1)
        rest = np.maximum((centred**2).sum(axis=1) - (proj**2).sum(axis=1), 0.0)
        d2 = inside + rest / self.residual_variance
        return np.sqrt(np.maximum(d2, 0.0))

    def result(self, score: float, checks: list[str] | None = None) -> OODResult:
        return ood_result(float(score), self.threshold, list(checks or []))

    def to_summary(self) -> dict[str, Any]:
        """JSON-able: what a model page or ``ModelVersion.ood_summary`` shows."""
        return {
            "method": self.method,
            "threshold": self.threshold,
            "percentile": self.percentile,
            "n_train": self.n_train,
            "feature_dim": self.feature_dim,
            "components": int(self.variances.shape[0]),
            "shrinkage": self.shrinkage,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """A small ``.npz`` (arrays only, no pickle). Writes to ``path`` exactly as given."""
        with open(path, "wb") as fh:
            np.savez_compressed(
                fh,
                format_version=np.array(FORMAT_VERSION),
                method=np.array(self.method),
                mean=self.mean,
                components=self.components,
                variances=self.variances,
                residual_variance=np.array(self.residual_variance),
                threshold=np.array(self.threshold),
                percentile=np.array(self.percentile),
                n_train=np.array(self.n_train),
                shrinkage=np.array(self.shrinkage),
            )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> OODReference:
        """Read a file written by :meth:`save` (``allow_pickle=False``)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                version = int(data["format_version"])
                method = str(data["method"])
                if version != FORMAT_VERSION or method != METHOD:
                    raise OODError(
                        f"{path} is an OOD reference of format {version} ({method}); this version "
                        f"reads format {FORMAT_VERSION} ({METHOD}). Fit it again (calibrate)."
                    )
                return cls(
                    mean=data["mean"],
                    components=data["components"],
                    variances=data["variances"],
                    residual_variance=float(data["residual_variance"]),
                    threshold=float(data["threshold"]),
                    percentile=float(data["percentile"]),
                    n_train=int(data["n_train"]),
                    shrinkage=float(data["shrinkage"]),
                )
        except OODError:
            raise
        except (OSError, KeyError, ValueError, EOFError) as exc:
            raise OODError(
                f"{path} is not a readable OOD reference ({type(exc).__name__}: {exc}). Fit it "
                "again, or remove it from the model version."
            ) from exc


def _ledoit_wolf_shrinkage(centred: np.ndarray) -> tuple[float, float]:
    """Ledoit-Wolf (2004) shrinkage towards ``mu * I`` for centred rows ``X`` (n x d), from the
    smaller of the n x n and d x d Gram matrices (never both). Returns (shrinkage, mu)."""
    n, d = centred.shape
    gram = centred @ centred.T if n <= d else centred.T @ centred
    sq_norms = (centred**2).sum(axis=1)
    trace_s = sq_norms.sum() / n
    mu = trace_s / d
    s_frob2 = float((gram**2).sum()) / n**2  # |S|_F^2, the same from either Gram matrix
    delta = s_frob2 - mu**2 * d  # |S - mu I|_F^2
    beta = (float((sq_norms**2).sum()) - float((gram**2).sum()) / n) / n**2
    if delta <= 0:
        return 1.0, float(mu)
    return float(min(max(beta, 0.0), delta) / delta), float(mu)


def fit_reference(
    train_features: np.ndarray,
    val_features: np.ndarray,
    *,
    percentile: float = 99.0,
    max_components: int = MAX_COMPONENTS,
) -> OODReference:
    """Fit the training split's feature distribution and threshold it at ``percentile`` of the
    validation split's scores (the validation images are in distribution by definition)."""
    train = np.asarray(train_features, dtype=np.float64)
    val = np.asarray(val_features, dtype=np.float64)
    if train.ndim != 2 or train.shape[0] < 2:
        raise OODError("An OOD reference needs the features of at least 2 training images.")
    if val.ndim != 2 or val.shape[0] < 1 or val.shape[1] != train.shape[1]:
        raise OODError("An OOD reference needs validation features of the training features' size.")
    if not (np.isfinite(train).all() and np.isfinite(val).all()):
        raise OODError("The features hold NaN or infinity: the model diverged; train it again.")
    if not (0 < percentile <= 100):
        raise OODError(f"The OOD percentile must be in (0, 100], got {percentile!r}.")
    n, d = train.shape
    mean = train.mean(axis=0)
    centred = train - mean
    shrinkage, mu = _ledoit_wolf_shrinkage(centred)
    # Eigen-decomposition of the sample covariance through the SVD of the centred rows.
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    eig = singular**2 / n  # the sample covariance's eigenvalues, the rest of the d are 0
    k = int(min(max_components, d, eig.shape[0]))
    floor = max(mu, 1e-12) * 1e-6
    variances = np.maximum((1 - shrinkage) * eig[:k] + shrinkage * mu, floor)
    dropped = d - k
    dropped_mean = float(eig[k:].sum()) / dropped if dropped else 0.0
    residual_variance = max((1 - shrinkage) * dropped_mean + shrinkage * mu, floor)
    reference = OODReference(
        mean=mean,
        components=vt[:k],
        variances=variances,
        residual_variance=residual_variance,
        threshold=math.inf,
        percentile=percentile,
        n_train=n,
        shrinkage=shrinkage,
    )
    reference.threshold = float(np.percentile(reference.scores(val), percentile))
    return reference


# --------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------


class FeatureCapture:
    """Collects the input of ``arch``'s classifier layer (the pooled penultimate features) during
    forward passes the caller runs anyway: no second forward. Use as a context manager; the hook
    is removed on exit. ``features()`` gives the batches captured, concatenated (N x D, CPU)."""

    def __init__(self, model: nn.Module, arch: str) -> None:
        from .models.architectures import head_layer

        self._head = head_layer(model, arch)
        self._batches: list[torch.Tensor] = []
        self._handle: Any = None

    def _hook(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self._batches.append(inputs[0].detach().float().flatten(1).cpu())

    def __enter__(self) -> FeatureCapture:
        self._handle = self._head.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def features(self) -> torch.Tensor:
        import torch

        if not self._batches:
            return torch.zeros(0, self._head.in_features)
        return torch.cat(self._batches)

    def clear(self) -> None:
        self._batches.clear()


def pooled_features(model: nn.Module, arch: str, batch: torch.Tensor) -> torch.Tensor:
    """The penultimate pooled features (the classifier's input) of ``batch``: N x D, on the CPU.
    Runs one forward pass without gradients; the logits are discarded."""
    import torch

    with torch.no_grad(), FeatureCapture(model, arch) as capture:
        model(batch)
    return capture.features()


# --------------------------------------------------------------------------------------------------
# Image checks
# --------------------------------------------------------------------------------------------------

_CHECK_SIDE = 256  # checks run on a thumbnail: cheap, and noise-free enough
_CHROMA = 40  # max-min over R, G, B (0-255) above which a pixel is coloured
_COLOURED_SHARE = 0.05  # a tinted radiograph has few such pixels; a photograph many
_UNIFORM_STD = 4.0  # grey-level standard deviation (0-255) below which nothing is visible
_TONE_SHARE = 0.002  # a grey level counts as used when this share of pixels has it
_MIN_TONES = 24  # a radiograph uses most of the 256 levels; text and drawings a handful
_TWO_TONE_SHARE = 0.8  # the two most common (+-2) grey bands cover this much of a drawing


def image_checks(image: Image.Image) -> list[str]:
    """Cheap "is this a radiograph at all" checks on a decoded picture; plain-English reasons
    (empty when none fails). Greyscale photographs pass these; the feature score catches them."""
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        return [f"too small to read ({width}x{height} px)"]
    thumb = image.copy()
    thumb.draft("RGB", (_CHECK_SIDE, _CHECK_SIDE))  # a JPEG decodes at a reduced size
    if thumb.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(thumb, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        thumb = Image.fromarray(scaled.astype(np.uint8), mode="L")
    thumb.thumbnail((_CHECK_SIDE, _CHECK_SIDE))
    reasons: list[str] = []
    grey = np.asarray(thumb.convert("L"), dtype=np.uint8)
    if thumb.mode not in ("L", "LA", "1"):
        rgb = np.asarray(thumb.convert("RGB"), dtype=np.int16)
        chroma = rgb.max(axis=2) - rgb.min(axis=2)
        if float((chroma > _CHROMA).mean()) > _COLOURED_SHARE:
            reasons.append(COLOUR_PHOTO)
    std = float(grey.std())
    if std < _UNIFORM_STD:
        reasons.append(f"nearly uniform image (grey-level spread {std:.1f} of 255)")
        return reasons
    hist = np.bincount(grey.ravel(), minlength=256).astype(np.float64) / grey.size
    tones = int((hist >= _TONE_SHARE).sum())
    bands = np.convolve(hist, np.ones(5), mode="same")  # each level +-2
    first = int(bands.argmax())
    rest = bands.copy()
    rest[max(0, first - 4) : first + 5] = 0.0  # the second band must not overlap the first
    if tones < _MIN_TONES or bands[first] + rest.max() > _TWO_TONE_SHARE:
        reasons.append(
            f"mostly flat tones ({tones} grey levels in use): text, a drawing or a screenshot, "
            "not a radiograph"
        )
    return reasons
