"""Training configuration, torch-free: the web process validates a run's options with it
before a worker (which imports torch) trains. ``training.ml.train`` re-exports these names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import MLError
from ..preprocessing import Preprocessing

#: Kept equal to training.ml.models.architectures.ARCHITECTURES (a test checks), without torch.
ARCHITECTURE_NAMES: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "densenet121",
    "densenet169",
    "densenet201",
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
)
#: Kept equal to training.ml.train.transforms.AUGMENTATIONS and calibration.THRESHOLD_STRATEGIES.
AUGMENTATIONS = ("cxr", "none")
THRESHOLD_STRATEGIES = ("sensitivity", "youden")
#: Kept equal to training.ml.train.transforms.GAMMA: the default gamma jitter of "cxr".
DEFAULT_GAMMA = 0.25
#: "cosine_step": linear warm-up, then a cosine per optimizer step; "cosine_epoch": the cosine
#: per epoch without warm-up (the recipe before issue #23).
LR_SCHEDULES = ("cosine_step", "cosine_epoch")

STRATEGIES = ("head", "partial", "full")
IMBALANCE_MODES = ("weighted_loss", "sampler", "none")
#: AdamW learning rates that work for each strategy from ImageNet weights.
DEFAULT_LR = {"head": 1e-3, "partial": 3e-4, "full": 1e-4}
#: The cosine schedule ends at this fraction of the starting learning rate.
MIN_LR_FRACTION = 0.01

ProgressCallback = Callable[[dict[str, Any]], None]
StopCheck = Callable[[], bool]


class ConfigError(MLError, ValueError):
    """A training configuration value that cannot work."""


class TrainingError(MLError, RuntimeError):
    """Training itself failed (e.g. the loss became NaN)."""


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything that decides a training run; stored as JSON on the run (:meth:`to_dict`).

    ``lr=None`` means the strategy's default (:data:`DEFAULT_LR`). ``warmup_head_epochs`` (only
    for ``strategy="full"``) trains the head alone first, at the head learning rate, so the random
    head does not push large gradients through the pretrained backbone. ``unfreeze_blocks`` is how
    many of the last backbone blocks ``"partial"`` trains (see :func:`backbone_blocks`).
    ``early_stopping_patience`` of ``None`` or 0 turns early stopping off.

    The recipe (docs/evaluation.md, "The training recipe"): the "cxr" augmentation with a gamma
    jitter of ``gamma`` (0: none), ``lr_schedule="cosine_step"`` (the rate rises linearly over
    ``lr_warmup_epochs`` epochs of steps, at most half the run's, then follows a cosine per step down to 1 %),
    ``label_smoothing`` 0.1, and ``tta`` (test-time augmentation: the validation pass that
    calibrates and the test pass average the logits of a few mild affine views; 4x their cost).

    Input (:mod:`training.ml.train.pipeline`): every image is decoded once per run into uint8 pixels at
    the input size, by ``num_workers`` threads (0: one per core); they stay in memory up to
    ``cache_memory_mb`` and are memory-mapped from a file under ``cache_dir`` (default: the
    system's temporary folder) beyond it. ``cache_size`` is no longer used (the run's cache holds
    every image); it stays so that stored configurations still load.
    """

    arch: str
    weights: str | None = None
    strategy: str = "head"
    epochs: int = 10
    batch_size: int = 16
    lr: float | None = None
    weight_decay: float = 1e-4
    warmup_head_epochs: int = 0
    unfreeze_blocks: int = 2
    imbalance: str = "weighted_loss"
    augment: str = "cxr"
    hflip: bool = False
    early_stopping_patience: int | None = 3
    early_stopping_min_delta: float = 1e-4
    seed: int = 0
    device: str | None = None
    num_threads: int | None = None
    max_steps_per_epoch: int | None = None
    label_smoothing: float = 0.1
    gamma: float = DEFAULT_GAMMA
    lr_schedule: str = "cosine_step"
    lr_warmup_epochs: float = 1.0
    tta: bool = False
    input_size: int | None = None
    num_workers: int = 0
    cache_size: int = 0
    cache_memory_mb: int = 4096
    cache_dir: str | None = None
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU
    threshold_strategy: str = "sensitivity"
    target_sensitivity: float = 0.9

    def __post_init__(self) -> None:
        self._check_choices()
        self._check_integers()
        self._check_warmup()
        self._check_schedule()
        self._check_numbers()

    def _check_choices(self) -> None:
        if self.arch not in ARCHITECTURE_NAMES:
            raise ConfigError(
                f"Unknown architecture {self.arch!r}; choose one of {', '.join(ARCHITECTURE_NAMES)}."
            )
        if self.weights is not None and (not isinstance(self.weights, str) or not self.weights):
            raise ConfigError(
                "weights must be None, 'imagenet' or the path of a backbone weights file."
            )
        if self.cache_dir is not None and (
            not isinstance(self.cache_dir, str) or not self.cache_dir
        ):
            raise ConfigError(
                "cache_dir must be None (the system's temporary folder) or a folder path."
            )
        choices = (
            ("strategy", "Unknown strategy", STRATEGIES),
            ("imbalance", "Unknown imbalance handling", IMBALANCE_MODES),
            ("augment", "Unknown augmentation", AUGMENTATIONS),
            ("lr_schedule", "Unknown learning-rate schedule", LR_SCHEDULES),
        )
        for name, what, allowed in choices:
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{what} {value!r}; choose one of {allowed}.")
        if self.threshold_strategy not in THRESHOLD_STRATEGIES:
            raise ConfigError(f"threshold_strategy must be one of {THRESHOLD_STRATEGIES}.")
        if not isinstance(self.tta, bool):
            raise ConfigError(f"tta must be true or false, got {self.tta!r}.")

    def _check_integers(self) -> None:
        at_least = {"epochs": 1, "batch_size": 1, "unfreeze_blocks": 0}
        at_least.update(
            dict.fromkeys(
                ("warmup_head_epochs", "num_workers", "cache_size", "cache_memory_mb", "seed"), 0
            )
        )
        for name, low in at_least.items():
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}.")
        optional = {"early_stopping_patience": 0, "num_threads": 1, "max_steps_per_epoch": 1}
        for name, low in optional.items():
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < low):
                raise ConfigError(f"{name} must be None or an integer >= {low}, got {value!r}.")

    def _check_warmup(self) -> None:
        if self.warmup_head_epochs and self.strategy != "full":
            raise ConfigError("warmup_head_epochs only applies to strategy 'full'; set it to 0.")
        if self.warmup_head_epochs >= self.epochs and self.warmup_head_epochs:
            raise ConfigError(
                f"warmup_head_epochs ({self.warmup_head_epochs}) must be fewer than epochs "
                f"({self.epochs}), or the backbone is never trained."
            )

    def _check_schedule(self) -> None:
        warmup = self.lr_warmup_epochs
        if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or warmup < 0:
            raise ConfigError(f"lr_warmup_epochs must be a number >= 0, got {warmup!r}.")
        if warmup and self.lr_schedule != "cosine_step":
            raise ConfigError(
                "lr_warmup_epochs needs lr_schedule 'cosine_step' (the per-epoch cosine has no "
                "warm-up): set it to 0, or choose 'cosine_step'."
            )
        gamma = self.gamma
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 <= gamma <= 1:
            raise ConfigError(f"gamma must be a number from 0 (off) to 1, got {gamma!r}.")

    def _check_numbers(self) -> None:
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(
                f"lr must be a positive number or None (strategy default), got {self.lr!r}."
            )
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay!r}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}.")
        if not 0.0 < self.target_sensitivity <= 1.0:
            raise ConfigError(
                f"target_sensitivity must be in (0, 1], got {self.target_sensitivity!r}."
            )
        if self.early_stopping_min_delta < 0:
            raise ConfigError("early_stopping_min_delta must be >= 0.")
        if self.input_size is not None:
            try:
                Preprocessing(input_size=self.input_size)
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc

    @property
    def learning_rate(self) -> float:
        """``lr``, or the strategy's default when it is None."""
        return float(self.lr) if self.lr is not None else DEFAULT_LR[self.strategy]

    def preprocessing(self) -> Preprocessing:
        """The architecture's ImageNet mean/std at ``input_size`` (or the architecture's size)."""
        from ..models.architectures import default_preprocessing  # imports torch: worker side only

        prep = default_preprocessing(self.arch)
        if self.input_size is None:
            return prep
        return Preprocessing(input_size=self.input_size, mean=prep.mean, std=prep.std)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo must not be ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"Unknown training option(s) {unknown}; known: {sorted(known)}.")
        if "arch" not in d:
            raise ConfigError("A training configuration needs 'arch'.")
        return cls(**dict(d))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
